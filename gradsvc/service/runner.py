"""The runner: one background thread that runs queued jobs, oldest first, one at a time (a job's
chunks use every core already), each into its result store `<data>/jobs/<id>/<name>/` through
`storage.store.write_result`, which resumes a store an interrupted run left.

The executor is opened once, in this thread, for the server's lifetime: this process
(`executor: local`) or a Dask cluster (`dask`, by --workers or --scheduler), so that starting a
cluster never delays the server's start. A cluster that cannot be reached is tried again every
EXECUTOR_RETRY_S while the jobs wait, queued.

Progress (points done) is kept in memory for /events and written to the queue at most every
PROGRESS_WRITE_S. Stopping and cancelling take effect at the next chunk (with Dask, the next
task to finish: tasks running then run to their ends): the progress callback raises, the blocks
written so far stay in the store. A stopped job is queued again; a cancelled one's store is
removed. A job's error (a GradsvcError) fails it with the error's fields; anything else fails
it with a message that says it is a bug, and the runner goes on.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from ..errors import GradsvcError, internal_error, write_failure_words
from .body import error_fields
from .config import ServiceConfig
from .queue import JobQueue

PROGRESS_WRITE_S = 0.5  # the queue hears of progress at most this often
IDLE_WAIT_S = 5.0  # a runner with nothing to do looks again this often (a submit wakes it)
EXECUTOR_RETRY_S = 10.0  # a Dask cluster that could not be reached is tried again after this
QUEUE_RETRY_S = 5.0  # a queue that failed to give the next job is asked again after this
STOP_WAIT_S = 30.0  # how long stopping waits for the running job to reach its next chunk

log = logging.getLogger("gradsvc.service")


class _Stopped(Exception):
    """The server is stopping: the running job goes back to the queue."""


class _Cancelled(Exception):
    """The running job's owner cancelled it."""


class Runner:
    def __init__(self, queue: JobQueue, jobs_dir: Path, config: ServiceConfig, metrics=None):
        """`metrics`: the app's ServiceMetrics, told of each job's points computed."""
        self.queue, self.jobs_dir, self.config = queue, Path(jobs_dir), config
        self.metrics = metrics
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # the job a cancel is for: set on the event loop's thread, compared by the running job's
        # progress callback with its own id (a flag checked against the running job, then set,
        # could land on the next job if the runner moved on in between); ids are never reused
        self._cancel_for: str | None = None
        # the running job's points done, in memory from its first progress call (until then its
        # queue row's, which a resumed job's store already holds, is the count to show)
        self._points: dict[str, int] = {}
        self._thread = threading.Thread(target=self._main, name="gradsvc-runner", daemon=True)

    def start(self) -> None:
        """Jobs a killed server left running are queued again, then the thread starts."""
        requeued = self.queue.recover()
        if requeued:
            log.warning("%d job(s) left running by an earlier server are queued again; their "
                        "stores resume from their finished blocks", requeued)
        self._thread.start()

    def stop(self) -> None:
        """Stop at the running job's next chunk (it is queued again, its blocks kept)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Cancel `job_id` at its next chunk, if it is the one running (the queue holds the
        request too, which the runner reads when it starts a job: a cancel that comes before
        that read is found there, one after it is found here)."""
        self._cancel_for = job_id

    def points_done(self, job_id: str) -> int | None:
        """The running job's points done so far; None for any other."""
        return self._points.get(job_id)

    def job_folder(self, job_id: str) -> Path:
        """Where a job's result store lives: its own folder (the store is the job's name in it)."""
        return self.jobs_dir / job_id

    def remove_store(self, job_id: str) -> None:
        """A cancelled job's unfinished store: never to be resumed, its disk given back."""
        shutil.rmtree(self.job_folder(job_id), ignore_errors=True)

    # --- the thread ---

    def _main(self) -> None:
        with ExitStack() as stack:
            execute = self._open_executor(stack)
            while execute is not None and not self._stopping.is_set():
                self._wake.clear()  # before looking: a job queued after the look wakes the wait
                try:
                    row = self.queue.claim_next()
                except Exception:  # the queue itself failed (disk, locked): say so, go on
                    log.exception("the runner could not take the next job from the queue")
                    self._stopping.wait(QUEUE_RETRY_S)
                    continue
                if row is None:
                    self._wake.wait(IDLE_WAIT_S)
                    continue
                try:
                    self._run(row, execute)
                except Exception:  # the queue itself failed (closed, disk): say so, go on
                    log.exception("the runner could not record job %s", row["id"])

    def _open_executor(self, stack: ExitStack):
        """`execute` for write_result, opened in `stack`; None if stopped before one opened."""
        from ..api import execute
        if self.config.executor != "dask":
            return execute
        from ..executor.dask_cluster import dask_executor
        while not self._stopping.is_set():
            try:
                return stack.enter_context(dask_executor(self.config.workers,
                                                         self.config.scheduler))
            except GradsvcError as error:
                log.error("queued jobs wait for the Dask cluster: %s", error)
                self._stopping.wait(EXECUTOR_RETRY_S)
        return None

    def _run(self, row: dict, execute) -> None:
        job_id = row["id"]
        try:  # a cancel asked before the job ran here, or before a restart, is in the queue
            status, error = (("cancelled", None) if self.queue.cancel_requested(job_id)
                             else self._write(job_id, execute))
        finally:
            done = self._points.pop(job_id, row["points_done"])
        if status == "queued":
            self.queue.set_progress(job_id, done)
            self.queue.put_back(job_id)
            return
        self.queue.finish(job_id, status, row["points_total"] if status == "done" else done, error)
        if status == "cancelled" and self.config.executor == "local":
            # a Dask cluster's tasks of it run on to their ends, writing: their store stays
            self.remove_store(job_id)

    def _write(self, job_id: str, execute) -> tuple[str, dict | None]:
        """Run one job into its store: its new status ("done", "failed", "cancelled", or
        "queued" again when the server is stopping) and its error's fields."""
        from ..job.spec import SENT, job_from_text
        from ..storage.store import job_folder, stored_result, write_result
        try:
            if self._stopping.is_set():
                return "queued", None
            job = job_from_text(self.queue.text_of(job_id), SENT)
            out = str(self.job_folder(job_id))
            # killed after its store was finished but before the queue heard: not run again
            if not stored_result(job_folder(out, job), job).complete:
                written = write_result(out, job, execute, self._progress(job_id))
                self._observe(written.summary["timings"])
        except _Stopped:
            return "queued", None
        except _Cancelled:
            return "cancelled", None
        except GradsvcError as error:
            return "failed", error_fields(error)
        except OSError as error:  # the server's disk: full, or a folder not writable
            return "failed", {"message": "the server could not write the result: "
                              f"{write_failure_words(error, name_file=False)}", "line": None,
                              "col": None, "hint": "ask the server's keeper to make room on "
                              "its disk, then submit the job again"}
        except Exception as error:  # a bug: the job fails with a message, the runner goes on
            log.exception("job %s failed", job_id)
            message, _, hint = internal_error(error).partition("\n  hint: ")
            return "failed", {"message": message, "line": None, "col": None, "hint": hint}
        return "done", None

    def _observe(self, timings: dict) -> None:
        """The points this run computed (a resumed one: only those its store lacked)."""
        if self.metrics is not None:
            self.metrics.observe_points(timings["points_computed"], timings["run_s"])

    def _progress(self, job_id: str):
        """The callback write_result calls with each chunk's points: counts them, tells the
        queue now and then, and raises where the job is to stop."""
        written = time.monotonic()

        def progress(points: int) -> None:
            nonlocal written
            self._points[job_id] = self._points.get(job_id, 0) + points
            if self._stopping.is_set():
                raise _Stopped()
            if self._cancel_for == job_id:
                raise _Cancelled()
            if time.monotonic() - written >= PROGRESS_WRITE_S:
                self.queue.set_progress(job_id, self._points[job_id])
                written = time.monotonic()
        return progress
