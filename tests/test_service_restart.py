"""The queue is durable: a real `gradsvc serve --data` process killed with SIGKILL mid-job, or
stopped with SIGTERM, then started again on the same folder. Every accepted job finishes done
exactly once; the interrupted one resumes from its finished blocks (it computes fewer points than
its grid has) and its result is bit for bit that of an uninterrupted `gradsvc batch`."""
from __future__ import annotations

import signal
import sqlite3

import httpx
import numpy as np
import pytest

from conftest import cli
from servers import stop_server
from test_service_jobs import LONG, SEED, finished, midway, start_on, submit, wait_for


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The long job's result from `gradsvc batch`, run once from start to end."""
    from gradsvc import load_result
    folder = tmp_path_factory.mktemp("batch")
    (folder / "long.yaml").write_text(LONG)
    assert cli("batch", folder / "long.yaml", "--out", folder / "out").exit_code == 0
    return load_result(folder / "out" / "long")


def assert_resumed_identical(client: httpx.Client, data, job_id: str, reference) -> None:
    """The job finished done on its second attempt, computing only the points its first did
    not, with the numbers of an uninterrupted run."""
    from gradsvc import load_result
    status = wait_for(client, job_id, finished)
    assert status["status"] == "done" and status["attempts"] == 2
    computed = status["summary"]["timings"]["points_computed"]
    assert 0 < computed < status["progress"]["points_total"] == 3_000_000
    resumed = load_result(data / "jobs" / job_id / "long")
    assert set(resumed.data_vars) == set(reference.data_vars)
    for name in reference.data_vars:
        assert np.array_equal(resumed[name].values, reference[name].values), name


def test_kill_9_then_restart_loses_nothing(tmp_path, uninterrupted):
    data = tmp_path / "data"
    process, url = start_on(data)
    with httpx.Client(base_url=url, timeout=60) as client:
        first = submit(client, SEED)
        long = submit(client, LONG)
        last = submit(client, SEED.replace("a: 2.0", "a: 3.0"))
        wait_for(client, long, midway)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process, url = start_on(data)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            assert_resumed_identical(client, data, long, uninterrupted)
            done = {job: wait_for(client, job, finished) for job in (first, last)}
            assert [done[job]["status"] for job in (first, last)] == ["done", "done"]
            assert [done[job]["attempts"] for job in (first, last)] == [1, 1]
            assert client.get(f"/v1/jobs/{last}/result").json()["grads"]["e"]["a"] == 12.0
            listed = [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]
            assert listed == [last, long, first]  # each once, in the order they came
    finally:
        stop_server(process)


def test_sigterm_puts_the_running_job_back_and_a_restart_finishes_it(tmp_path, uninterrupted):
    """Also: a client that left an event stream holds nothing up (uvicorn's shutdown waits for
    open answers: a stream still running would wait for its job, and the jobs would be done)."""
    data = tmp_path / "data"
    process, url = start_on(data)
    with httpx.Client(base_url=url, timeout=60) as client:
        long = submit(client, LONG)
        queued = submit(client, SEED)
        wait_for(client, long, midway)
        with client.stream("GET", f"/v1/jobs/{queued}/events") as stream:
            assert next(stream.iter_lines()) == "event: progress"
    stop_server(process)  # SIGTERM: the running job stops at its next chunk
    with sqlite3.connect(data / "queue.sqlite3") as db:
        rows = dict(db.execute("SELECT id, status FROM jobs").fetchall())
        points_done = db.execute("SELECT points_done FROM jobs WHERE id = ?", (long,)).fetchone()[0]
    assert rows == {long: "queued", queued: "queued"}
    assert 0 < points_done < 3_000_000
    process, url = start_on(data)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            assert_resumed_identical(client, data, long, uninterrupted)
            assert wait_for(client, queued, finished)["status"] == "done"
    finally:
        stop_server(process)
