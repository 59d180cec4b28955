"""Dynamic batching of /v1/run: concurrent requests whose jobs share a kernel run as one call.

A request's job text joins the reading line; the first text to an idle line waits `window_s`
for others, and the texts waiting are then read (parsed) together in one worker thread. Each job
read joins the group of its `batch_key` (the graph's structure and everything else that shapes
its kernel; input values aside). A group computes its calls one after another, each in one
worker thread that also makes each request's answer (its JSON): the requests that came while a
call ran go together in the next one, at most `max_points` points, so the busier the service,
the bigger its calls (as Triton's dynamic batcher does). Groups run side by side: a new graph's
compile holds up only its own group. A text longer than INLINE_MAX_CHARS is read on its own
(its reading would hold up the line), and so is the JSON check of such a body (run_routes).

A call's grid is every request's points one after another (a zip grid of their coordinates),
padded to a power of two, so a graph compiles for a few sizes only. Each request then gets its
own slice of the results and its own verification, with its own job's settings; a request whose
verification finds a mismatch is run again on its own (`api.run`, which recompiles a kernel that
disagrees with the reference). A batched request gets the kernel kind (optimised or not, fast
sin/cos or XLA's) that it would get on its own: its numbers are those of its single run.

Jobs with tensor inputs, random inputs made in the kernel, a chunk size of their own, or more
than `request_max_points` points run on their own, at most ALONE_AT_ONCE at a time, so that they
never take every worker thread from the rest of the service.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import anyio
import numpy as np
from starlette.concurrency import run_in_threadpool

from ..job.grid import Axis, Grid
from ..job.spec import Job

SMALLEST_CALL = 8  # points: a call's grid is padded to a power of two, at least this
MAX_READ_AT_ONCE = 1024  # texts read in one go
INLINE_MAX_CHARS = 64_000  # a longer text is read (and its JSON checked) on its own
ALONE_AT_ONCE = 4  # jobs that cannot share a call, run at once
KNOWN_MAX_CHARS = 8_000  # a text tried as a known shape on the event loop, at most (~50 us)


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
    job: Job | None = None  # once read


@dataclass
class _Alone:
    """A request whose job runs on its own (see the module); None: read it again (a compute
    process read it, and jobs do not cross between processes)."""
    job: Job | None


class Batcher:
    """Gathers `answer(text)` calls of one event loop into shared calls (see the module).

    `read(text)` makes a request's `Job` (raising its errors); `finish(result)` makes its answer
    from its `api.Result`. Both run in worker threads. `known(text)`, if given, is a read that
    costs next to nothing where it can (a job of a shape read before) and None elsewhere: it runs
    on the event loop, and spares such a request the reading line. With a `pool`
    (compute.ComputePool), the texts read together are handed to one of its processes, which
    reads, computes and answers them."""

    def __init__(self, window_s: float, max_points: int, request_max_points: int,
                 read: Callable[[str], Job], finish: Callable[[Any], Any], metrics=None,
                 known: Callable[[str], Job | None] | None = None, pool=None):
        self.window_s = window_s
        self.max_points = max_points
        self.request_max_points = min(request_max_points, max_points)
        self.read, self.finish, self.metrics, self.known = read, finish, metrics, known
        self._unread: list[_Waiting] = []
        self._reading = False
        self._groups: dict[tuple, list[_Waiting]] = {}
        self._running: set[tuple] = set()  # groups whose calls run
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self._alone = anyio.CapacityLimiter(ALONE_AT_ONCE)
        self.pool = pool

    async def answer(self, text: str):
        """The answer to the job `text`, computed in a call shared with concurrent requests."""
        waiting = _Waiting(text, time.perf_counter(), asyncio.get_running_loop().create_future())
        if len(text) > INLINE_MAX_CHARS:
            waiting.job = await run_in_threadpool(self.read, text)
            self._sort(waiting)
        elif (self.known is not None and self.pool is None and len(text) <= KNOWN_MAX_CHARS
              and (job := self.known(text)) is not None):
            waiting.job = job
            self._sort(waiting)
        else:
            self._unread.append(waiting)
            if not self._reading:
                self._reading = True
                self._start(self._read_line())
        outcome = await waiting.answer
        if isinstance(outcome, _Alone):
            return await anyio.to_thread.run_sync(self._run_alone, outcome.job, text,
                                                  limiter=self._alone)
        return outcome

    def _start(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_line(self) -> None:
        """Read the waiting texts, the first after the window, the next at once, until none
        wait; each job read joins its group."""
        taken: list[_Waiting] = []
        try:
            await asyncio.sleep(self.window_s)
            while self._unread:
                if self.pool is not None:  # the texts gathered while every process was busy
                    await self.pool.free.acquire()
                    taken = self._unread[:MAX_READ_AT_ONCE]
                    del self._unread[:len(taken)]
                    self._start(self._serve_in_process(taken))
                    taken = []
                    continue
                taken = self._unread[:MAX_READ_AT_ONCE]
                del self._unread[:len(taken)]
                for waiting, job in zip(taken, await run_in_threadpool(self._read_all, taken)):
                    if isinstance(job, Exception):
                        _settle(waiting, job)
                    else:
                        waiting.job = job
                        self._sort(waiting)
                taken = []
        finally:
            self._reading = False
            _fail_unsettled(taken)
            if self._unread:  # came while this one failed: a new line serves them
                self._reading = True
                self._start(self._read_line())

    async def _serve_in_process(self, taken: list[_Waiting]) -> None:
        """The texts `taken` read, computed and answered by a compute process."""
        from .compute import answer_of
        try:
            now = time.perf_counter()
            outcomes, counts = await self.pool.serve([w.text for w in taken],
                                                     [now - w.arrived for w in taken])
            for waiting, outcome in zip(taken, outcomes):
                answer = answer_of(outcome) if isinstance(outcome, tuple) else outcome
                _settle(waiting, _Alone(None) if answer is None else answer)
            for count in counts:
                self._observe(count)
        finally:
            self.pool.free.release()
            _fail_unsettled(taken)

    def _read_all(self, taken: list[_Waiting]) -> list:
        """(In a worker thread.) Each text's job, or the error reading it raised."""
        jobs: list = []
        for waiting in taken:
            try:
                jobs.append(self.read(waiting.text))
            except Exception as error:  # this request's alone
                jobs.append(error)
        return jobs

    def _sort(self, waiting: _Waiting) -> None:
        """A job read joins its group (whose calls start if none runs), or runs alone."""
        key = batch_key(waiting.job, self.request_max_points)
        if key is None:
            _settle(waiting, _Alone(waiting.job))
            return
        group = self._groups.setdefault(key, [])
        group.append(waiting)
        if len(group) == 1 and key not in self._running:
            self._running.add(key)
            self._start(self._run_group(key))

    async def _run_group(self, key: tuple) -> None:
        """The group's calls, one after another, until nobody waits in it."""
        taken: list[_Waiting] = []
        try:
            while self._groups.get(key):
                taken = self._take(self._groups[key])
                for waiting, outcome in zip(taken, await run_in_threadpool(self._call, taken)):
                    _settle(waiting, outcome)
                taken = []
        finally:
            self._running.discard(key)
            _fail_unsettled(taken)
            if self._groups.get(key):  # came while this one failed: new calls serve them
                self._running.add(key)
                self._start(self._run_group(key))
            else:
                self._groups.pop(key, None)

    def _take(self, group: list[_Waiting]) -> list[_Waiting]:
        """The oldest requests of a group, within max_points (the first whatever its size)."""
        count = _within([waiting.job.grid.size for waiting in group], self.max_points)
        taken = group[:count]
        del group[:count]
        return taken

    def _call(self, taken: list[_Waiting]) -> list:
        """(In a worker thread.) One call's answers (or errors)."""
        answers, count = answer_call([waiting.job for waiting in taken],
                                     [waiting.arrived for waiting in taken], self.finish)
        self._observe(count)
        return answers

    def _run_alone(self, job: Job | None, text: str):
        from ..api import run as run_alone
        result = run_alone(job if job is not None else self.read(text))
        if self.metrics is not None:
            self.metrics.observe_points(result.points, result.timings["run_s"])
        return self.finish(result)

    def _observe(self, count: tuple) -> None:
        """A call's (requests, points, run_s) in the metrics (run_s None: nothing computed)."""
        if self.metrics is None:
            return
        requests, points, run_s = count
        self.metrics.observe_batch(requests, points)
        if run_s is not None:
            self.metrics.observe_points(points, run_s)


def answer_call(jobs: list[Job], arrived: list[float], finish) -> tuple[list, tuple]:
    """One shared call of `jobs` (which share a `batch_key`): each one's answer,
    `finish(its api.Result)`, or the error it met; and the call's (requests, points, run_s),
    run_s None where nothing was computed."""
    try:
        results = run_together(jobs, arrived)
    except Exception as error:  # the call's, so each of its requests'
        results = [error] * len(jobs)
    computed = next((r for r in results if not isinstance(r, BaseException)), None)
    count = (len(jobs), sum(job.grid.size for job in jobs),
             None if computed is None else computed.timings["run_s"])  # every answer's the same
    return [_finished(result, finish) for result in results], count


def _finished(result, finish):
    if isinstance(result, BaseException):
        return result
    try:
        return finish(result)
    except Exception as error:
        return error


def _within(sizes: list[int], max_points: int) -> int:
    """How many of the first requests (of these point counts) one call takes: as many as fit
    in max_points, and the first whatever its size."""
    count, points = 0, 0
    for size in sizes:
        if count and points + size > max_points:
            break
        count, points = count + 1, points + size
    return count


def calls_within(members: list[int], sizes: list[int], max_points: int) -> list[list[int]]:
    """`members` (indices into `sizes`) cut into calls of at most max_points points, in order."""
    calls, rest = [], list(members)
    while rest:
        count = _within([sizes[i] for i in rest], max_points)
        calls.append(rest[:count])
        rest = rest[count:]
    return calls


def _settle(waiting: _Waiting, outcome) -> None:
    """Hand a request its outcome, unless its client went away (its future is cancelled)."""
    if waiting.answer.done():
        return
    if isinstance(outcome, Exception):
        waiting.answer.set_exception(outcome)
    elif isinstance(outcome, BaseException):  # never hand a waiter a KeyboardInterrupt
        waiting.answer.set_exception(RuntimeError(f"the batcher was stopped: {outcome!r}"))
    else:
        waiting.answer.set_result(outcome)


def _fail_unsettled(taken: list[_Waiting]) -> None:
    """Requests taken by a line or a group that stopped before answering them."""
    for waiting in taken:
        _settle(waiting, RuntimeError("the batcher stopped before answering this request"))


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
