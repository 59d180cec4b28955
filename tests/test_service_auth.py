"""Who may ask `gradsvc serve`: bearer tokens from --token-file (401 without one), each token's
jobs its own (404 for another's), each token's limits (429 with Retry-After), bad token files
refused at start, CORS closed. Real servers on free loopback ports, stopped by their pid."""
from __future__ import annotations

import time

import httpx
import pytest

from conftest import ROOT, cli
from gradsvc.cli import open_host_refusal
from gradsvc.service.auth import TokenBucket
from servers import running_server

SEED = (ROOT / "jobs" / "seed_chain.yaml").read_text()
ALICE, BOB, CAROL = "alice-token-0123456789", "bob-token-0123456789ab", "carol-token-0123456789"
TOKENS = f"""\
alice: {ALICE}
bob:
  token: {BOB}
  requests_per_second: 0.2
  request_burst: 3
carol:
  token: {CAROL}
  max_job_points: 100
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    (folder / "tokens.yaml").write_text(TOKENS)
    with running_server("--token-file", str(folder / "tokens.yaml"),
                        log=folder / "server.log") as address:
        yield address
    assert "Traceback" not in (folder / "server.log").read_text()  # no answer was a 500


def as_(token: str | None) -> dict:
    return {"content-type": "application/yaml",
            **({"authorization": f"Bearer {token}"} if token else {})}


def v1_routes(url: str) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route the server's OpenAPI lists, ids filled in."""
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    return [(method.upper(), path.replace("{job_id}", "0" * 32).replace("{path}", "a.json"))
            for path, methods in paths.items() if path.startswith("/v1/") for method in methods]


def test_every_v1_route_needs_a_token(url):
    routes = v1_routes(url)
    assert {("POST", "/v1/run"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs")} <= set(routes)
    for method, path in routes:
        for token, why in ((None, "needs a token"), ("alice-token-0123456789x", "not one")):
            response = httpx.request(method, f"{url}{path}", content=SEED.encode(),
                                     headers=as_(token))
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            error = response.json()["error"]
            assert why in error["message"] and "Authorization: Bearer" in error["hint"]


def test_a_token_runs_the_seed_job_and_health_metrics_docs_stay_open(url):
    response = httpx.post(f"{url}/v1/run", content=SEED.encode(), headers=as_(ALICE), timeout=60)
    assert response.status_code == 200, response.text
    grads = response.json()["grads"]["e"]
    assert (grads["a"], grads["b"], grads["c"], grads["d"]) == (12.0, 8.0, 4.0, 6.0)
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs", "/"):
        assert httpx.get(f"{url}{path}").status_code == 200, path  # probes, scrapers, pages
    assert "bearer" in str(httpx.get(f"{url}/openapi.json").json()["components"]).lower()


def test_requests_over_a_tokens_rate_are_429_with_retry_after(url):
    """bob (only this test's token): a request every 5 s, a burst of 3, so the 4th of five
    requests in a row is refused however slowly this machine sends them (within 5 s); alice (no
    rate) is not slowed by bob's; after the Retry-After bob is served again."""
    validate = f"{url}/v1/validate"
    codes = [httpx.post(validate, content=SEED.encode(), headers=as_(BOB)) for _ in range(5)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    refused = codes[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert "more than 0.2 requests a second" in refused.json()["error"]["message"]
    assert httpx.post(validate, content=SEED.encode(), headers=as_(ALICE)).status_code == 200
    time.sleep(int(codes[4].headers["retry-after"]))  # one request's worth refilled by then
    assert httpx.post(validate, content=SEED.encode(), headers=as_(BOB)).status_code == 200


def test_a_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # empty: half a second for the next
    assert bucket.take(0.5) == 0.0 and bucket.take(0.5) == 0.5
    assert [bucket.take(100.0) for _ in range(4)][-1] == 0.5  # refilled to the burst, not past


def _queued_done(url: str, token: str) -> str:
    job = httpx.post(f"{url}/v1/jobs", content=SEED.encode(), headers=as_(token))
    assert job.status_code == 202, job.text
    job_id, deadline = job.json()["id"], time.monotonic() + 60
    while True:
        status = httpx.get(f"{url}/v1/jobs/{job_id}", headers=as_(token), timeout=30)
        assert status.status_code == 200, status.text
        if status.json()["status"] == "done":
            return job_id
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _answer(method: str, url: str, token: str) -> httpx.Response:
    response = httpx.request(method, url, headers=as_(token), timeout=30)
    assert response.status_code in (200, 404), (method, url, response.text)
    return response


def test_a_token_sees_only_its_own_jobs(url):
    job_id = _queued_done(url, ALICE)
    own = f"{url}/v1/jobs/{job_id}"
    assert _answer("GET", f"{own}/result", ALICE).json()["grads"]["e"]["a"] == 12.0
    files = _answer("GET", f"{own}/files", ALICE).json()["files"]
    assert files and _answer("GET", f"{own}/files/{files[0]['path']}", ALICE).status_code == 200
    for method, path in (("GET", ""), ("GET", "/result"), ("GET", "/files"), ("DELETE", ""),
                         ("GET", f"/files/{files[0]['path']}"), ("GET", "/events")):
        response = _answer(method, f"{own}{path}", CAROL)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["message"] == f"no job {job_id}"
    listed = httpx.get(f"{url}/v1/jobs", headers=as_(CAROL)).json()["jobs"]
    assert job_id not in {job["id"] for job in listed}
    assert job_id in {job["id"] for job in httpx.get(f"{url}/v1/jobs",
                                                      headers=as_(ALICE)).json()["jobs"]}


def test_a_token_files_own_point_limit(url):
    """carol may queue jobs of 100 points; alice has the server's default."""
    grid = ("inputs: {x: {linspace: [0, 1, 101]}}\ngraph: {y: x * x}\noutputs: [y]\n").encode()
    refused = httpx.post(f"{url}/v1/jobs", content=grid, headers=as_(CAROL))
    assert refused.status_code == 422 and "may have 100" in refused.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/jobs", content=grid, headers=as_(ALICE)).status_code == 202


def test_cors_is_closed(url):
    """No answer lets another origin's page read it; a preflight is not granted."""
    origin = {"origin": "https://elsewhere.example"}
    for response in (httpx.get(f"{url}/healthz", headers=origin),
                     httpx.post(f"{url}/v1/run", content=SEED.encode(),
                                headers={**as_(ALICE), **origin}, timeout=60)):
        assert response.status_code == 200
        assert not any(h.startswith("access-control-") for h in response.headers)
    preflight = httpx.options(f"{url}/v1/run", headers={
        **origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization"})
    assert preflight.status_code == 405 and "error" in preflight.json()
    assert not any(h.startswith("access-control-") for h in preflight.headers)


BAD_TOKEN_FILES = [  # (file's text, its place, words of the message)
    ("alice: short-token\n", ":1:8", "shorter than 16"),
    (f"alice: {ALICE}\nbob: {ALICE}\n", ":2:6", "bob has the same token as alice"),
    (f"alice:\n  token: {ALICE}\n  requests_per_secnd: 5\n", ":3:3", "unknown setting"),
    (f"alice:\n  token: {ALICE}\n  request_burst: 0\n", ":3:18", "request_burst is 0"),
    (f"alice:\n  token: {ALICE}\n  max_job_points: many\n", ":3:19", "max_job_points"),
    (f"alice: [{ALICE}, b\n", ":2:1", "invalid YAML"),
    ("- alice\n", ":1:1", "names no tokens"),
    ("../../etc: 0123456789abcdef0123\n", ":1:12", "not a name for a token"),
    ("", ": error", "the token file is empty"),
]


@pytest.mark.parametrize("text,place,words", BAD_TOKEN_FILES)
def test_a_bad_token_file_stops_the_server_with_its_place(tmp_path, text, place, words):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(text)
    result = cli("serve", "--token-file", tokens, "--port", "9")  # refused before binding
    assert result.exit_code == 2, result.stderr
    assert f"{tokens}{place}" in result.stderr and words in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert ALICE not in result.stderr  # a token is never shown


def test_a_missing_token_file_is_named():
    result = cli("serve", "--token-file", "no/such/tokens.yaml", "--port", "9")
    assert result.exit_code == 2 and "cannot read the token file" in result.stderr
    assert "no/such/tokens.yaml" in result.stderr and "Traceback" not in result.stderr


def test_serving_beyond_loopback_is_allowed_with_tokens(tmp_path):
    """The check `serve` makes before it binds (tests serve on 127.0.0.1 only): an address
    beyond loopback needs a token file; loopback names never do."""
    tokens = tmp_path / "tokens.yaml"
    for host in ("192.0.2.10", "0.0.0.0", "::", "example.org"):
        assert open_host_refusal(host, tokens) is None
        refusal = open_host_refusal(host, None)
        assert refusal is not None and "without tokens" in refusal.message and refusal.hint
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert open_host_refusal(host, None) is None
