"""`gradsvc serve --processes N`: /v1/run's Python work (reading jobs, verification, answers)
in N processes of their own, so that it and the event loop do not take turns at one GIL.

The batcher hands a process the texts it has gathered; the process reads them, computes each
group of one kernel in shared calls (`batcher.run_together`) and answers each: only texts go in
and only answers (JSON text), error bodies and counts come out, so nothing but the service's own
plain data crosses between processes. Each process keeps its own kernels (the executable cache on
disk spares it most compiles). A process that dies fails the requests it held (503, try again)
and is replaced alone. Jobs that run alone and texts too long to read in the line are still the
server's own threads' work (the batcher).
"""
from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import signal
import time
import traceback
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
    """N compute processes, each an executor of its own (spawned: JAX in a forked process is not
    safe), so that one that dies is replaced alone: the others keep their work and kernels."""

    def __init__(self, processes: int, max_points: int, request_max_points: int):
        self.processes = processes
        self.limits = (max_points, request_max_points)
        self._executors = [_executor() for _ in range(processes)]
        self._idle = list(range(processes))  # slots with no call in flight
        self.free = asyncio.Semaphore(processes)  # held by the batcher for each call in flight
        self.pids: dict[int, int] = {}  # slot -> its process's pid, once it answered
        self.kernels: dict[int, tuple[dict, int]] = {}  # pid -> (kernels made, kernels kept)

    async def serve(self, texts: list[str], ages: list[float]) -> tuple[list, list]:
        """(each text's outcome, the calls' counts) from an idle process (the caller holds
        `free`); see `serve_texts`. A process that died holding them: each a 503."""
        slot = self._idle.pop(0)  # the longest idle: calls take turns, and warm every process
        try:
            for _ in range(2):  # a process found dead before this call held nothing: once more
                executor = self._executors[slot]
                try:
                    future = executor.submit(serve_texts, texts, ages, *self.limits)
                except BrokenProcessPool:
                    self._replace(slot, executor)
                    continue
                return await self._answers(slot, executor, future, len(texts))
            return [_died()] * len(texts), []
        finally:
            self._idle.append(slot)

    async def _answers(self, slot: int, executor, future, count: int) -> tuple[list, list]:
        try:
            outcomes, counts, (pid, made, kept) = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(slot, executor)
            return [_died()] * count, []
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the process's KeyboardInterrupt is not this one's
            return [RuntimeError(f"a compute process stopped: {error!r}")] * count, []
        self.pids[slot] = pid
        self.kernels[pid] = (made, kept)
        return outcomes, counts

    def _replace(self, slot: int, executor) -> None:
        if self._executors[slot] is executor:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executors[slot] = _executor()
            dead = self.pids.pop(slot, None)
            if dead in self.kernels:  # its kernels are gone; those it made stay counted
                self.kernels[dead] = (self.kernels[dead][0], 0)

    async def warm_up(self) -> None:
        """Every process started and JAX imported in it, before the service says it is ready."""
        await asyncio.gather(*(asyncio.wrap_future(executor.submit(_ready))
                               for executor in self._executors))

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)


def _executor() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_stop_signals)


def _ignore_stop_signals() -> None:
    """In a compute process: Ctrl-C reaches the whole process group, and a service manager may
    signal every process of the service; the server stops its compute processes itself, after
    the requests they hold are answered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _died() -> RequestError:
    return RequestError(503, "a compute process of this service stopped while it held this "
                        "request", hint="send it again")


def _ready() -> int:
    importlib.import_module("gradsvc.api")  # JAX, the engine and the reference, loaded once
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
    # a bug: the last resort logs it (with the compute process's traceback) and answers 500
    return RuntimeError(f"a compute process failed: {outcome[1]}\n{outcome[2]}")


def serve_texts(texts: list[str], ages: list[float], max_points: int,
                request_max_points: int) -> tuple[list, list, tuple]:
    """(In a compute process.) Each text's outcome — ("answer", JSON text), ("error", status,
    body, retry_after), ("alone",) or ("bug", what, its traceback) —, each call's (requests,
    points, run_s: None where nothing was computed), and this process's (pid, kernels made by source, kernels kept). `ages`: how
    long each request has waited, in seconds (clocks differ between processes).

    Groups are computed one after another: a new graph's compile holds up the other requests of
    the texts handed over with it (without compute processes, only its own group's)."""
    from ..engine import jax_backend
    from .batcher import batch_key, calls_within
    now = time.perf_counter()
    outcomes: list = [None] * len(texts)
    groups: dict[tuple, list[int]] = defaultdict(list)
    jobs: list = [None] * len(texts)
    for i, text in enumerate(texts):
        try:
            jobs[i] = _read(text)
            key = batch_key(jobs[i], request_max_points)
        except Exception as error:
            outcomes[i] = _failure(error)
            continue
        if key is None:
            outcomes[i] = ("alone",)
        else:
            groups[key].append(i)
    counts: list = []
    for members in groups.values():
        for call in calls_within(members, [job.grid.size for job in jobs], max_points):
            for i, outcome in zip(call, _call(jobs, call, [now - ages[i] for i in call], counts)):
                outcomes[i] = outcome
    kernels = (multiprocessing.current_process().pid, dict(jax_backend.KERNELS_MADE),
               jax_backend.kernels_kept())
    return outcomes, counts, kernels


def _read(text: str):
    from .run_routes import known_to_run, read_to_run
    return known_to_run(text) or read_to_run(text)


def _call(jobs: list, call: list[int], arrived: list[float], counts: list) -> list:
    """One shared call's outcomes; its (requests, points, run_s) appended to `counts`."""
    from .batcher import answer_call
    from .run_routes import run_json
    answers, count = answer_call([jobs[i] for i in call], arrived, run_json)
    counts.append(count)
    return [_failure(a) if isinstance(a, BaseException) else ("answer", a) for a in answers]


def _failure(error: BaseException) -> tuple:
    if isinstance(error, GradsvcError):
        return ("error", getattr(error, "status", 422), error_body(error),
                getattr(error, "retry_after", None))
    return ("bug", f"{type(error).__name__}: {error}",
            "".join(traceback.format_exception(error)))
