"""`gradsvc batch --executor dask`: a job's point ranges as tasks on a Dask cluster.

A task is a plain function of small arguments that writes its own output (as in Dask's own
examples): a run of the plan's blocks of one job. Each worker compiles the job's kernel once (its
process keeps it; the persistent compile cache may be shared storage), writes its blocks straight
into the result store and hands back only the rows of the points chosen for verification and how
long it took. The client plans, prepares the store (which says which blocks an earlier,
interrupted run already wrote: only the others become tasks), shows progress as tasks finish,
verifies the gathered rows against the reference and finishes the store.

A worker that dies mid-task: the scheduler runs its tasks elsewhere, and since a block's numbers
depend only on the job, the rewritten chunks are identical. A client that dies: the next run finds
the finished blocks in the store and resumes.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import dask
import numpy as np

from ..api import Capture, Execution, prepare_store, run_timings, verify_capture
from ..engine.jax_backend import JAX
from ..engine.jaxrun import DTYPES
from ..engine.plan import ExecutionPlan, KernelPlan, in_ranges, plan_run, points_in
from ..errors import ClusterError, UsageError
from ..job.spec import Job
from ..storage.stats import PILOT_POINTS, Checkpoints, StatsSink
from ..verify import candidate_points

# Dask's nannies give workers MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap
# threshold: every chunk's multi-megabyte arrays are then mapped and zeroed afresh, and a worker
# ran at half the in-process engine's speed (benchmarks/README.md, "Past one process")
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
TASKS_PER_WORKER = 8  # more tasks than workers: a slow or lost worker delays little
CONNECT_TIMEOUT_S = 10  # a scheduler that has not answered by then is not there
MAX_SPAN_POINTS = 1 << 26  # a statistics task's points, at most: a lost task costs little
STATS_TASKS = 16  # statistics tasks of a grid (more past 1e9 points), whatever the workers, so
# that a killed run's saved spans are its rerun's; 64 cost 7% more on the 1e8 bench


@dataclass
class TaskDone:
    """What a task hands back: small, whatever the size of its blocks."""
    start: int  # its first point (tasks' statistics are merged in point order)
    indices: np.ndarray  # the chosen points it computed, sorted
    values: list
    derivatives: list
    points: int
    run_s: float
    compile_s: float
    recomputed: int
    device: str
    stats: object = None  # keep: stats: the statistics of its points (storage.stats.Stats)
    edges: tuple | None = None  # ...and the histogram edges they were binned with


@dataclass(frozen=True)
class Span:
    """Points start .. stop - 1, run in chunks of the plan's size (a statistics task: a grid of
    1e12 points has too many chunks to list)."""
    start: int
    stop: int

    def chunks(self, size: int) -> list[tuple[int, int]]:
        return [(a, min(a + size, self.stop)) for a in range(self.start, self.stop, size)]


def run_blocks(job: Job, sink, ranges, indices: np.ndarray, kind: KernelPlan | None = None,
               checkpoints: Checkpoints | None = None) -> TaskDone:
    """One task, on a worker: the blocks `ranges` (a list of (start, stop), or a `Span`) of
    `job` into `sink` (a store opened by address, or a fresh statistics sink), capturing the
    rows of `indices` (sorted) that lie in them, with a kernel compiled as `kind` says; a
    statistics task keeps its statistics in `checkpoints` before it returns."""
    plan = _plan(job, sink)
    kernel, reused = JAX.kernel(plan, kind=kind)
    capture = Capture(indices, plan.layout, DTYPES[job.settings.dtype])
    if isinstance(ranges, Span):
        ranges = ranges.chunks(plan.chunk_size)

    def on_chunk(lo: int, hi: int, values: list, derivatives: list) -> None:
        sink.write(lo, hi, values, derivatives)
        capture.take(lo, hi, values, derivatives)

    start = time.perf_counter()
    recomputed = JAX.run(plan, kernel, on_chunk, ranges)
    values, derivatives = capture.rows_of(np.arange(len(indices)))
    stats = sink.partial() if hasattr(sink, "partial") else None
    if checkpoints is not None:
        checkpoints.save(ranges[0][0], ranges[-1][1], stats)
    return TaskDone(ranges[0][0], indices, values, derivatives, points_in(ranges),
                    time.perf_counter() - start, 0.0 if reused else kernel.compile_s, recomputed,
                    str(kernel.device), stats, getattr(sink, "edges", None))


def compile_kernel(job: Job, layout, kind: KernelPlan, blocked: bool) -> float:
    """On a worker: its kernel for `job` ready (kept by its process for the tasks: the plan is
    theirs); the seconds it took."""
    start = time.perf_counter()
    JAX.kernel(plan_run(job, layout, False, blocked=blocked), kind=kind)
    return time.perf_counter() - start


def _plan(job: Job, sink) -> ExecutionPlan:
    return plan_run(job, sink.layout, False, blocked=hasattr(sink, "prepare"))


def split(ranges: list[tuple[int, int]], tasks: int) -> list[list[tuple[int, int]]]:
    """`ranges` in order, cut into at most `tasks` runs of consecutive blocks of about equal
    size."""
    tasks = max(1, min(tasks, len(ranges)))
    per = len(ranges) / tasks
    return [ranges[round(i * per):round((i + 1) * per)] for i in range(tasks)
            if ranges[round(i * per):round((i + 1) * per)]]


class DaskExecutor:
    """`execute(job, sink, progress)` with the contract of `gradsvc.api.execute`, its blocks run
    by a Dask cluster: `workers=N` starts a LocalCluster of N single-threaded worker processes
    for the executor's lifetime, `scheduler="tcp://host:8786"` uses a running cluster."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 processes: bool = True):
        from distributed import Client, LocalCluster
        if (workers is None) == (scheduler is None):
            raise UsageError("the dask executor needs --workers N or --scheduler ADDRESS, not both",
                             hint="--workers 2 starts a local cluster; --scheduler tcp://host:8786 "
                             "uses a running one (`dask scheduler`, `dask worker`)")
        self.cluster, self.environ = None, {}
        if scheduler is None:
            before = dict(os.environ)
            with dask.config.set(WORKER_ENVIRON):
                # worker processes talk over loopback TCP only (threads: in-process queues)
                where = {"host": "127.0.0.1"} if processes else {}
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                            processes=processes, dashboard_address="127.0.0.1:0",
                                            **where)
            # the nannies set their workers' variables (OMP_NUM_THREADS, PYTHONHASHSEED, ...) in
            # this process, the caller's: those are put back now and when the cluster closes
            # (a nanny restarting a dead worker sets them again)
            self.environ = {name: before.get(name) for name in set(before) | set(os.environ)
                            if before.get(name) != os.environ.get(name)}
            _put_back(self.environ)
            self.client = Client(self.cluster)
        else:
            self.client = _connect(Client, scheduler)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            _put_back(self.environ)

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def __call__(self, job: Job, sink, progress=None) -> Execution:
        start = time.perf_counter()
        if getattr(getattr(sink, "place", None), "in_memory", False):
            raise UsageError("memory:// lives in one process: Dask workers cannot share it",
                             hint="give --out a folder every worker can reach, or an object "
                             "store (s3://, gs://); or run in this process")
        plan = _plan(job, sink)
        kernel, reused = JAX.kernel(plan)  # the client's own: the layout, the kernel's kind
        s, grid = job.settings, job.grid
        indices, sampled = candidate_points(grid.size, s.verify_points, s.verify_seed)
        capture = Capture(indices, plan.layout, DTYPES[s.dtype])
        if hasattr(sink, "prepare"):  # a store: only the blocks it lacks
            todo = prepare_store(sink, plan, kernel)
            capture.fill_from(sink, outside=todo)
            tasks = split(todo, TASKS_PER_WORKER * self.workers)
        else:  # keep: stats: spans of the grid, whatever the number of workers
            tasks = spans(grid.size, plan.chunk_size, STATS_TASKS)
            checkpoints = _checkpoints(job, sink, plan, tasks)
            saved = checkpoints.load() if checkpoints is not None else {}
            tasks = [t for t in tasks if (t.start, t.stop) not in saved]
            if saved:  # statistics keep no rows: only the points computed now are verified
                indices = indices[in_ranges(indices, [(t.start, t.stop) for t in tasks])]
                sampled, capture = True, Capture(indices, plan.layout, DTYPES[s.dtype])
        points = sum(_points(task) for task in tasks)
        if progress is not None:
            progress(grid.size - points)
        kind = KernelPlan(kernel.fast, kernel.quick)
        worker_compile = self._compile_everywhere(job, sink, kind) if tasks else {}
        run_start = time.perf_counter()
        if hasattr(sink, "prepare"):
            done = self._run(job, sink, tasks, capture, kind, progress)
        else:
            done = self._run_stats(job, sink, tasks, capture, kind, progress, checkpoints, saved)
        run_s = time.perf_counter() - run_start
        for task in done:
            if len(task.indices):
                capture.put(task.indices, task.values, task.derivatives)
        verify_start = time.perf_counter()
        report = verify_capture(plan, capture, indices, sampled,
                                budget=s.verify_budget * (time.perf_counter() - start))
        timings = {"compile_s": 0.0 if reused else kernel.compile_s,
                   "compiled_from": "this process" if reused else kernel.source,
                   "worker_compile_s": max([*worker_compile.values(),
                                            *(t.compile_s for t in done)], default=0.0),
                   **run_timings(run_s, time.perf_counter() - verify_start, points, start),
                   "tasks": len(done), "workers": self.workers,
                   "executor": "dask", "chunks_recomputed_exact": sum(t.recomputed for t in done),
                   "fast_math": kernel.fast_ops, "quick_compile": kernel.quick}
        device = done[0].device if done else str(kernel.device)
        return Execution(report, timings, device, plan.kept)

    def _compile_everywhere(self, job: Job, sink, kind: KernelPlan) -> dict[str, float]:
        """Every worker compiles (or loads) the kernel at once, before the tasks, so that compile
        time is reported apart from run time, as in this process: one task pinned to each (a
        task, not `client.run`, which would block a worker's event loop and its heartbeats)."""
        workers = list(self.client.scheduler_info().get("workers", {}))
        blocked = hasattr(sink, "prepare")
        futures = [self.client.submit(compile_kernel, job, sink.layout, kind, blocked,
                                      workers=[worker], allow_other_workers=False, pure=False)
                   for worker in workers]
        return {worker: _result(future) for worker, future in zip(workers, futures)}

    def _run(self, job: Job, sink, tasks: list, capture: Capture, kind: KernelPlan,
             progress) -> list[TaskDone]:
        """Every task of a store's blocks; their results in point order."""
        if not tasks:
            return []
        # the sink holds the job too: each travels once per worker, not with every task
        job_future = self.client.scatter(job, broadcast=True, hash=False)
        sink_future = self.client.scatter(sink, broadcast=True, hash=False)
        return self._gather([self._submit(job_future, sink_future, ranges, capture, kind)
                             for ranges in tasks], progress)

    def _run_stats(self, job: Job, sink, tasks: list, capture: Capture, kind: KernelPlan,
                   progress, checkpoints, saved: dict) -> list[TaskDone]:
        """Every statistics task, each with a sink of its own, their statistics merged into
        `sink` in point order with those an earlier run saved. Histograms need the edges of
        the grid's first points: the task holding them runs first (or its saved statistics
        give them), and the others get its edges."""
        job_future = self.client.scatter(job, broadcast=True, hash=False) if tasks else None

        def submit(span, edges=None):
            return self._submit(job_future, StatsSink(job, sink.layout, edges), span, capture,
                                kind, checkpoints)
        done = []
        if tasks and tasks[0].start == 0:  # the pilot
            done = self._gather([submit(tasks[0])], progress)
            tasks = tasks[1:]
        # the pilot's edges: from its task, or from what an earlier run saved of it
        edges = done[0].edges if done else tuple(c.edges for c in saved[min(saved)].columns)
        done += self._gather([submit(span, edges) for span in tasks], progress)
        parts = [(t.start, t.stats) for t in done] + [(a, part) for (a, _), part in saved.items()]
        for _, part in sorted(parts, key=lambda pair: pair[0]):
            sink.add(part, edges)
        return done

    def _submit(self, job_future, task_sink, ranges, capture: Capture, kind: KernelPlan,
                checkpoints=None):
        mine = capture.sorted[capture.within(_ranges_of(ranges))]
        return self.client.submit(run_blocks, job_future, task_sink, ranges, mine, kind,
                                  checkpoints, pure=False)

    def _gather(self, futures: list, progress) -> list[TaskDone]:
        """The tasks' results as they finish (progress shown), in point order."""
        from distributed import as_completed
        done = []
        for future in as_completed(futures):
            task = _result(future)
            done.append(task)
            if progress is not None:
                progress(task.points)
        return sorted(done, key=lambda task: task.start)


def _checkpoints(job: Job, sink, plan: ExecutionPlan, tasks: list) -> Checkpoints | None:
    """Where a statistics run keeps each span's statistics: the result's folder, when the sink
    names one; for this job, this chunk size and these spans only."""
    if getattr(sink, "checkpoints", None) is None:
        return None
    from ..storage.key import result_key
    identity = {"key": result_key(job), "chunk_size": plan.chunk_size,
                "spans": [[t.start, t.stop] for t in tasks]}
    return Checkpoints(sink.checkpoints, json.loads(json.dumps(identity, default=str)),
                       len(sink.layout.shapes))


def spans(size: int, chunk: int, tasks: int) -> list[Span]:
    """The grid cut into spans of whole chunks: first the statistics' pilot (the chunks holding
    the grid's first PILOT_POINTS points: its task runs alone, so it is kept short), then the
    rest in about `tasks` spans of at most MAX_SPAN_POINTS."""
    chunks = -(-size // chunk)
    pilot = min(chunks, -(-PILOT_POINTS // chunk))
    rest = chunks - pilot
    per = max(1, -(-rest // max(tasks, -(-rest * chunk // MAX_SPAN_POINTS), 1)))
    starts = [0] + list(range(pilot, chunks, per))
    stops = starts[1:] + [chunks]
    return [Span(a * chunk, min(b * chunk, size)) for a, b in zip(starts, stops)]


def _ranges_of(task) -> list[tuple[int, int]]:
    return [(task.start, task.stop)] if isinstance(task, Span) else task


def _points(task) -> int:
    return points_in(_ranges_of(task))


def _put_back(environ: dict) -> None:
    """Each variable of `environ` as it was ({name: value, or None where it was not set})."""
    for name, value in environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _result(future):
    """A task's result; a cluster's failure as one clear error (a job's own error as it is)."""
    from distributed import KilledWorker
    try:
        return future.result()
    except KilledWorker as error:
        raise ClusterError(f"the Dask workers running a task of this job died, again and again "
                           f"({error})", hint="a worker's log says why (memory: give workers "
                           "more, or the job smaller chunks with chunk_size)") from None
    except (OSError, TimeoutError) as error:  # distributed's CommClosedError is an OSError
        raise ClusterError(f"lost the Dask scheduler or a worker: {error}",
                           hint="check that the cluster is running; rerun the same command to "
                           "resume from the blocks already stored") from None


def _connect(client_class, address: str):
    try:
        return client_class(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as error:
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {error}",
                         hint="start one with `dask scheduler` (and workers with `dask worker "
                         f"{address}`), or use --workers N for a local cluster") from None


@contextmanager
def dask_executor(workers: int | None = None, scheduler: str | None = None,
                  processes: bool = True):
    """A DaskExecutor for the duration of the block (its local cluster stopped afterwards)."""
    executor = DaskExecutor(workers, scheduler, processes)
    try:
        yield executor
    finally:
        executor.close()
