"""/v1/jobs on a real `gradsvc serve --data` process (a free loopback port, stopped by its pid),
over real HTTP: submit, status, list, events, cancel, result, files (and attempts to read outside
a job's files), and an owner's queue limit."""
from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, cli_json
from servers import SERVE, free_port, start_server, stop_server
from test_service import _numbers

SEED = (ROOT / "jobs" / "seed_chain.yaml").read_text()
# a product grid past the plan's HOT_POINTS (so every run of it gets the same kernel, and a
# killed run's store is resumed) in 300 chunks: seconds of work, stopped at any chunk
LONG = """name: long
inputs:
  x: {linspace: [0, 1, 3000]}
  y: {linspace: [0, 1, 1000]}
graph:
  z: x * y + x
outputs: [z]
settings:
  chunk_size: 10000
"""
LIMITED_SERVE = [sys.executable, "-c", "import sys, uvicorn; from pathlib import Path; "
                 "from gradsvc.service.app import create_app; "
                 "from gradsvc.service.config import ServiceConfig; "
                 "uvicorn.run(create_app(ServiceConfig(data=Path(sys.argv[4]), max_queued_jobs=1, "
                 "max_job_points=5_000_000)), host='127.0.0.1', port=int(sys.argv[2]), "
                 "log_level='warning')"]


def start_on(data: Path, command=SERVE) -> tuple[subprocess.Popen, str]:
    """A server on `data`; its stderr goes to data/../serve.log (a restart's after the first's)."""
    return start_server("--data", str(data), command=command, log=data.parent / "serve.log")


def submit(client: httpx.Client, text: str) -> str:
    response = client.post("/v1/jobs", content=text.encode(),
                           headers={"content-type": "application/yaml"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and re.fullmatch(r"[0-9a-f]{32}", body["id"])
    return body["id"]


def wait_for(client: httpx.Client, job_id: str, until, timeout: float = 60) -> dict:
    """The job's status object once `until(status)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if until(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def finished(status: dict) -> bool:
    return status["status"] in ("done", "failed", "cancelled")


def midway(status: dict) -> bool:
    """Running, with some of its points done and not all."""
    progress = status["progress"]
    return status["status"] == "running" and 0 < progress["points_done"] < progress["points_total"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve") / "data"


@pytest.fixture(scope="module")
def server(data):
    process, url = start_on(data)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client
    stop_server(process)


@pytest.fixture(scope="module")
def seed_job(server) -> str:
    job_id = submit(server, SEED)
    assert wait_for(server, job_id, finished)["status"] == "done"
    return job_id


def test_a_queued_seed_job_gives_what_gradsvc_run_prints(server, seed_job):
    status = server.get(f"/v1/jobs/{seed_job}").json()
    assert status["progress"] == {"points_done": 1, "points_total": 1}
    assert status["summary"]["status"] == "ok" and status["error"] is None
    assert status["attempts"] == 1 and status["created"] <= status["started"] <= status["finished"]
    _, expected = cli_json("jobs/seed_chain.yaml")
    result = server.get(f"/v1/jobs/{seed_job}/result")
    assert result.status_code == 200
    assert _numbers(result.json()) == _numbers(expected)
    assert result.json()["values"]["e"] == 24.0 and result.json()["grads"]["e"]["a"] == 12.0


def test_the_list_is_the_newest_first_and_filters(server, seed_job):
    other = submit(server, SEED.replace("a: 2.0", "a: 5.0"))
    wait_for(server, other, finished)
    jobs = server.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in jobs[:2]] == [other, seed_job]
    assert jobs[0]["name"] == "seed-chain" and jobs[0]["points_total"] == 1
    assert [j["id"] for j in server.get("/v1/jobs", params={"limit": 1}).json()["jobs"]] == [other]
    assert server.get("/v1/jobs", params={"status": "failed"}).json() == {"jobs": []}
    wrong = server.get("/v1/jobs", params={"status": "finished"})
    assert wrong.status_code == 422 and "done" in wrong.json()["error"]["hint"]
    assert server.get(f"/v1/jobs/{other}/result").json()["grads"]["e"]["b"] == 20.0  # a * d


def test_an_unknown_id_is_a_404_on_every_route(server):
    for method, route in [("GET", ""), ("DELETE", ""), ("GET", "/events"), ("GET", "/result"),
                          ("GET", "/files"), ("GET", "/files/summary.json")]:
        response = server.request(method, f"/v1/jobs/{'0' * 32}{route}")
        assert response.status_code == 404, route
        assert response.json()["error"]["hint"]


def test_events_stream_progress_then_done(server):
    job_id = submit(server, SEED)
    events = []
    with server.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"progress"}
    assert events[-1][1]["summary"]["status"] == "ok"
    assert events[-2][1]["status"] == "done"  # the change to done is a progress event too


def test_cancel_a_queued_and_a_running_job(server, data):
    running = submit(server, LONG)
    queued = submit(server, SEED)  # behind the long one: one job runs at a time
    wait_for(server, running, midway)
    cancelled = server.delete(f"/v1/jobs/{queued}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stopped = server.delete(f"/v1/jobs/{running}").json()
    if stopped["status"] != "cancelled":  # stopping waits for the next chunk
        stopped = wait_for(server, running, finished)
    assert stopped["status"] == "cancelled"
    assert 0 < stopped["progress"]["points_done"] < stopped["progress"]["points_total"]
    assert not (data / "jobs" / running).exists()  # its unfinished store is given back
    again = server.delete(f"/v1/jobs/{running}")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]
    no_result = server.get(f"/v1/jobs/{queued}/result")
    assert no_result.status_code == 409 and no_result.json()["error"]["hint"]


def test_files_list_and_download(server, seed_job):
    listing = server.get(f"/v1/jobs/{seed_job}/files").json()
    sizes = {f["path"]: f["size"] for f in listing["files"]}
    assert listing["complete"] and {"summary.json", "results.csv", "zarr.json"} <= set(sizes)
    summary = server.get(f"/v1/jobs/{seed_job}/files/summary.json")
    assert summary.status_code == 200 and len(summary.content) == sizes["summary.json"]
    assert summary.json()["status"] == "ok" and summary.json()["points"] == 1
    table = server.get(f"/v1/jobs/{seed_job}/files/results.csv").text.splitlines()
    row = dict(zip(table[0].split(","), table[1].split(",")))
    assert float(row["e"]) == 24.0
    assert server.get(f"/v1/jobs/{seed_job}/files/de.da/zarr.json").json()["zarr_format"] == 3


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (httpx would resolve `..` before sending it)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_no_file_outside_the_jobs_store_is_served(server, seed_job, data):
    """Climbing out, plainly, percent-encoded or through an encoded slash; an absolute path; a
    link inside the store to a file outside it; a link to a folder outside it."""
    store = data / "jobs" / seed_job / "seed-chain"
    (store / "escape").symlink_to(data / "queue.sqlite3")
    (store / "outside").symlink_to(data, target_is_directory=True)
    base = f"/v1/jobs/{seed_job}/files/"
    url = str(server.base_url)
    for attempt in ["../../queue.sqlite3", "%2e%2e/%2e%2e/queue.sqlite3",
                    "..%2F..%2Fqueue.sqlite3", "%2E%2E%2F%2E%2E%2Fqueue.sqlite3",
                    "%2F" + str(data / "queue.sqlite3").lstrip("/").replace("/", "%2F"),
                    "//etc/passwd", "escape", "outside/queue.sqlite3", "./summary.json/..",
                    "de.da/../../../queue.sqlite3"]:
        status, body = raw_get(url, base + attempt)
        assert status == 404, attempt
        assert b"SQLite format" not in body and json.loads(body)["error"]["hint"], attempt
    assert raw_get(url, base + "summary.json")[0] == 200  # the same way, a file of the store
    listed = [f["path"] for f in server.get(f"/v1/jobs/{seed_job}/files").json()["files"]]
    assert "escape" not in listed and not any(p.startswith("outside") for p in listed)


def test_a_result_too_big_for_json_points_to_its_files(server):
    big = LONG.replace("3000]", "400]").replace("1000]", "300]")  # 120,000 points
    job_id = submit(server, big)
    assert wait_for(server, job_id, finished)["status"] == "done"
    response = server.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 409
    assert f"/v1/jobs/{job_id}/files" in response.json()["error"]["hint"]


def test_an_owners_queue_and_job_size_are_limited(tmp_path):
    process, url = start_on(tmp_path / "data", LIMITED_SERVE)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            first = submit(client, LONG)
            refused = client.post("/v1/jobs", content=SEED.encode(),
                                  headers={"content-type": "application/yaml"})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert "DELETE" in refused.json()["error"]["hint"]
            client.delete(f"/v1/jobs/{first}")
            wait_for(client, first, finished)
            too_big = client.post("/v1/jobs", content=LONG.replace("3000]", "6000]").encode(),
                                  headers={"content-type": "application/yaml"})
            assert too_big.status_code == 422 and "6,000,000 points" in too_big.json()["error"][
                "message"] and too_big.json()["error"]["hint"]
            assert wait_for(client, submit(client, SEED), finished)["status"] == "done"
    finally:
        stop_server(process)


def test_a_job_that_fails_says_why(server):
    job_id = submit(server, "inputs: {a: 2.0}\ngraph: {b: a * a}\noutputs: [b]\n"
                    "settings: {device: gpu}\n")  # this machine's JAX has no GPU
    status = wait_for(server, job_id, finished)
    assert status["status"] == "failed" and status["summary"] is None
    assert "gpu" in status["error"]["message"].lower() and status["error"]["hint"]
    response = server.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 409 and "failed" in response.json()["error"]["message"]


def test_a_stats_jobs_result_is_its_statistics(server):
    """Whatever its points (more than RESULT_JSON_MAX_POINTS here): statistics are small."""
    job_id = submit(server, "name: squares\ninputs: {x: {linspace: [0, 1, 200001]}}\n"
                    "graph: {b: x * x}\noutputs: [b]\nsettings: {keep: stats}\n")
    assert wait_for(server, job_id, finished)["status"] == "done"
    result = server.get(f"/v1/jobs/{job_id}/result").json()
    assert "values" not in result and "grads" not in result and result["verify"]["ok"]
    b = result["stats"]["values"]["b"]
    assert (b["count"], b["min"], b["max"], b["argmax"]) == (200001, 0.0, 1.0, 200000)


def test_a_second_server_on_the_same_data_is_refused(server, data):
    second = subprocess.run([*SERVE, "--port", str(free_port()), "--data", str(data)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 5 and "another gradsvc serve" in second.stderr
    assert "Traceback" not in second.stderr


def test_queued_jobs_run_on_a_dask_cluster(tmp_path):
    """`serve --executor dask --workers 1`: the seed job and a grid of blocks run on a real
    LocalCluster, with the numbers of `gradsvc run`."""
    data = tmp_path / "data"
    process, url = start_server("--data", str(data), "--executor", "dask", "--workers", "1",
                                log=tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            seed, grid = submit(client, SEED), submit(client, GRID)
            for job_id in (seed, grid):
                assert wait_for(client, job_id, finished, timeout=120)["status"] == "done", \
                    (tmp_path / "serve.log").read_text()
            assert _numbers(client.get(f"/v1/jobs/{seed}/result").json()) == _numbers(
                cli_json("jobs/seed_chain.yaml")[1])
            got = client.get(f"/v1/jobs/{grid}/result").json()
            summary = client.get(f"/v1/jobs/{grid}").json()["summary"]
    finally:
        stop_server(process)
    assert summary["timings"]["executor"] == "dask" and summary["timings"]["tasks"] > 1
    x, y = (got["values"][n] for n in "xy")
    assert got["grads"]["z"]["x"] == [b + 1 for b in y] and got["points"] == 6_000
    assert got["values"]["z"] == [a * b + a for a, b in zip(x, y)]


GRID = LONG.replace("3000", "60").replace("1000", "100").replace("10000", "1000")
