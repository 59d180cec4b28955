"""`gradsvc serve --processes N` (gradsvc/service/compute.py): /v1/run read, computed and answered
in compute processes of their own, with the numbers and the errors of the service without them;
a compute process killed by its pid fails only what it held, and the service goes on."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

import gradsvc
from gradsvc.job.spec import SENT, job_from_text
from gradsvc.teaching.report import to_json
from servers import start_server, stop_server
from test_batcher import _random_texts
from test_service import _numbers

TENSOR = "inputs: {w: {tensor: [1.0, 2.0]}}\ngraph: {y: sum(w * w)}\noutputs: [y]\n"
WRONG = "inputs: {x: 1.0}\ngraph: {y: x +* 2}\noutputs: [y]\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("compute") / "serve.log"
    process, url = start_server("--processes", "1", log=log)
    try:
        yield url, log, process.pid
    finally:
        stop_server(process)


def _post(client, text: str):
    return client.post("/v1/run", content=text.encode(),
                       headers={"content-type": "application/yaml"})


def test_answers_from_a_compute_process_are_the_single_runs(server):
    """24 concurrent requests (sharing calls), a tensor job (run alone) and a wrong job (its
    place): as the service answers them without compute processes."""
    url, _, _ = server
    texts = _random_texts(24, seed=21)

    async def send_all():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(_post(client, text) for text in texts + [TENSOR]))
    answers = asyncio.run(send_all())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert max(a.json()["timings"].get("batched", {}).get("requests", 1) for a in answers) > 1
    for text, answer in zip(texts + [TENSOR], answers):
        assert _numbers(answer.json()) == _numbers(to_json(gradsvc.run(job_from_text(text,
                                                                                     SENT))))
    with httpx.Client(base_url=url, timeout=60) as client:
        wrong = _post(client, WRONG)
    assert wrong.status_code == 422
    error = wrong.json()["error"]
    assert (error["line"], error["col"] > 1) == (2, True) and error["hint"]


def _compute_processes(server_pid: int) -> list[int]:
    """The server's compute processes: its children started by multiprocessing's spawn."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(pid) for pid in children if "spawn_main" in _cmdline(int(pid))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
def test_a_killed_compute_process_fails_only_what_it_held(server):
    """SIGKILL to the compute process: at most the next request is a 503 (it met the dead
    pool), then a new process answers, and the server never logs a traceback."""
    url, log, server_pid = server
    computing = _compute_processes(server_pid)
    assert len(computing) == 1
    os.kill(computing[0], signal.SIGKILL)
    time.sleep(0.5)
    with httpx.Client(base_url=url, timeout=60) as client:
        statuses = [_post(client, text).status_code for text in _random_texts(3, seed=2)]
        assert statuses[0] in (200, 503) and statuses[1:] == [200, 200], statuses
        assert _post(client, _random_texts(1, seed=3)[0]).json()["verify"]["ok"]
        assert client.get("/healthz").json() == {"status": "ok"}
    assert _compute_processes(server_pid) not in ([], computing)
    assert "Traceback" not in log.read_text()
