"""`gradsvc serve`: a real server process on a free loopback port, real HTTP (httpx), stopped by
its pid. Every route of this first part, its errors and its limits."""
from __future__ import annotations

import httpx
import pytest

from conftest import ROOT, cli, cli_json
from servers import running_server

SEED = (ROOT / "jobs" / "seed_chain.yaml").read_text()


@pytest.fixture(scope="module")
def server():
    with running_server() as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def yaml_post(client, route: str, text: str, **headers):
    return client.post(route, content=text.encode(), headers={"content-type": "application/yaml",
                                                              **headers})


def test_healthz(server):
    response = server.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def _numbers(doc: dict) -> dict:
    """What must be the same whoever ran the job (timings, the file name and verification's
    details of how it went, such as its budget spent, may differ)."""
    same = {k: v for k, v in doc.items() if k not in ("timings", "file", "verify")}
    verify = doc["verify"]
    return {**same, "verify": {k: verify[k] for k in ("ok", "checked_points", "compared",
                                                       "mismatches")}}


def test_run_answers_what_gradsvc_run_prints(server):
    """The seed job as YAML and as JSON: the CLI's `--format json` object (timings and the file
    name aside), the seed's numbers included."""
    _, expected = cli_json("jobs/seed_chain.yaml")
    got = yaml_post(server, "/v1/run", SEED)
    assert got.status_code == 200, got.text
    assert _numbers(got.json()) == _numbers(expected)
    assert got.json()["grads"]["e"]["a"] == 12.0 and got.json()["verify"]["ok"]
    as_json = server.post("/v1/run", json={"inputs": {"a": 2.0, "b": 3.0}, "graph": {"z": "a * b"},
                                           "outputs": ["z"]})
    assert as_json.status_code == 200
    assert as_json.json()["grads"]["z"] == {"a": 3.0, "b": 2.0, "z": 1.0}  # wrt: all


def test_a_wrong_job_is_a_422_with_its_place_and_a_hint(server):
    response = yaml_post(server, "/v1/run", "inputs: {x: 1.0}\ngraph: {y: x +* 2}\noutputs: [y]\n")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["line"] == 2 and error["col"] > 1 and error["message"] and error["hint"]
    several = yaml_post(server, "/v1/validate",
                        "inputs: {x: 1.0}\ngraph: {y: q + 1, z: w * 2}\noutputs: [y, z]\n")
    assert several.status_code == 422 and len(several.json()["error"]["problems"]) == 2


def test_malformed_json_says_where(server):
    response = server.post("/v1/run", content=b'{"inputs": {"a": 1.0,}}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "not JSON" in error["message"] and (error["line"], error["col"]) == (1, 22)


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    big = "# " + "x" * 1_100_000 + "\n" + SEED
    declared = yaml_post(server, "/v1/run", big)
    assert declared.status_code == 413 and "MAX_JOB_FILE_BYTES" in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is kept while the body streams in
        for _ in range(40):
            yield b"#" * 50_000 + b"\n"
    streamed = server.post("/v1/run", content=chunks(), headers={"content-type": "text/plain"})
    assert streamed.status_code == 413


def test_a_sent_job_reads_no_data_files(server):
    response = yaml_post(server, "/v1/run", "inputs: {w: {file: jobs/data/w.npy}}\n"
                         "graph: {y: sum(w)}\noutputs: [y]\n")
    assert response.status_code == 422
    assert "reads no data files" in response.json()["error"]["message"]


def test_a_job_too_big_to_wait_for_points_to_batch(server):
    response = yaml_post(server, "/v1/run", "inputs: {x: {linspace: [0, 1, 2000]}, "
                         "y: {linspace: [0, 1, 1000]}}\ngraph: {z: x * y}\noutputs: [z]\n")
    assert response.status_code == 422 and "gradsvc batch" in response.json()["error"]["hint"]


def test_neither_yaml_nor_json_is_a_415(server):
    response = server.post("/v1/run", content=b"<job/>", headers={"content-type": "text/xml"})
    assert response.status_code == 415 and response.json()["error"]["hint"]


def test_validate_lists_the_job(server):
    response = yaml_post(server, "/v1/validate", SEED)
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] and body["points"] == 1 and body["outputs"] == ["e"]


def test_openapi_describes_the_routes(server):
    paths = server.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/run", "/v1/validate"} <= set(paths)


def test_serving_beyond_loopback_is_refused_without_tokens():
    result = cli("serve", "--host", "192.0.2.10", "--port", "9")  # refused before binding
    assert result.exit_code == 2 and "without tokens" in result.stderr
    assert "Traceback" not in result.stderr
