"""Running a job: compile (cached per graph structure), evaluate every point, verify, time.

>>> import gradsvc
>>> r = gradsvc.run("jobs/seed_chain.yaml")
>>> float(r.grads["e"]["a"][0]), r.verify.ok
(12.0, True)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import limits
from .errors import LimitError, UsageError
from .jaxrun import DTYPES, Compiled, compile_graph, run_chunks
from .spec import Job, job_from_dict, job_from_text, load_job
from .verify import VerifyReport, verify


@dataclass
class Result:
    """Values and gradients of one job over its grid, in grid order, with the verification report.

    `values[name]` is a 1-D array over points for every input and node; `grads[output][name]` the
    gradient of `output` with respect to `name` (every `wrt` name). An input's values are its grid
    coordinates; `shape` is the grid's shape (reshape any array to it for product grids).
    """
    job: Job
    values: dict[str, np.ndarray]
    grads: dict[str, dict[str, np.ndarray]]
    verify: VerifyReport
    timings: dict[str, float]
    dtype: str
    device: str

    @property
    def ok(self) -> bool:
        return self.verify.ok

    @property
    def points(self) -> int:
        return self.job.grid.size

    @property
    def shape(self) -> tuple[int, ...]:
        return self.job.grid.shape

    def point(self, index: int) -> dict:
        """Everything at one point: {"values": {name: v}, "grads": {out: {name: g}}}."""
        return {"values": {n: float(a[index]) for n, a in self.values.items()},
                "grads": {o: {n: float(a[index]) for n, a in g.items()} for o, g in self.grads.items()}}


_COMPILED: dict[tuple, Compiled] = {}  # jobs with the same graph structure compile once per process


def _compiled_for(job: Job, chunk_size: int) -> tuple[Compiled, bool]:
    s = job.settings
    key = (job.graph.structure_key(), s.dtype, s.device, chunk_size)
    if key in _COMPILED:
        return _COMPILED[key], True
    compiled = compile_graph(job.graph, s.dtype, s.device, chunk_size)
    _COMPILED[key] = compiled
    return compiled, False


def as_job(job, overrides: dict | None = None, config=None) -> Job:
    """Accept a Job, a path, a dict shaped like a job file, or YAML text."""
    if isinstance(job, Job):
        return job
    if isinstance(job, dict):
        return job_from_dict(job, overrides, config)
    if isinstance(job, Path) or (isinstance(job, str) and "\n" not in job and
                                 (job.endswith((".yaml", ".yml")) or Path(job).is_file())):
        return load_job(job, overrides, config)
    if isinstance(job, str):
        return job_from_text(job, "<text>", overrides, config)
    raise UsageError(f"cannot run a {type(job).__name__}: give a path, YAML text, a dict or a Job")


def run(job, *, dtype: str | None = None, device: str | None = None, config=None,
        **settings) -> Result:
    """Run a job: every node's value and every output's gradient at every grid point, verified.

    Args:
      job: a job file path, YAML text, a dict shaped like a job file, or a loaded `Job`.
      dtype, device: override the job's settings ("float32"/"float64", "cpu"/"gpu"/"tpu").
      config: a settings file to use instead of configs/default.yaml.
      **settings: any other setting (`verify_points=`, `chunk_size=`, ...).
    Returns:
      A `Result`; `result.ok` says whether JAX, the reference and finite differences agree.
    """
    overrides = {"dtype": dtype, "device": device, **settings}
    job = as_job(job, overrides, config)
    s = job.settings
    graph, grid = job.graph, job.grid
    n_visible, n_grads = len(graph.visible), len(graph.outputs) * len(graph.wrt)
    itemsize = np.dtype(DTYPES[s.dtype]).itemsize
    if grid.size * (n_visible + n_grads) * itemsize > limits.MAX_RESULT_BYTES:
        raise LimitError(f"{grid.size:,} points x {n_visible + n_grads} numbers would need more than "
                         f"{limits.MAX_RESULT_BYTES:,} bytes in memory", where=None,
                         hint="use `wrt: inputs`, fewer points, or run it in pieces (MAX_RESULT_BYTES)")
    timings = {}
    start = time.perf_counter()
    compiled, reused = _compiled_for(job, min(s.chunk_size, grid.size))
    timings["compile_s"] = 0.0 if reused else compiled.compile_s
    values = np.empty((grid.size, n_visible), DTYPES[s.dtype])
    grads = np.empty((grid.size, len(graph.outputs), len(graph.wrt)), DTYPES[s.dtype])
    run_start = time.perf_counter()
    run_chunks(compiled, lambda a, b: grid.coords(np.arange(a, b)), grid.size, values, grads)
    timings["run_s"] = time.perf_counter() - run_start
    verify_start = time.perf_counter()
    report = verify(graph, grid, s.dtype, values, grads, verify_points=s.verify_points,
                    seed=s.verify_seed, factor=s.tolerance.factor, fd_points=s.fd_points,
                    fd_rtol=s.tolerance.fd_rtol)
    timings["verify_s"] = time.perf_counter() - verify_start
    timings["total_s"] = time.perf_counter() - start
    timings["points_per_s"] = grid.size / timings["run_s"] if timings["run_s"] > 0 else float("inf")
    value_arrays = {name: values[:, j] for j, name in enumerate(graph.visible)}
    grad_arrays = {out: {name: grads[:, o, w] for w, name in enumerate(graph.wrt)}
                   for o, out in enumerate(graph.outputs)}
    return Result(job, value_arrays, grad_arrays, report, timings, s.dtype, str(compiled.device))
