"""The service's runner, directly (its races are not reachable deterministically through HTTP):
a real JobQueue in a temporary folder and the Runner's own progress callbacks."""
from __future__ import annotations

import logging
import time

import pytest

from gradsvc.service.config import ServiceConfig
from gradsvc.service.queue import JobQueue
from gradsvc.service.runner import Runner, _Cancelled


@pytest.fixture
def runner(tmp_path):
    queue = JobQueue(tmp_path)
    runner = Runner(queue, tmp_path / "jobs", ServiceConfig())
    yield runner
    runner.stop()
    queue.close()  # again, where the test closed it already: harmless


def test_a_cancel_reaches_only_the_job_it_was_for(runner):
    """A cancel of job a that lands after the runner moved on to job b (the event loop's check
    and the runner's switch race) stops a at its next chunk, never b."""
    runner.cancel("a")
    runner._progress("b")(10)  # b runs on
    with pytest.raises(_Cancelled):
        runner._progress("a")(10)


def test_progress_is_the_stored_count_until_the_job_reports_its_own(runner):
    """Until a job's first progress call (a resumed job's: the points its store already holds)
    the runner has no count of it, so its status shows the queue's stored one, which is never
    more than that first call's: progress does not go back to 0 while it compiles."""
    assert runner.points_done("j") is None
    progress = runner._progress("j")
    progress(700)
    progress(100)
    assert runner.points_done("j") == 800


def test_the_runner_lives_on_when_the_queue_fails(runner, caplog):
    """The queue failing to give the next job (here: closed under it) is logged, and the
    runner's thread waits and goes on, rather than dying silently."""
    with caplog.at_level(logging.ERROR, logger="gradsvc.service"):
        runner.start()
        runner.queue.close()
        runner.wake()
        deadline = time.monotonic() + 10
        while "could not take the next job" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
    runner._thread.join(0.5)
    assert runner._thread.is_alive()
    runner.stop()
    assert not runner._thread.is_alive()
