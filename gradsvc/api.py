"""Running a job: compile (cached per graph structure), evaluate every point, verify, time.

>>> import gradsvc
>>> r = gradsvc.run("jobs/seed_chain.yaml")
>>> float(r.grads["e"]["a"][0]), r.verify.ok
(12.0, True)
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import limits
from .errors import LimitError
from .jaxrun import DTYPES, Compiled, compile_graph, run_chunks
from .kcache import use_compile_cache
from .spec import Job, as_job
from .verify import VerifyReport, candidate_points, verify


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


# Jobs with the same graph structure compile once per process. Least recently used first, and
# bounded: each compiled kernel holds ~18 memory mappings of machine code, and a process that ran
# thousands of distinct graphs (a long fuzz campaign did) reached the kernel's limit of 65,530
# mappings and XLA crashed. Evicted kernels come back from the on-disk executable cache.
_COMPILED: OrderedDict[tuple, Compiled] = OrderedDict()


def kept_nodes(job: Job) -> tuple[str, ...]:
    """The named nodes whose values the kernel returns (`keep_values`); inputs never need to be:
    their values are the grid coordinates."""
    keep = job.settings.keep_values
    graph = job.graph
    if keep == "all":
        return graph.named
    if keep == "outputs":
        return tuple(n for n in graph.named if n in graph.outputs)
    return ()


SMALL_GRAPH_OPS = 32  # up to this many primitive ops a graph is memory-bound: big chunks win
CACHE_CHUNK = 1 << 16  # graphs with many intermediates: they stay in cache
STREAM_CHUNK = 1 << 20  # small graphs, results streamed (to disk): bounded memory per chunk
WHOLE_CHUNK = 1 << 24  # small graphs, results kept in memory: one chunk is the final array


def chunk_size_for(job: Job, whole: bool) -> int:
    """Points per compiled call. Measured on the seed and medium graphs (benchmarks/README.md):
    a graph with many intermediates runs fastest in chunks of 65536, whose intermediates stay in
    cache; a small graph is bound by memory traffic, and when the results stay in memory (`whole`)
    one chunk spares the per-chunk dispatch and the copy of chunks into one array per result."""
    size = job.grid.size
    if job.settings.chunk_size != "auto":
        return min(job.settings.chunk_size, size)
    if sum(1 for n in job.graph.nodes if n.primitive is not None) > SMALL_GRAPH_OPS:
        return min(CACHE_CHUNK, size)
    return min(WHOLE_CHUNK if whole else STREAM_CHUNK, size)


def _compiled_for(job: Job, chunk_size: int) -> tuple[Compiled, bool]:
    s, grid = job.settings, job.grid
    kept = kept_nodes(job)
    key = (job.graph.structure_key(), grid.mode, tuple(len(a.values) for a in grid.axes), s.dtype,
           s.device, chunk_size, kept, s.fast_math)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key], True
    use_compile_cache(s.compile_cache)
    compiled = compile_graph(job.graph, grid, s.dtype, s.device, chunk_size, kept, s.fast_math)
    _COMPILED[key] = compiled
    while len(_COMPILED) > limits.MAX_COMPILED_KERNELS:
        _COMPILED.popitem(last=False)
    return compiled, False


def _exact_twin(job: Job, compiled: Compiled) -> Callable[[], Compiled]:
    """Builds the same function with XLA's own sin/cos, for chunks beyond the fast range."""
    def build() -> Compiled:
        s = job.settings
        return compile_graph(job.graph, job.grid, s.dtype, s.device, compiled.chunk_size,
                             kept_nodes(job), fast=False)
    return build


class MemorySink:
    """Keeps every point's values and gradients in memory, one array per node and per gradient."""

    whole = True  # everything is kept: the bigger the chunk, the fewer copies

    def __init__(self, job: Job):
        graph, size, dtype = job.graph, job.grid.size, DTYPES[job.settings.dtype]
        n_values, n_grads = len(kept_nodes(job)), len(graph.outputs) * len(graph.wrt)
        n_numbers = len(graph.inputs) + n_values + n_grads
        if size * n_numbers * np.dtype(dtype).itemsize > limits.MAX_RESULT_BYTES:
            raise LimitError(f"{size:,} points x {n_numbers} numbers would need more than "
                             f"{limits.MAX_RESULT_BYTES:,} bytes in memory",
                             hint="use `gradsvc batch`, which streams results to disk, or "
                             "`wrt: inputs` (MAX_RESULT_BYTES)")
        self.counts, self.dtype, self.size = (n_values, n_grads), dtype, size
        self.values: list[np.ndarray] | None = None
        self.grads: list[np.ndarray] | None = None

    def write(self, start: int, stop: int, values: list, grads: list) -> None:
        if start == 0 and stop == self.size:  # one chunk: keep JAX's arrays, no copy
            self.values, self.grads = list(values), list(grads)
            return
        if self.values is None:
            self.values = [np.empty(self.size, self.dtype) for _ in range(self.counts[0])]
            self.grads = [np.empty(self.size, self.dtype) for _ in range(self.counts[1])]
        for column, chunk in zip(self.values + self.grads, list(values) + list(grads)):
            column[start:stop] = chunk


@dataclass
class Execution:
    verify: VerifyReport
    timings: dict[str, float]
    device: str
    kept: tuple[str, ...]  # the nodes whose values were computed


def execute(job: Job, sink, progress=None) -> Execution:
    """Compile (or reuse), stream every chunk into `sink.write`, then verify a sample.

    The rows verification needs are captured as chunks pass, so nothing has to be read back from
    the sink: results can go straight to disk.
    """
    s, graph, grid = job.settings, job.graph, job.grid
    start = time.perf_counter()
    compiled, reused = _compiled_for(job, chunk_size_for(job, getattr(sink, "whole", False)))
    compile_s = 0.0 if reused else compiled.compile_s
    indices, sampled = candidate_points(grid.size, s.verify_points, s.verify_seed)
    kept = kept_nodes(job)
    capture = _Capture(indices, len(kept), (len(graph.outputs), len(graph.wrt)), DTYPES[s.dtype])

    def on_chunk(lo: int, hi: int, values: list, grads: list) -> None:
        sink.write(lo, hi, values, grads)
        capture.take(lo, hi, values, grads)
        if progress is not None:
            progress(hi - lo)

    run_start = time.perf_counter()
    recomputed = run_chunks(compiled, grid, on_chunk, _exact_twin(job, compiled))
    run_s = time.perf_counter() - run_start
    verify_start = time.perf_counter()
    budget = s.verify_budget * (time.perf_counter() - start) if sampled else None
    report = verify(graph, grid, s.dtype, indices, kept, capture.values, capture.grads,
                    factor=s.tolerance.factor, fd_points=s.fd_points, fd_rtol=s.tolerance.fd_rtol,
                    budget_s=budget, min_points=s.verify_min_points)
    verify_s = time.perf_counter() - verify_start
    timings = {"compile_s": compile_s,
               "compiled_from": "this process" if reused else compiled.source,
               "run_s": run_s, "verify_s": verify_s,
               "total_s": time.perf_counter() - start,
               "points_per_s": grid.size / run_s if run_s > 0 else float("inf"),
               "chunks": -(-grid.size // compiled.chunk_size), "chunks_recomputed_exact": recomputed}
    return Execution(report, timings, str(compiled.device), kept)


class _Capture:
    """The rows of chosen point indices, picked out of chunks as they stream past."""

    def __init__(self, indices: np.ndarray, n_values: int, grad_shape: tuple, dtype):
        self.order = np.argsort(indices, kind="stable")
        self.sorted = indices[self.order]
        self.grad_shape = grad_shape
        self.values = np.empty((len(indices), n_values), dtype)
        self.grads = np.empty((len(indices), *grad_shape), dtype)

    def take(self, lo: int, hi: int, values: list, grads: list) -> None:
        a, b = np.searchsorted(self.sorted, [lo, hi])
        if a == b:
            return
        rows, local = self.order[a:b], self.sorted[a:b] - lo
        for j, column in enumerate(values):
            self.values[rows, j] = column[local]
        flat = self.grads.reshape(len(self.grads), -1)
        for j, column in enumerate(grads):
            flat[rows, j] = column[local]


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
    sink = MemorySink(job)
    done = execute(job, sink)
    graph, grid = job.graph, job.grid
    coords = grid.coords(np.arange(grid.size)).astype(DTYPES[job.settings.dtype])
    value_arrays = {name: coords[:, j] for j, name in enumerate(graph.inputs)}
    value_arrays.update(dict(zip(kept_nodes(job), sink.values)))
    n_wrt = len(graph.wrt)
    grad_arrays = {out: {name: sink.grads[o * n_wrt + w] for w, name in enumerate(graph.wrt)}
                   for o, out in enumerate(graph.outputs)}
    return Result(job, value_arrays, grad_arrays, done.verify, done.timings, job.settings.dtype,
                  done.device)
