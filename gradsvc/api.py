"""Running a job: compile (cached per graph structure), evaluate every point, verify, time.

>>> import gradsvc
>>> r = gradsvc.run("jobs/seed_chain.yaml")
>>> float(r.grads["e"]["a"][0]), r.verify.ok
(12.0, True)
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import limits
from .engine import plan
from .errors import LimitError
from .engine.jacobians import derivative_shapes, uses_jacobians
from .engine.jaxrun import DTYPES, Compiled, compile_graph, get_device, run_chunks
from .engine.kcache import executable_key, executable_path, remove_entry, use_compile_cache
from .job.spec import Job, as_job
from .verify import VerifyReport, candidate_points, checks_in_full, verify


@dataclass
class Result:
    """Values and gradients of one job over its grid, in grid order, with the verification report.

    Every array runs over points first: `values[name]` has shape (points, *node shape) for every
    input and node; `grads[output][name]` (every `wrt` name) has shape (points, *output shape,
    *name shape): the gradient of a scalar output, the Jacobian of a tensor output; with `order: 2`,
    `hessians[output][a][b]` has shape (points, *a shape, *b shape) for every scalar output. A grid
    input's values are its coordinates, a tensor input's the same tensor at every point (a view,
    no copy); `shape` is the grid's shape (reshape the points axis to it for product grids).
    """
    job: Job
    values: dict[str, np.ndarray]
    grads: dict[str, dict[str, np.ndarray]]
    verify: VerifyReport
    timings: dict[str, float]
    dtype: str
    device: str
    hessians: dict[str, dict[str, dict[str, np.ndarray]]] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        # the generated one printed every array and the whole report: tens of kB for a small grid
        return (f"<Result {self.job.name!r}: {self.points:,} point{'s' * (self.points != 1)}, "
                f"shape {self.shape}, "
                f"{self.dtype}, ok={self.ok}, outputs {list(self.job.graph.outputs)}>")

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
        """Everything at one point: {"values": {name: v}, "grads": {out: {name: g}}} (and
        "hessians"), each a float or, for a tensor, nested lists."""
        at = {"values": {n: _at(a, index) for n, a in self.values.items()},
              "grads": {o: {n: _at(a, index) for n, a in g.items()} for o, g in self.grads.items()}}
        if self.hessians:
            at["hessians"] = {o: {a: {b: _at(h, index) for b, h in row.items()}
                                  for a, row in rows.items()} for o, rows in self.hessians.items()}
        return at


def _at(array: np.ndarray, index: int):
    return array[index].tolist() if array.ndim > 1 else float(array[index])


# Jobs with the same graph structure compile once per process. Least recently used first, and
# bounded: each compiled kernel holds ~18 memory mappings of machine code, and a process that ran
# thousands of distinct graphs (a long fuzz campaign did) reached the kernel's limit of 65,530
# mappings and XLA crashed. Evicted kernels come back from the on-disk executable cache.
_COMPILED: OrderedDict[tuple, Compiled] = OrderedDict()
_COMPILED_LOCK = threading.Lock()  # threads of one process (a service) share the kernels


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


def _shape(job: Job, chunk_size: int) -> tuple:
    return plan.shape_key(job, chunk_size, kept_nodes(job))


def kernel_plan(job: Job, chunk_size: int, shape: tuple | None = None) -> plan.KernelPlan:
    """Which kernel this run of `job` gets (`plan.choose`); `shape`: the job's `_shape`."""
    shape = shape or _shape(job, chunk_size)
    return plan.choose(job, shape, lambda kernel: (*shape, kernel) in _COMPILED,
                       lambda kernel: _on_disk(job, chunk_size, kernel))


def _on_disk(job: Job, chunk_size: int, kernel: plan.KernelPlan) -> bool:
    s = job.settings
    use_compile_cache(s.compile_cache)
    device = get_device(s.device, inline=job.grid.size <= chunk_size)
    path = executable_path(executable_key(job.graph, job.grid, s.dtype, device, chunk_size,
                                          kept_nodes(job), kernel.fast, kernel.quick))
    return path is not None and path.is_file()


def _compiled_for(job: Job, chunk_size: int, fresh: bool = False,
                  shape: tuple | None = None) -> tuple[Compiled, bool]:
    """The job's kernel, and whether this process had it already. `fresh`: compiled past every
    cache (see compile_graph); `shape`: the job's `_shape`, where the caller has it."""
    s = job.settings
    shape = shape or _shape(job, chunk_size)
    kernel = kernel_plan(job, chunk_size, shape)
    key = (*shape, kernel)  # a kernel of this shape, compiled this way
    with _COMPILED_LOCK:
        have = None if fresh else _COMPILED.get(key)
        if have is not None:
            _COMPILED.move_to_end(key)
    if have is not None:
        return have, True
    use_compile_cache(s.compile_cache)
    compiled = compile_graph(job.graph, job.grid, s.dtype, s.device, chunk_size, kept_nodes(job),
                             kernel.fast, fresh=fresh, quick=kernel.quick)
    with _COMPILED_LOCK:
        _COMPILED.pop(key, None)
        _COMPILED[key] = compiled
        while len(_COMPILED) > limits.MAX_COMPILED_KERNELS:
            _COMPILED.popitem(last=False)
    return compiled, False


RECOMPILED = "recompiled after a mismatch"  # timings["compiled_from"] of a job run twice


def _evict(job: Job, shape: tuple, compiled: Compiled) -> None:
    """Never use this kernel (or its exact twin) again: not from this process, not from disk."""
    with _COMPILED_LOCK:
        _COMPILED.pop((*shape, plan.KernelPlan(compiled.fast, compiled.quick)), None)
    use_compile_cache(job.settings.compile_cache)  # the folder it came from
    for kernel in (compiled, compiled.exact):
        if kernel is not None:
            remove_entry(kernel.key)


def _exact_twin(job: Job, compiled: Compiled) -> Callable[[], Compiled]:
    """Builds the same function with XLA's own sin/cos, for chunks beyond the fast range (past
    every cache too when the kernel itself was)."""
    def build() -> Compiled:
        s = job.settings
        return compile_graph(job.graph, job.grid, s.dtype, s.device, compiled.chunk_size,
                             kept_nodes(job), fast=False, fresh=compiled.fresh,
                             quick=compiled.quick)
    return build


def result_shapes(job: Job) -> tuple[list[tuple], list[tuple]]:
    """The shape at one point of each array a kernel returns: the kept values, then the
    derivatives (Jacobians output-major, then Hessians)."""
    graph = job.graph
    return [graph.shape_of(n) for n in kept_nodes(job)], derivative_shapes(graph)


class MemorySink:
    """Keeps every point's values and gradients in memory, one array per node and per gradient."""

    whole = True  # everything is kept: the bigger the chunk, the fewer copies

    def __init__(self, job: Job):
        graph, size, dtype = job.graph, job.grid.size, DTYPES[job.settings.dtype]
        self.shapes = result_shapes(job)
        n_numbers = len(graph.grid_inputs) + sum(math.prod(s) for s in self.shapes[0] + self.shapes[1])
        if size * n_numbers * np.dtype(dtype).itemsize > limits.MAX_RESULT_BYTES:
            raise LimitError(f"{size:,} points x {n_numbers} numbers would need more than "
                             f"{limits.MAX_RESULT_BYTES:,} bytes in memory",
                             hint="use `gradsvc batch`, which streams results to disk, or "
                             "`wrt: inputs` (MAX_RESULT_BYTES)")
        self.dtype, self.size = dtype, size
        self.values: list[np.ndarray] | None = None
        self.grads: list[np.ndarray] | None = None

    def rewind(self) -> None:
        """Forget every chunk written: the job is being computed again."""
        self.values = self.grads = None

    def write(self, start: int, stop: int, values: list, grads: list) -> None:
        if start == 0 and stop == self.size:  # one chunk: keep JAX's arrays, no copy
            self.values, self.grads = list(values), list(grads)
            return
        if self.values is None:
            self.values = [np.empty((self.size, *s), self.dtype) for s in self.shapes[0]]
            self.grads = [np.empty((self.size, *s), self.dtype) for s in self.shapes[1]]
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
    the sink: results can go straight to disk. A kernel whose results disagree with the reference
    may come from a damaged cache entry: it is evicted (from this process and from disk), and the
    job is compiled once more past every cache, `sink.rewind()` forgets what was written, and the
    job runs again before anything is reported; a fresh kernel's mismatch is the result.
    """
    start = time.perf_counter()
    chunk_size = chunk_size_for(job, getattr(sink, "whole", False))
    shape = _shape(job, chunk_size)
    compiled, reused = _compiled_for(job, chunk_size, shape=shape)
    compile_s = 0.0 if reused else compiled.compile_s
    source = "this process" if reused else compiled.source
    attempt = _run_and_verify(job, compiled, sink, progress, start)
    plan.record_run(shape, job.grid.size)
    if attempt.report.mismatches and not compiled.fresh:
        _evict(job, shape, compiled)
        sink.rewind()
        compiled, _ = _compiled_for(job, chunk_size, fresh=True, shape=shape)
        compile_s += compiled.compile_s
        source = RECOMPILED
        attempt = _run_and_verify(job, compiled, sink, None, start)  # progress was shown in full
    run_s = attempt.run_s
    timings = {"compile_s": compile_s, "compiled_from": source,
               "run_s": run_s, "verify_s": attempt.verify_s,
               "total_s": time.perf_counter() - start,
               "points_per_s": job.grid.size / run_s if run_s > 0 else float("inf"),
               "chunks": -(-job.grid.size // compiled.chunk_size),
               "chunks_recomputed_exact": attempt.recomputed,
               "fast_math": compiled.fast_ops,  # the kernel the plan gave it (see `plan`)
               "quick_compile": compiled.quick}
    return Execution(attempt.report, timings, str(compiled.device), kept_nodes(job))


@dataclass
class _Attempt:
    report: VerifyReport
    run_s: float
    verify_s: float
    recomputed: int  # chunks recomputed with XLA's own sin/cos


def _run_and_verify(job: Job, compiled: Compiled, sink, progress, start: float) -> _Attempt:
    """Every chunk into the sink, then verification of the captured rows (its time budget is a
    share of everything since `start`)."""
    s, graph, grid = job.settings, job.graph, job.grid
    indices, sampled = candidate_points(grid.size, s.verify_points, s.verify_seed)
    kept = kept_nodes(job)
    capture = _Capture(indices, result_shapes(job), DTYPES[s.dtype])

    def on_chunk(lo: int, hi: int, values: list, grads: list) -> None:
        sink.write(lo, hi, values, grads)
        capture.take(lo, hi, values, grads)
        if progress is not None:
            progress(hi - lo)

    run_start = time.perf_counter()
    recomputed = run_chunks(compiled, grid, on_chunk, _exact_twin(job, compiled))
    run_s = time.perf_counter() - run_start
    verify_start = time.perf_counter()
    budget = s.verify_budget * (time.perf_counter() - start)
    options = dict(factor=s.tolerance.factor, fd_points=s.fd_points, fd_rtol=s.tolerance.fd_rtol,
                   min_points=s.verify_min_points, seed=s.verify_seed)
    if uses_jacobians(graph):  # whether it checks in full depends on its scalar view
        from .verify_jacobians import verify_jacobians  # its reference parts load with it
        report = verify_jacobians(graph, grid, s.dtype, indices, kept, capture.values,
                                  capture.derivatives, budget_s=budget, sampled=sampled, **options)
    else:
        in_full = not sampled and checks_in_full(graph, len(indices), s.fd_points)
        values, grads = capture.scalar_rows(len(graph.outputs), len(graph.wrt))
        report = verify(graph, grid, s.dtype, indices, kept, values, grads,
                        budget_s=None if in_full else budget, **options)
    return _Attempt(report, run_s, time.perf_counter() - verify_start, recomputed)


class _Capture:
    """The rows of chosen point indices, picked out of chunks as they stream past: for each
    kept value and each derivative, an array (chosen points, *its shape)."""

    def __init__(self, indices: np.ndarray, shapes: tuple[list, list], dtype):
        self.order = np.argsort(indices, kind="stable")
        self.sorted = indices[self.order]
        self.values = [np.empty((len(indices), *s), dtype) for s in shapes[0]]
        self.derivatives = [np.empty((len(indices), *s), dtype) for s in shapes[1]]
        self.dtype = dtype

    def take(self, lo: int, hi: int, values: list, derivatives: list) -> None:
        a, b = np.searchsorted(self.sorted, [lo, hi])
        if a == b:
            return
        rows, local = self.order[a:b], self.sorted[a:b] - lo
        for kept, column in zip(self.values + self.derivatives, list(values) + list(derivatives)):
            kept[rows] = column[local]

    def scalar_rows(self, n_outputs: int, n_wrt: int) -> tuple[np.ndarray, np.ndarray]:
        """A scalar job's rows as the scalar verification takes them: values (points, kept),
        gradients (points, outputs, wrt)."""
        n = len(self.order)
        values = np.stack(self.values, axis=1) if self.values else np.empty((n, 0), self.dtype)
        grads = (np.stack(self.derivatives, axis=1) if self.derivatives
                 else np.empty((n, 0), self.dtype))
        return values, grads.reshape(n, n_outputs, n_wrt)


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
    value_arrays = {name: coords[:, j] for j, name in enumerate(grid.names)}
    for name, tensor in grid.tensors.items():  # the same at every point: a view, no copy
        value_arrays[name] = np.broadcast_to(tensor.astype(DTYPES[job.settings.dtype]),
                                             (grid.size, *tensor.shape))
    value_arrays = {name: value_arrays[name] for name in graph.inputs}  # in the file's order
    value_arrays.update(dict(zip(kept_nodes(job), sink.values)))
    derivatives = iter(sink.grads)
    grad_arrays = {out: {name: next(derivatives) for name in graph.wrt} for out in graph.outputs}
    hessians = {out: {a: {b: next(derivatives) for b in graph.wrt} for a in graph.wrt}
                for out in graph.hessian_outputs}
    return Result(job, value_arrays, grad_arrays, done.verify, done.timings, job.settings.dtype,
                  done.device, hessians)
