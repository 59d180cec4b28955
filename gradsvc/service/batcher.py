"""Dynamic batching of /v1/run: concurrent requests whose jobs share a kernel run as one call.

Requests are grouped by `batch_key` (the graph's structure and everything else that shapes its
kernel; input values aside). The first request of an idle group waits `window_s` for others;
while a group's call runs, later requests gather and go in the next call at once, so the busier
the service, the bigger its calls (as Triton's dynamic batcher does). One call takes at most
`max_points` points.

A call's grid is every request's points one after another (a zip grid of their coordinates),
padded to a power of two, so a graph compiles for a few sizes only. Each request then gets its
own slice of the results and its own verification, with its own job's settings; a request whose
verification finds a mismatch is run again on its own (`api.run`, which recompiles a kernel that
disagrees with the reference). A batched request gets the kernel kind (optimised or not, fast
sin/cos or XLA's) that it would get on its own: its numbers are those of its single run.

Jobs with tensor inputs, random inputs made in the kernel, a chunk size of their own, or more
than `request_max_points` points run on their own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..job.grid import Axis, Grid
from ..job.spec import Job

SMALLEST_CALL = 8  # points: a call's grid is padded to a power of two, at least this


def batch_key(job: Job, request_max_points: int) -> tuple | None:
    """What requests must share to share a call; None for a job that runs on its own."""
    s, grid = job.settings, job.grid
    if (grid.size > request_max_points or grid.tensors or grid.made_in_kernel
            or s.chunk_size != "auto" or s.devices != 1):
        return None
    return (job.graph.structure_key(), grid.names, s.dtype, s.device, s.fast_math, s.keep_values,
            s.compile_cache)


@dataclass
class _Waiting:
    job: Job
    arrived: float
    answer: asyncio.Future


@dataclass
class _Group:
    waiting: list[_Waiting] = field(default_factory=list)
    points: int = 0
    draining: bool = False


class Batcher:
    """Gathers `run(job)` calls of one event loop into shared calls (see the module)."""

    def __init__(self, window_s: float, max_points: int, request_max_points: int, metrics=None):
        self.window_s = window_s
        self.max_points = max_points
        self.request_max_points = min(request_max_points, max_points)
        self.metrics = metrics
        self._groups: dict[tuple, _Group] = {}

    async def run(self, job: Job):
        """The job's `api.Result`, computed in a call shared with concurrent requests."""
        from ..api import run as run_alone
        key = batch_key(job, self.request_max_points)
        if key is None:
            result = await run_in_threadpool(run_alone, job)
            if self.metrics is not None:
                self.metrics.observe_points(result.points, result.timings["run_s"])
            return result
        group = self._groups.setdefault(key, _Group())
        waiting = _Waiting(job, time.perf_counter(), asyncio.get_running_loop().create_future())
        group.waiting.append(waiting)
        group.points += job.grid.size
        if not group.draining:
            group.draining = True
            asyncio.get_running_loop().create_task(self._drain(key, group))
        return await waiting.answer

    async def _drain(self, key: tuple, group: _Group) -> None:
        """Run the group's calls until nobody waits: the first after the window (unless a full
        call is waiting already), each next one at once with whoever came meanwhile."""
        try:
            if group.points < self.max_points:
                await asyncio.sleep(self.window_s)
            while group.waiting:
                taken = self._take(group)
                try:
                    results = await run_in_threadpool(run_together, [w.job for w in taken],
                                                      [w.arrived for w in taken])
                except Exception as error:  # one call's failure is each of its requests'
                    results = [error] * len(taken)
                for waiting, result in zip(taken, results):
                    if waiting.answer.done():  # its client went away
                        continue
                    if isinstance(result, BaseException):
                        waiting.answer.set_exception(result)
                    else:
                        waiting.answer.set_result(result)
                self._observe(taken, results)
        finally:
            group.draining = False
            if not group.waiting:
                self._groups.pop(key, None)

    def _observe(self, taken: list[_Waiting], results: list) -> None:
        if self.metrics is None:
            return
        points = sum(w.job.grid.size for w in taken)
        self.metrics.observe_batch(len(taken), points)
        run_s = next((r.timings["run_s"] for r in results if not isinstance(r, BaseException)),
                     None)
        if run_s is not None:  # the call's time, which every answer of it reports
            self.metrics.observe_points(points, run_s)

    def _take(self, group: _Group) -> list[_Waiting]:
        """The longest run of waiting requests, oldest first, within max_points."""
        taken, points = [], 0
        while group.waiting and points + group.waiting[0].job.grid.size <= self.max_points:
            waiting = group.waiting.pop(0)
            taken.append(waiting)
            points += waiting.job.grid.size
        group.points -= points
        return taken


def run_together(jobs: list[Job], arrived: list[float]) -> list:
    """Each job's `api.Result` (or the error it raised), the points of all of them computed in
    one call of one kernel. Jobs share a `batch_key`."""
    from ..api import Execution, assemble, mismatched, run as run_alone, run_timings
    from ..engine.jax_backend import JAX
    from ..engine.plan import plan_run, result_layout
    first = jobs[0]
    layout = result_layout(first)
    alone = plan_run(first, layout, whole=True)
    together = plan_run(_joined(jobs), layout, whole=True)
    kernel, reused = JAX.kernel(together, kind=JAX.choice(alone))
    chunks: list = []
    run_start = time.perf_counter()
    JAX.run(together, kernel, lambda lo, hi, values, grads: chunks.append((values, grads)))
    run_s = time.perf_counter() - run_start
    (values, derivatives), = chunks  # the grid is one chunk: it is the chunk size
    shared = {"compile_s": 0.0 if reused else kernel.compile_s,
              "compiled_from": "this process" if reused else kernel.source,
              "chunks": 1, "chunks_recomputed_exact": 0, "fast_math": kernel.fast_ops,
              "quick_compile": kernel.quick,
              "batched": {"requests": len(jobs), "points": together.job.grid.size}}
    results, start = [], 0
    for job, since in zip(jobs, arrived):
        stop = start + job.grid.size
        mine_values = [v[start:stop] for v in values]
        mine_derivatives = [d[start:stop] for d in derivatives]
        start = stop
        try:
            report, verify_s = _verify(job, layout, mine_values, mine_derivatives, since)
            if mismatched(report) and not kernel.fresh:
                results.append(run_alone(job))  # recompiled past every cache (api.execute)
                continue
            timings = {**shared, **run_timings(run_s, verify_s, job.grid.size, since)}
            done = Execution(report, timings, str(kernel.device), layout.kept)
            results.append(assemble(job, done, mine_values, mine_derivatives))
        except Exception as error:  # this request's alone
            results.append(error)
    return results


def _joined(jobs: list[Job]) -> Job:
    """One job whose zip grid is every job's points in turn, padded to a power of two by
    repeating the last point (the padding's results are never handed on)."""
    first = jobs[0]
    coords = np.concatenate([job.grid.coords(np.arange(job.grid.size)) for job in jobs])
    size = max(SMALLEST_CALL, 1 << (len(coords) - 1).bit_length())
    coords = np.concatenate([coords, np.repeat(coords[-1:], size - len(coords), axis=0)])
    axes = tuple(Axis(name, np.ascontiguousarray(coords[:, j]), size)
                 for j, name in enumerate(first.grid.names))
    return dataclasses.replace(first, grid=Grid(axes, "zip", size))


def _verify(job: Job, layout, values: list, derivatives: list, since: float):
    """A request's own verification of its slice, as `api.execute` verifies a run of it."""
    from ..api import Capture, verify_capture
    from ..engine.jaxrun import DTYPES
    from ..engine.plan import plan_run
    from ..verify import candidate_points
    s = job.settings
    plan = plan_run(job, layout, whole=True)
    indices, sampled = candidate_points(job.grid.size, s.verify_points, s.verify_seed)
    capture = Capture(indices, layout, DTYPES[s.dtype])
    capture.take(0, job.grid.size, values, derivatives)
    start = time.perf_counter()
    report = verify_capture(plan, capture, indices, sampled,
                            budget=s.verify_budget * (start - since))
    return report, time.perf_counter() - start
