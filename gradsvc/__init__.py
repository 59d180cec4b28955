"""gradsvc: YAML job graphs -> jitted, vmapped JAX values and gradients, verified against a
pure-Python reference backprop and finite differences.

>>> import gradsvc
>>> r = gradsvc.run("jobs/seed_sum_product.yaml")
>>> {name: float(g[0]) for name, g in r.grads["z"].items()}
{'a': 20.0, 'b': 20.0, 'c': 25.0, 'd': 20.0, 'x': 20.0, 'y': 5.0, 'z': 1.0}

Submodules load on first use, also as attributes (`gradsvc.storage.store.load_result` after a plain
`import gradsvc`): `gradsvc.errors`, the IR and the reference need only the standard library, the
job loader adds numpy and pydantic, and only running a job (or making a random input's numbers,
which JAX's threefry draws) imports JAX.
"""
from __future__ import annotations

import importlib
import importlib.util

from .errors import (BusyError, DeviceError, FormulaError, GradsvcError, GraphError, JobFileError,
                     LimitError, Location, OutputError, ResultError, ServiceError, UsageError)

__version__ = "0.1.0"

_LAZY = {"run": "api", "Result": "api", "Job": "job.spec", "load_job": "job.spec",
         "job_from_text": "job.spec", "job_from_dict": "job.spec", "job_schema": "job.spec",
         "explain": "teaching.explain", "load_result": "storage.store", "Client": "client"}

__all__ = [*_LAZY, "GradsvcError", "JobFileError", "FormulaError", "GraphError", "LimitError",
           "UsageError", "DeviceError", "OutputError", "ResultError", "BusyError", "ServiceError",
           "Location", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # a submodule: gradsvc.storage.store
    raise AttributeError(f"module 'gradsvc' has no attribute {name!r}")
