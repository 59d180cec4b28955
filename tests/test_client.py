"""`gradsvc.Client` and `gradsvc submit`, `status`, `fetch`: against a real `gradsvc serve`
process on a free loopback port (stopped by its pid), over real HTTP."""
from __future__ import annotations

import json

import httpx
import pytest

import gradsvc
from conftest import ROOT, cli
from gradsvc.client import confined, sse_events
from gradsvc.errors import EXIT_BUSY, EXIT_DEVICE, ServiceError
from servers import free_port, running_server

SEED = ROOT / "jobs" / "seed_chain.yaml"
# about 2 million points: runs for a while on a shared 2-core machine, so it can be cancelled
LONG = ("name: long\ninputs: {x: {linspace: [0, 1, 1500]}, y: {linspace: [0, 1, 1500]}}\n"
        "graph: {z: sin(x) * cos(y) + x * y}\noutputs: [z]\n"
        "settings: {chunk_size: 2000}\n")  # 1,125 chunks: seconds, even with a kernel at hand


@pytest.fixture(scope="module")
def url():
    with running_server() as address:
        yield address


@pytest.fixture
def client(url):
    with gradsvc.Client(url) as connected:
        yield connected


def _numbers(doc: dict) -> dict:
    return {key: doc[key] for key in ("name", "points", "values", "grads")}


def test_run_gives_the_seed_numbers(client):
    doc = client.run(SEED)
    assert doc["values"]["e"] == 24.0 and doc["values"]["c"] == 6.0
    assert doc["grads"]["e"] == {"a": 12.0, "b": 8.0, "d": 6.0, "c": 4.0, "e": 1.0}
    as_dict = client.run({"inputs": {"a": 2.0, "b": 3.0}, "graph": {"z": "a * b"},
                          "outputs": ["z"]})
    assert as_dict["grads"]["z"] == {"a": 3.0, "b": 2.0, "z": 1.0}
    assert client.validate(SEED.read_text())["points"] == 1


def test_a_wrong_job_raises_with_its_place_and_hint(client, write_job):
    path = write_job("inputs: {x: 1.0}\ngraph: {y: x +* 2}\noutputs: [y]\n")
    with pytest.raises(ServiceError) as raised:
        client.run(str(path))
    error = raised.value
    assert error.status == 422 and (error.where.line, error.where.col) == (2, 15)
    assert error.hint and error.exit_code == 2
    shown = str(error).splitlines()
    assert shown[0].startswith(f"{path}:2:15: error: ") and shown[1] == "    graph: {y: x +* 2}"
    assert shown[2].index("^") == 4 + 14 and shown[-1].startswith("  hint: ")


def test_several_problems_are_each_shown(client):
    with pytest.raises(ServiceError) as raised:
        client.validate("inputs: {x: 1.0}\ngraph: {y: q + 1, z: w * 2}\noutputs: [y, z]\n")
    problems = raised.value.problems
    assert [(p.where.line, p.where.col) for p in problems] == [(2, 12), (2, 22)]
    assert str(raised.value).endswith("2 problems in <request>")


def test_an_unreachable_service_is_one_clear_error():
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with gradsvc.Client(address) as nobody, pytest.raises(ServiceError) as raised:
        nobody.run(SEED)
    error = raised.value
    assert error.status is None and error.exit_code == EXIT_DEVICE
    assert f"cannot reach the gradsvc service at {address}: connection refused" in str(error)
    assert "gradsvc serve" in error.hint
    result = cli("status", "some-id", "--server", address)
    assert result.exit_code == EXIT_DEVICE and "connection refused" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_submit_wait_result_give_the_numbers_run_gives(client):
    job_id = client.submit(SEED)
    final = client.wait(job_id, progress=False, timeout=60)
    assert final["status"] == "done", final
    assert final["progress"]["points_done"] == final["progress"]["points_total"] == 1
    assert _numbers(client.result(job_id)) == _numbers(client.run(SEED))
    assert job_id in [job["id"] for job in client.jobs()]
    with httpx.stream("GET", f"{client.url}/v1/jobs/{job_id}/events") as stream:
        events = list(sse_events(stream.iter_lines()))  # what wait follows
    assert [name for name, _ in events] == ["progress", "done"]
    assert json.loads(events[-1][1])["status"] == "done"


def test_waiting_ends_at_its_timeout_and_a_cancelled_job_ends_cancelled(client):
    job_id = client.submit(LONG)
    with pytest.raises(ServiceError, match="has not finished in the time given"):
        client.wait(job_id, progress=False, timeout=0.3)
    client.cancel(job_id)
    assert client.wait(job_id, progress=False, timeout=60)["status"] == "cancelled"


def test_the_token_goes_as_a_bearer_and_a_429_keeps_its_retry_after(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("alice: {token: 3f9c0a1e6b2d47c8a5e1, requests_per_second: 0.05, "
                      "request_burst: 2}\n")
    with running_server("--token-file", str(tokens)) as address:
        with gradsvc.Client(address) as stranger, pytest.raises(ServiceError) as refused:
            stranger.jobs()
        assert refused.value.status == 401 and refused.value.hint
        with gradsvc.Client(address, token="3f9c0a1e6b2d47c8a5e1") as alice:
            assert alice.validate(SEED)["ok"] and alice.jobs() == []
            with pytest.raises(ServiceError) as limited:
                alice.jobs()
    error = limited.value
    assert error.status == 429 and error.retry_after >= 1 and error.exit_code == EXIT_BUSY


def test_an_unknown_id_is_a_404(client):
    with pytest.raises(ServiceError) as raised:
        client.status("no-such-job")
    assert raised.value.status == 404 and raised.value.hint


def test_cli_submit_status_fetch(url, tmp_path):
    submitted = cli("submit", SEED, "--server", url, "--wait")
    assert submitted.exit_code == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    status = cli("status", job_id, "--server", url, "--format", "json")
    assert status.exit_code == 0 and json.loads(status.stdout)["status"] == "done"
    assert ": done, 1/1 points" in cli("status", job_id, "--server", url).stdout
    fetched = cli("fetch", job_id, "--server", url, "--out", tmp_path)
    assert fetched.exit_code == 0, fetched.stderr
    summaries = list((tmp_path / job_id).rglob("summary.json"))
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["status"] == "ok"
    result = gradsvc.load_result(summaries[0].parent)  # every file came, intact
    assert float(result["e"].squeeze()) == 24.0 and float(result["de.da"].squeeze()) == 12.0
    not_an_id = cli("fetch", "../elsewhere", "--server", url, "--out", tmp_path)
    assert not_an_id.exit_code == 2 and "is not a job id" in not_an_id.stderr


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/passwd", "C:/x",
                                  "a\\..\\..\\x", "", ".", "a/\0b"])
def test_a_hostile_file_name_is_refused(tmp_path, name):
    with pytest.raises(ServiceError, match="outside"):
        confined(tmp_path / "out", name)


def test_a_file_name_through_a_link_out_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(ServiceError, match="outside"):
        confined(tmp_path / "out", "link/escape")
    assert confined(tmp_path / "out", "e/c/0") == (tmp_path / "out" / "e" / "c" / "0").resolve()


def test_server_sent_events_are_read_as_the_standard_says():
    lines = [": keep-alive", "event: progress", 'data: {"status": "running"}', "",
             "data: first", "data:second", "", "event: done", 'data: {"status": "done"}', ""]
    assert list(sse_events(lines)) == [("progress", '{"status": "running"}'),
                                       ("message", "first\nsecond"),
                                       ("done", '{"status": "done"}')]
