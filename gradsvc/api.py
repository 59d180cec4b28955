"""Running a job: plan it, run it on a backend (JAX unless told otherwise), verify a sample, time it.

>>> import gradsvc
>>> r = gradsvc.run("jobs/seed_chain.yaml")
>>> float(r.grads["e"]["a"][0]), r.verify.ok
(12.0, True)
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from . import limits
from .engine.backend import Backend
from .engine.jacobians import derivative_keys, uses_jacobians
from .engine.jax_backend import JAX
from .engine.jaxrun import DTYPES
from .engine.plan import ExecutionPlan, ResultLayout, in_ranges, plan_run, points_in, result_layout
from .errors import LimitError
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


RECOMPILED = "recompiled after a mismatch"  # timings["compiled_from"] of a job run twice


class MemorySink:
    """Keeps every point's values and gradients in memory, one array per node and per gradient."""

    whole = True  # everything is kept: the bigger the chunk, the fewer copies

    def __init__(self, job: Job):
        graph, size, dtype = job.graph, job.grid.size, DTYPES[job.settings.dtype]
        self.layout = result_layout(job)
        n_numbers = len(graph.grid_inputs) + self.layout.numbers_per_point()
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
            self.values = [np.empty((self.size, *s), self.dtype) for s in self.layout.value_shapes]
            self.grads = [np.empty((self.size, *s), self.dtype)
                          for s in self.layout.derivative_shapes]
        for column, chunk in zip(self.values + self.grads, list(values) + list(grads)):
            column[start:stop] = chunk


@dataclass
class Execution:
    verify: VerifyReport
    timings: dict[str, float]
    device: str
    kept: tuple[str, ...]  # the nodes whose values were computed


def execute(job: Job, sink, progress=None, backend: Backend = JAX) -> Execution:
    """Plan the run, get its kernel from `backend`, stream every chunk into `sink.write`, then
    verify a sample. `sink` is any object with write(start, stop, values, derivatives) and
    rewind(); `whole` (keeps everything in memory) and `layout` are optional, and so is the
    protocol of a store that keeps results by blocks and resumes: prepare(block_shape, ranges,
    twins) -> the ranges still to compute, and rows(indices) -> the stored rows of points it
    already holds (for verification).

    The rows verification needs are captured as chunks pass, so nothing has to be read back from
    the sink: results can go straight to disk. A kernel whose results disagree with the reference
    may come from a damaged cache entry: the backend forgets it, the job is compiled once more
    past every cache, `sink.rewind()` forgets what was written, and the job runs again before
    anything is reported; a fresh kernel's mismatch is the result.
    """
    start = time.perf_counter()
    # a sink of gradsvc's own brings the layout it allocated for; any object with `write` will do
    plan = plan_run(job, getattr(sink, "layout", None) or result_layout(job),
                    getattr(sink, "whole", False), blocked=hasattr(sink, "prepare"))
    kernel, reused = backend.kernel(plan)
    compile_s = 0.0 if reused else kernel.compile_s
    source = "this process" if reused else kernel.source
    attempt = _run_and_verify(plan, backend, kernel, sink, progress, start)
    if mismatched(attempt.report) and not kernel.fresh:
        backend.forget(plan, kernel)
        sink.rewind()
        kernel, _ = backend.kernel(plan, fresh=True)
        compile_s += kernel.compile_s
        source = RECOMPILED
        attempt = _run_and_verify(plan, backend, kernel, sink, None, start)  # progress was shown
    timings = {"compile_s": compile_s, "compiled_from": source,
               **run_timings(attempt.run_s, attempt.verify_s, attempt.points, start),
               "chunks": (len(plan.ranges) if plan.ranges is not None
                          else -(-job.grid.size // plan.chunk_size)),
               "chunks_recomputed_exact": attempt.recomputed,
               "fast_math": kernel.fast_ops,  # the kernel the plan gave it (see engine.plan)
               "quick_compile": kernel.quick}
    return Execution(attempt.report, timings, str(kernel.device), plan.kept)


def run_timings(run_s: float, verify_s: float, points: int, start: float) -> dict:
    """The timings every executor reports of a run that began at `start` and computed
    `points`."""
    return {"run_s": run_s, "verify_s": verify_s, "total_s": time.perf_counter() - start,
            "points_per_s": points / run_s if run_s > 0 else float("inf"),
            "points_computed": points}


def prepare_store(sink, plan: ExecutionPlan, kernel) -> list[tuple[int, int]]:
    """A block store made ready for this plan and kernel: the blocks it still lacks."""
    return sink.prepare(plan.block_shape, plan.ranges, twins_of(kernel.layout),
                        kernel=(kernel.fast, kernel.quick))


def twins_of(layout: tuple[int, ...]) -> dict[int, int]:
    """{result index: the earlier result index it is the very same array as}, from a kernel's
    layout (the seed's dz/da and dz/db are one array: a store keeps it once)."""
    first: dict[int, int] = {}
    return {i: first[a] for i, a in enumerate(layout) if first.setdefault(a, i) != i}


def mismatched(report: VerifyReport) -> bool:
    """Did the kernel's own numbers disagree with the reference (values, gradients, Hessians)?
    A finite-difference mismatch is the reference's: another kernel cannot mend it."""
    return bool(report.mismatches or report.hessians.get("mismatches"))


@dataclass
class _Attempt:
    report: VerifyReport
    run_s: float
    verify_s: float
    recomputed: int  # chunks recomputed with XLA's own sin/cos
    points: int  # points computed (a resumed run computes only those a store lacks)


def _run_and_verify(plan: ExecutionPlan, backend: Backend, kernel, sink, progress,
                    start: float) -> _Attempt:
    """Every chunk the sink still needs into the sink, then verification of the captured rows
    (its time budget is a share of everything since `start`)."""
    job = plan.job
    s, grid = job.settings, job.grid
    todo = prepare_store(sink, plan, kernel) if hasattr(sink, "prepare") else None
    indices, sampled = candidate_points(grid.size, s.verify_points, s.verify_seed)
    capture = Capture(indices, plan.layout, DTYPES[s.dtype])
    if todo is not None:
        capture.fill_from(sink, outside=todo)  # points an earlier, interrupted run stored
        if progress is not None:
            progress(grid.size - points_in(todo))

    def on_chunk(lo: int, hi: int, values: list, grads: list) -> None:
        sink.write(lo, hi, values, grads)
        capture.take(lo, hi, values, grads)
        if progress is not None:
            progress(hi - lo)

    run_start = time.perf_counter()
    recomputed = backend.run(plan, kernel, on_chunk, todo)
    run_s = time.perf_counter() - run_start
    verify_start = time.perf_counter()
    report = verify_capture(plan, capture, indices, sampled,
                            budget=s.verify_budget * (time.perf_counter() - start))
    points = grid.size if todo is None else points_in(todo)
    return _Attempt(report, run_s, time.perf_counter() - verify_start, recomputed, points)


def verify_capture(plan: ExecutionPlan, capture: "Capture", indices: np.ndarray, sampled: bool,
                   budget: float) -> VerifyReport:
    """Check the captured rows of `indices` against the reference (and finite differences),
    within `budget` seconds once the points that must be checked are."""
    job = plan.job
    s, graph, grid = job.settings, job.graph, job.grid
    options = dict(factor=s.tolerance.factor, fd_points=s.fd_points, fd_rtol=s.tolerance.fd_rtol,
                   min_points=s.verify_min_points, seed=s.verify_seed)
    if uses_jacobians(graph):  # whether it checks in full depends on its scalar view
        from .verify_jacobians import verify_jacobians  # its reference parts load with it
        return verify_jacobians(graph, grid, s.dtype, indices, plan.kept, capture.values,
                                capture.derivatives, budget_s=budget, sampled=sampled, **options)
    in_full = not sampled and checks_in_full(graph, len(indices), s.fd_points)
    values, grads = capture.scalar_rows(len(graph.outputs), len(graph.wrt))
    return verify(graph, grid, s.dtype, indices, plan.kept, values, grads,
                  budget_s=None if in_full else budget, **options)


class Capture:
    """The rows of chosen point indices, picked out of chunks as they stream past: for each
    kept value and each derivative, an array (chosen points, *its shape)."""

    def __init__(self, indices: np.ndarray, layout: ResultLayout, dtype):
        self.order = np.argsort(indices, kind="stable")
        self.sorted = indices[self.order]
        self.values = [np.empty((len(indices), *s), dtype) for s in layout.value_shapes]
        self.derivatives = [np.empty((len(indices), *s), dtype) for s in layout.derivative_shapes]
        self.dtype = dtype

    def take(self, lo: int, hi: int, values: list, derivatives: list) -> None:
        a, b = np.searchsorted(self.sorted, [lo, hi])
        if a == b:
            return
        rows, local = self.order[a:b], self.sorted[a:b] - lo
        for kept, column in zip(self.values + self.derivatives, list(values) + list(derivatives)):
            kept[rows] = column[local]

    def within(self, ranges) -> np.ndarray:
        """Which of the chosen points (positions in sorted order) lie in `ranges`."""
        return in_ranges(self.sorted, ranges)

    def fill_from(self, sink, outside) -> None:
        """The chosen points outside the ranges `outside`, read back from the sink's store."""
        stored = ~self.within(outside)
        if stored.any():
            self.put(self.sorted[stored], *sink.rows(self.sorted[stored]))

    def rows_of(self, positions: np.ndarray) -> tuple[list, list]:
        """The captured rows at `positions` of the sorted order (a worker hands its own back)."""
        rows = self.order[positions]
        return [v[rows] for v in self.values], [d[rows] for d in self.derivatives]

    def put(self, indices: np.ndarray, values: list, derivatives: list) -> None:
        """Rows of the points `indices` (sorted, all chosen) captured elsewhere."""
        rows = self.order[np.searchsorted(self.sorted, indices)]
        for kept, column in zip(self.values + self.derivatives, list(values) + list(derivatives)):
            kept[rows] = column

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
    return assemble(job, execute(job, sink), sink.values, sink.grads)


def assemble(job: Job, done: Execution, values: list, derivatives: list) -> Result:
    """The `Result` of a run of `job`: its kept values and derivatives, one array each over the
    points in the kernel's order, named; the inputs' values made from the grid."""
    graph, grid = job.graph, job.grid
    coords = grid.coords(np.arange(grid.size)).astype(DTYPES[job.settings.dtype])
    value_arrays = {name: coords[:, j] for j, name in enumerate(grid.names)}
    for name, tensor in grid.tensors.items():  # the same at every point: a view, no copy
        value_arrays[name] = np.broadcast_to(tensor.astype(DTYPES[job.settings.dtype]),
                                             (grid.size, *tensor.shape))
    value_arrays = {name: value_arrays[name] for name in graph.inputs}  # in the file's order
    value_arrays.update(dict(zip(done.kept, values)))
    arrays = dict(zip(derivative_keys(graph), derivatives))
    grads = {out: {w: arrays["grads", out, w] for w in graph.wrt} for out in graph.outputs}
    hessians = {out: {a: {b: arrays["hessians", out, a, b] for b in graph.wrt} for a in graph.wrt}
                for out in graph.hessian_outputs}
    return Result(job, value_arrays, grads, done.verify, done.timings, job.settings.dtype,
                  done.device, hessians)
