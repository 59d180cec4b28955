"""`gradsvc serve --processes N`: /v1/run's Python work (reading jobs, verification, answers)
in N processes of their own, so that it and the event loop do not take turns at one GIL.

The batcher hands a process the texts it has gathered; the process reads them, computes each
group of one kernel in shared calls (`batcher.run_together`) and answers each: only texts go in
and only answers (JSON text), error bodies and counts come out, so nothing but the service's own
plain data crosses between processes. Each process keeps its own kernels (the executable cache on
disk spares it most compiles). A process that dies fails the requests it held (503, try again)
and the pool is made anew.
"""
from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import GradsvcError
from .body import RequestError, error_body


class Relayed(GradsvcError):
    """A request's error, as a compute process answered it: its status and error body."""

    def __init__(self, status: int, body: dict, retry_after: float | None = None):
        error = body["error"]
        super().__init__(error["message"], hint=error.get("hint"))
        self.status, self.body, self.retry_after = status, body, retry_after


class ComputePool:
    """N processes serving `serve_texts` (spawned: JAX in a forked process is not safe)."""

    def __init__(self, processes: int, max_points: int, request_max_points: int):
        self.processes = processes
        self.limits = (max_points, request_max_points)
        self._pool = self._new_pool()
        self.free = asyncio.Semaphore(processes)  # calls in flight: one a process

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes,
                                   mp_context=multiprocessing.get_context("spawn"))

    async def serve(self, texts: list[str], ages: list[float]) -> tuple[list, list]:
        """(each text's outcome, the calls' counts) from one process; see `serve_texts`."""
        try:
            return await asyncio.wrap_future(
                self._pool.submit(serve_texts, texts, ages, *self.limits))
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            died = RequestError(503, "a compute process of this service stopped while it held "
                                "this request", hint="send it again")
            return [died] * len(texts), []

    async def warm_up(self) -> None:
        """Every process started and JAX imported in it, before the service says it is ready."""
        await asyncio.gather(*(asyncio.wrap_future(self._pool.submit(_ready))
                               for _ in range(self.processes)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ready() -> int:
    importlib.import_module("gradsvc.api")  # JAX, the engine and the reference, loaded once
    time.sleep(0.2)  # held a moment, so that the next warm-up starts a process of its own
    return multiprocessing.current_process().pid


def answer_of(outcome):
    """A compute process's outcome as the batcher settles it: an answer, an error, or None for a
    job that runs on its own."""
    kind = outcome[0]
    if kind == "answer":
        return outcome[1]
    if kind == "error":
        return Relayed(*outcome[1:])
    if kind == "alone":
        return None
    return RuntimeError(f"a compute process failed: {outcome[1]}")  # a bug: the last resort's


def serve_texts(texts: list[str], ages: list[float], max_points: int,
                request_max_points: int) -> tuple[list, list]:
    """(In a compute process.) Each text's outcome — ("answer", JSON text), ("error", status,
    body, retry_after), ("alone",) or ("bug", what) — and each call's (requests, points, run_s).
    `ages`: how long each request has waited, in seconds (clocks differ between processes)."""
    from .batcher import batch_key, calls_within, run_together
    from .run_routes import known_to_run, read_to_run, run_json
    now = time.perf_counter()
    outcomes: list = [None] * len(texts)
    groups: dict[tuple, list[int]] = defaultdict(list)
    jobs: list = [None] * len(texts)
    for i, text in enumerate(texts):
        try:
            jobs[i] = known_to_run(text) or read_to_run(text)
        except Exception as error:
            outcomes[i] = _failure(error)
            continue
        key = batch_key(jobs[i], request_max_points)
        if key is None:
            outcomes[i] = ("alone",)
        else:
            groups[key].append(i)
    counts = []
    for members in groups.values():
        for call in calls_within(members, [job.grid.size for job in jobs], max_points):
            try:
                results = run_together([jobs[i] for i in call], [now - ages[i] for i in call])
            except Exception as error:
                results = [error] * len(call)
            done = [r for r in results if not isinstance(r, BaseException)]
            if done:
                counts.append((len(call), sum(jobs[i].grid.size for i in call),
                               done[0].timings["run_s"]))
            for i, result in zip(call, results):
                outcomes[i] = _answered(result, run_json)
    return outcomes, counts


def _answered(result, finish) -> tuple:
    if isinstance(result, BaseException):
        return _failure(result)
    try:
        return ("answer", finish(result))
    except Exception as error:
        return _failure(error)


def _failure(error: BaseException) -> tuple:
    if isinstance(error, GradsvcError):
        return ("error", getattr(error, "status", 422), error_body(error),
                getattr(error, "retry_after", None))
    return ("bug", f"{type(error).__name__}: {error}")
