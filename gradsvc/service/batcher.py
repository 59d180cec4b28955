"""Dynamic batching of /v1/run: concurrent requests whose jobs share a kernel run as one call.

Requests wait in one line. The first request to an idle batcher waits `window_s` for others;
while a call runs, later requests gather and are taken at once after it, so the busier the
service, the bigger its calls (as Triton's dynamic batcher does). The requests taken are read
(their job texts parsed), grouped by `batch_key` (the graph's structure and everything else that
shapes its kernel; input values aside), each group computed in calls of at most `max_points`
points, and each answer made (its JSON), all in one worker thread: a request costs no thread hop
of its own, and the event loop only hands texts in and answers out.

A call's grid is every request's points one after another (a zip grid of their coordinates),
padded to a power of two, so a graph compiles for a few sizes only. Each request then gets its
own slice of the results and its own verification, with its own job's settings; a request whose
verification finds a mismatch is run again on its own (`api.run`, which recompiles a kernel that
disagrees with the reference). A batched request gets the kernel kind (optimised or not, fast
sin/cos or XLA's) that it would get on its own: its numbers are those of its single run.

Jobs with tensor inputs, random inputs made in the kernel, a chunk size of their own, or more
than `request_max_points` points run on their own, each in a worker thread of its own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..job.grid import Axis, Grid
from ..job.spec import Job

SMALLEST_CALL = 8  # points: a call's grid is padded to a power of two, at least this
MAX_TAKEN = 1024  # requests read in one go (their points are not known before they are read)


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
    text: str
    arrived: float
    answer: asyncio.Future


@dataclass
class _Alone:
    """A request whose job runs on its own (see the module)."""
    job: Job


class Batcher:
    """Gathers `answer(text)` calls of one event loop into shared calls (see the module).

    `read(text)` makes a request's `Job` (raising its errors); `finish(result)` makes its answer
    from its `api.Result`. Both run in worker threads."""

    def __init__(self, window_s: float, max_points: int, request_max_points: int,
                 read: Callable[[str], Job], finish: Callable[[Any], Any], metrics=None):
        self.window_s = window_s
        self.max_points = max_points
        self.request_max_points = min(request_max_points, max_points)
        self.read, self.finish, self.metrics = read, finish, metrics
        self._waiting: list[_Waiting] = []
        self._draining = False

    async def answer(self, text: str):
        """The answer to the job `text`, computed in a call shared with concurrent requests."""
        waiting = _Waiting(text, time.perf_counter(), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        outcome = await waiting.answer
        if isinstance(outcome, _Alone):
            return await run_in_threadpool(self._run_alone, outcome.job)
        return outcome

    async def _drain(self) -> None:
        """Serve the line until nobody waits: the first requests after the window, each next
        ones at once with whoever came meanwhile."""
        try:
            await asyncio.sleep(self.window_s)
            while self._waiting:
                taken, self._waiting = self._waiting[:MAX_TAKEN], self._waiting[MAX_TAKEN:]
                try:
                    outcomes = await run_in_threadpool(self._serve, taken)
                except Exception as error:  # a failure of the whole call is each request's
                    outcomes = [error] * len(taken)
                for waiting, outcome in zip(taken, outcomes):
                    if waiting.answer.done():  # its client went away
                        continue
                    if isinstance(outcome, BaseException):
                        waiting.answer.set_exception(outcome)
                    else:
                        waiting.answer.set_result(outcome)
        finally:
            self._draining = False

    def _serve(self, taken: list[_Waiting]) -> list:
        """(In a worker thread.) Each request's answer, error or `_Alone`: read, grouped,
        computed in shared calls, answered."""
        outcomes: list = [None] * len(taken)
        groups: dict[tuple, list[int]] = defaultdict(list)
        jobs: list[Job | None] = [None] * len(taken)
        for i, waiting in enumerate(taken):
            try:
                jobs[i] = self.read(waiting.text)
            except Exception as error:  # this request's alone
                outcomes[i] = error
                continue
            key = batch_key(jobs[i], self.request_max_points)
            if key is None:
                outcomes[i] = _Alone(jobs[i])
            else:
                groups[key].append(i)
        for members in groups.values():
            for call in self._calls(members, jobs):
                try:
                    results = run_together([jobs[i] for i in call],
                                           [taken[i].arrived for i in call])
                except Exception as error:  # the call's, so each of its requests'
                    results = [error] * len(call)
                self._observe([jobs[i] for i in call], results)
                for i, result in zip(call, results):
                    outcomes[i] = self._finished(result)
        return outcomes

    def _calls(self, members: list[int], jobs: list[Job]) -> list[list[int]]:
        """A group's requests cut into calls of at most max_points points, in their order."""
        calls, points = [[]], 0
        for i in members:
            if calls[-1] and points + jobs[i].grid.size > self.max_points:
                calls.append([])
                points = 0
            calls[-1].append(i)
            points += jobs[i].grid.size
        return calls

    def _finished(self, result):
        if isinstance(result, BaseException):
            return result
        try:
            return self.finish(result)
        except Exception as error:
            return error

    def _run_alone(self, job: Job):
        from ..api import run as run_alone
        result = run_alone(job)
        if self.metrics is not None:
            self.metrics.observe_points(result.points, result.timings["run_s"])
        return self.finish(result)

    def _observe(self, jobs: list[Job], results: list) -> None:
        if self.metrics is None:
            return
        points = sum(job.grid.size for job in jobs)
        self.metrics.observe_batch(len(jobs), points)
        run_s = next((r.timings["run_s"] for r in results if not isinstance(r, BaseException)),
                     None)
        if run_s is not None:  # the call's time, which every answer of it reports
            self.metrics.observe_points(points, run_s)


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
