"""`gradsvc serve --processes N` (gradsvc/service/compute.py): /v1/run read, computed and answered
in compute processes of their own, with the numbers and the errors of the service without them; a
compute process killed by its pid is replaced alone, and Ctrl-C's SIGINT does not stop one."""
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
    process, url = start_server("--processes", "2", log=log)
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
def test_a_killed_compute_process_is_replaced_alone(server):
    """SIGKILL to an idle compute process: the next requests are answered (a new process takes
    its place, the other keeps its own), and the server never logs a traceback."""
    url, log, server_pid = server
    computing = _compute_processes(server_pid)
    assert len(computing) == 2
    os.kill(computing[0], signal.SIGKILL)
    time.sleep(1.0)  # the executor sees its process gone
    with httpx.Client(base_url=url, timeout=60) as client:
        statuses = [_post(client, text).status_code for text in _random_texts(4, seed=2)]
        assert statuses == [200] * 4, statuses
        assert client.get("/healthz").json() == {"status": "ok"}
    now = _compute_processes(server_pid)
    assert computing[1] in now and computing[0] not in now and len(now) == 2
    assert "Traceback" not in log.read_text()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
def test_ctrl_c_reaches_no_compute_process(server):
    """SIGINT (what Ctrl-C sends the whole process group) to the compute processes while they
    work: they go on, and every request is answered; their kernels show in /metrics."""
    url, _, server_pid = server
    texts = _random_texts(16, seed=9)

    async def send_all():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            sent = [asyncio.ensure_future(_post(client, text)) for text in texts]
            await asyncio.sleep(0.01)
            for pid in _compute_processes(server_pid):
                os.kill(pid, signal.SIGINT)
            return await asyncio.gather(*sent)
    before = _compute_processes(server_pid)
    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert _compute_processes(server_pid) == before
    with httpx.Client(base_url=url, timeout=60) as client:
        scraped = client.get("/metrics").text
    kept = float(scraped.split("\ngradsvc_kernels_kept ", 1)[1].split()[0])
    assert kept >= 2  # the seed graph's kernel in both compute processes (the server has none)
