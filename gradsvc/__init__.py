"""gradsvc: YAML job graphs -> jitted, vmapped JAX values and gradients, verified against a
pure-Python reference backprop and finite differences.

>>> import gradsvc
>>> r = gradsvc.run("jobs/seed_sum_product.yaml")
>>> {name: float(g[0]) for name, g in r.grads["z"].items()}
{'a': 20.0, 'b': 20.0, 'c': 25.0, 'd': 20.0, 'x': 20.0, 'y': 5.0, 'z': 1.0}

The JAX backend is imported on first use, so `gradsvc.load_job` and the CLI's `validate`, `ops` and
`schema` stay fast.
"""
from __future__ import annotations

from .errors import (DeviceError, FormulaError, GradsvcError, GraphError, JobFileError, LimitError,
                     Location, UsageError)
from .spec import Job, job_from_dict, job_from_text, job_schema, load_job

__version__ = "0.1.0"

__all__ = ["run", "Result", "Job", "load_job", "job_from_text", "job_from_dict", "job_schema",
           "GradsvcError", "JobFileError", "FormulaError", "GraphError", "LimitError", "UsageError",
           "DeviceError", "Location", "__version__"]


def __getattr__(name: str):
    if name in ("run", "Result"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'gradsvc' has no attribute {name!r}")
