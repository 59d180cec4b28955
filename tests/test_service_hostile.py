"""Hostile requests to a real `gradsvc serve` (a subprocess on a free loopback port, stopped by
its pid): each attack gets a clear 4xx with the error JSON, never a 500 or a traceback, and the
server answers /healthz afterwards. Elsewhere: a body over the limit with and without
Content-Length, malformed JSON at its place, a wrong Content-Type (test_service.py); path
traversal in /files and unknown job ids (the queue's tests)."""
from __future__ import annotations

import socket
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest

from servers import running_server
from test_service_auth import SEED

BODY_TIMEOUT_S = 3  # the server's --body-timeout here: short, to keep the slow client's test short


class Server:
    def __init__(self, url: str, log):
        self.url, self.log = url, log
        self.http = httpx.Client(base_url=url, timeout=30)

    def post(self, route: str, body: bytes, media: str = "application/yaml") -> httpx.Response:
        return self.http.post(route, content=body, headers={"content-type": media})

    def raw(self, *parts: bytes, pause_s: float = 0.0, read: bool = True) -> tuple[bytes, float]:
        """Send bytes as they are over one connection (`pause_s` between parts); the answer
        until the server closes or 10 s pass, and the seconds it took."""
        address = urlsplit(self.url)
        began = time.monotonic()
        with socket.create_connection((address.hostname, address.port), timeout=10) as s:
            try:
                for part in parts:
                    s.sendall(part)
                    time.sleep(pause_s)
            except OSError:  # the server may answer and close before all is sent
                pass
            answer = b""
            while read:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                answer += chunk
        return answer, time.monotonic() - began


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with running_server("--body-timeout", str(BODY_TIMEOUT_S), log=log) as url:
        yield Server(url, log)


@pytest.fixture(autouse=True)
def still_serving(server):
    """After each attack: /healthz answers, a real job still runs, no traceback was logged."""
    yield
    assert server.http.get("/healthz").json() == {"status": "ok"}
    assert server.post("/v1/validate", SEED.encode()).json()["outputs"] == ["e"]
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"message", "line", "col", "hint"} and error["message"] and error["hint"]
    return error


def raw_error(answer: bytes, status: int) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    return error_of(httpx.Response(status, headers=[line.split(b": ", 1) for line in
                                                    head.split(b"\r\n")[1:]], content=body),
                    status)


def test_truncated_json_is_a_422_where_it_stops(server):
    """A JSON body cut off midway: 422 at the place it stops."""
    error = error_of(server.post("/v1/run", b'{"inputs": {"a": 1.0', "application/json"), 422)
    assert "not JSON" in error["message"] and (error["line"], error["col"]) == (1, 21)


def test_malformed_yaml_is_a_422_with_its_place(server):
    """YAML with an unclosed flow mapping: 422 with line and column."""
    error = error_of(server.post("/v1/run", b"inputs: {a: 1.0\ngraph: [z\n"), 422)
    assert "invalid YAML" in error["message"] and (error["line"], error["col"]) == (2, 6)


def test_a_yaml_bomb_is_refused_before_it_expands(server):
    """Billion laughs: nine levels of aliases, each nine of the one before (387 M strings)."""
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for this, before in zip("bcdefghi", "abcdefgh"):
        levels.append(f"{this}: &{this} [{', '.join(['*' + before] * 9)}]")
    began = time.monotonic()
    error = error_of(server.post("/v1/run", "\n".join(levels).encode()), 422)
    assert "expands to more than 100,000 values" in error["message"]
    assert time.monotonic() - began < 10


def test_deeply_nested_yaml_is_refused(server):
    """Flow sequences nested 5,000 deep: 422, not a recursion crash."""
    error = error_of(server.post("/v1/run", b"inputs: " + b"[" * 5000 + b"]" * 5000), 422)
    assert "nest" in error["message"] and error["line"] == 1


def test_deeply_nested_json_is_refused(server):
    """JSON arrays nested 100,000 deep (under the body limit): 422, not a recursion crash."""
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    error = error_of(server.post("/v1/run", body, "application/json"), 422)
    assert error["message"] == "the JSON nests too deeply to read"


def test_a_body_that_is_not_utf8_is_a_422(server):
    """Latin-1 bytes where UTF-8 text belongs: 422 naming the first bad byte."""
    error = error_of(server.post("/v1/run", "inputs: {é: 1.0}".encode("latin-1")), 422)
    assert error["message"] == "the body is not UTF-8 text (byte 9)"


def test_a_declared_huge_body_is_refused_before_it_is_sent(server):
    """Content-Length of a terabyte, no body sent: 413 at once, not a wait for the body."""
    answer, _ = server.raw(b"POST /v1/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                           b"Content-Length: 1000000000000\r\nConnection: close\r\n\r\n")
    assert "MAX_JOB_FILE_BYTES" in raw_error(answer, 413)["message"]


def test_a_slow_body_is_cut_off_with_a_408(server):
    """Headers, then a body of 200 bytes trickled a byte every 0.5 s: 408 at the server's
    --body-timeout, and the connection closed (the request is not held open for 100 s)."""
    head = (b"POST /v1/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/yaml\r\n"
            b"Content-Length: 200\r\n\r\n")
    answer, seconds = server.raw(head, *[b"#"] * 12, pause_s=0.5)
    error = raw_error(answer, 408)
    assert error["message"] == f"the body did not arrive within {BODY_TIMEOUT_S} s"
    assert b"connection: close" in answer.lower() and seconds < BODY_TIMEOUT_S + 5


def test_clients_that_leave_mid_body_leave_the_server_serving(server):
    """Ten clients each send half a body and hang up: nothing logged, every later request
    answered."""
    head = (b"POST /v1/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/yaml\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SEED))
    left = answered(server, "POST", "/v1/run", "400")
    for _ in range(10):
        server.raw(head, SEED[: len(SEED) // 2].encode(), read=False)
    # the server has seen them all go once it has answered each (a 400 nobody reads): then
    # anything their leaving logged is in the log the fixture reads
    deadline = time.monotonic() + 10
    while answered(server, "POST", "/v1/run", "400") < left + 10:
        assert time.monotonic() < deadline, "the server did not see ten clients leave in 10 s"
        time.sleep(0.05)


def answered(server, method: str, route: str, status: str) -> float:
    """How many answers of this status to `method route` the server's /metrics counts."""
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(server.http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "gradsvc_requests_total" and sample.labels == {
                    "method": method, "route": route, "status": status}:
                return sample.value
    return 0.0


@pytest.mark.parametrize("method,path", [("GET", "/v1/nothing"), ("POST", "/v2/run"),
                                         ("GET", "/v1/run/../../etc/passwd")])
def test_an_unknown_route_is_a_404_error(server, method, path):
    """A path no route has: 404 in the error JSON."""
    error = error_of(server.http.request(method, path), 404)
    assert error["message"].startswith("no route /") and "/docs" in error["hint"]


@pytest.mark.parametrize("method,path,allowed", [("DELETE", "/v1/run", "POST"),
                                                 ("BREW", "/healthz", "GET"),
                                                 ("PUT", "/v1/jobs", "GET, POST")])
def test_a_method_a_route_does_not_take_is_a_405_error(server, method, path, allowed):
    """A method the route has not: 405 in the error JSON, with Allow."""
    response = server.http.request(method, path)
    error = error_of(response, 405)
    assert error["message"] == f"{path} does not take {method}"
    assert response.headers["allow"] == allowed


def test_a_huge_header_is_refused(server):
    """One header of a megabyte: 400 from uvicorn's HTTP parser (h11 holds at most 16 kB of an
    unfinished request), before any of gradsvc runs, so in its plain text, not the JSON."""
    answer, _ = server.raw(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 1_000_000
                           + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Invalid HTTP request" in answer


@pytest.mark.parametrize("query,words", [("/v1/jobs?limit=-1", "?limit=-1 is not a count"),
                                         ("/v1/jobs?limit=%C2%B2", "?limit=² is not a count"),
                                         ("/v1/jobs?limit=%FF%00", "is not a count"),
                                         ("/v1/jobs?status=%00../", "no job status"),
                                         ("/v1/jobs?limit=1&limit=99999999999999999999",
                                          "is not a count")])
def test_query_string_nonsense_is_a_422(server, query, words):
    """Query values of the wrong kind: 422 in the error JSON."""
    assert words in error_of(server.http.get(query), 422)["message"]


def test_nonsense_in_an_explain_query_is_a_422(server):
    """/v1/explain?lang= of no language, and a point out of the grid: 422 with a hint."""
    assert "unknown language" in error_of(server.post("/v1/explain?lang=%00zz", SEED.encode()),
                                          422)["message"]
    error_of(server.post("/v1/explain?point=999999999999", SEED.encode()), 422)
    # ² is a digit to str.isdigit() and int() refuses it: a 422, not a 500
    error = error_of(server.post("/v1/explain?point=%C2%B2", SEED.encode()), 422)
    assert error["message"] == "point='²' is not a grid point index"


def test_a_file_name_too_long_for_the_disk_is_a_404(server):
    """/files/<300 characters> of one's own job: the file system refuses the name (too long);
    no such file, not a 500."""
    job_id = server.post("/v1/jobs", SEED.encode()).json()["id"]
    error = error_of(server.http.get(f"/v1/jobs/{job_id}/files/{'a' * 300}"), 404)
    assert "has no file" in error["message"]


MATH_JOB = SEED.replace("name: seed-chain", "name: '$\\frac{$'")
LINE_JOB = ("name: '$\\frac{$'\ninputs: {x: {linspace: [0, 1, 5]}}\ngraph: {z: x * x}\n"
            "outputs: [z]\n")


@pytest.mark.parametrize("route,body,media", [("/v1/graph", MATH_JOB, "image/svg+xml"),
                                              ("/v1/plot", LINE_JOB, "image/png")])
def test_a_job_name_of_math_text_is_drawn(server, route, body, media):
    """A name matplotlib would read as math text ($...$, here not valid): drawn as it is."""
    assert "$\\frac{$" in body
    response = server.post(route, body.encode())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media) and len(response.content) > 5000


def at_setting(text: str, setting: str) -> tuple[int, int]:
    """The line and column of `setting`'s value in `text`."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(f"{setting}:"):
            return number, line.index(":") + 3
    raise AssertionError(setting)


@pytest.mark.parametrize("setting,value,words", [
    ("compile_cache", "/tmp/elsewhere", "may not set compile_cache"),
    ("compile_cache", "off", "may not set compile_cache"),
    ("verify_points", "10001", "SENT_MAX_VERIFY_POINTS"),
    ("fd_points", "1001", "SENT_MAX_FD_POINTS"),
    ("verify_budget", "1.5", "SENT_MAX_VERIFY_BUDGET")])
@pytest.mark.parametrize("route", ["/v1/run", "/v1/jobs", "/v1/validate", "/v1/explain"])
def test_a_sent_job_may_not_choose_a_cache_folder_or_unbounded_checks(server, route, setting,
                                                                    value, words):
    """A job over HTTP may not point the server at a folder to write (and load compiled code)
    from, nor ask verification past the SENT_MAX_ limits: 422 at the setting, with a hint."""
    body = f"{SEED}settings:\n  {setting}: {value}\n"
    error = error_of(server.post(route, body.encode()), 422)
    assert words in error["message"]
    assert (error["line"], error["col"]) == at_setting(body, setting)
    assert ("kernel cache" if setting == "compile_cache" else "or less") in error["hint"]


def test_a_sent_job_at_the_verification_limits_runs(server):
    """verify_points, fd_points and verify_budget at their limits: the seed job runs."""
    body = f"{SEED}settings:\n  verify_points: 10000\n  fd_points: 1000\n  verify_budget: 1.0\n"
    response = server.post("/v1/run", body.encode())
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["values"]["e"] == 24.0 and run["grads"]["e"]["a"] == 12.0 and run["verify"]["ok"]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:1"])
def test_a_request_from_another_origins_page_is_a_403(server, origin):
    """Without tokens, a browser page of another origin may not POST a job here (a text/plain
    POST needs no preflight): 403 before the job is read."""
    response = server.http.post("/v1/jobs", content=SEED.encode(),
                                headers={"content-type": "text/plain", "origin": origin})
    error = error_of(response, 403)
    assert origin in error["message"] and "--token-file" in error["hint"]


def test_a_request_for_another_host_is_a_400(server):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 asks with
    `Host: evil.example`: 400, so it reads nothing."""
    for path in ("/v1/jobs", "/healthz", "/"):
        error = error_of(server.http.get(path, headers={"host": "evil.example"}), 400)
        assert "evil.example" in error["message"]


def test_a_request_from_this_servers_own_page_is_served(server):
    """The page at / POSTs with its own origin (scheme://Host): served; so is a request by
    `localhost`."""
    response = server.http.post("/v1/validate", content=SEED.encode(),
                                headers={"content-type": "text/plain", "origin": server.url})
    assert response.status_code == 200 and response.json()["outputs"] == ["e"]
    port = urlsplit(server.url).port
    response = server.http.get("/healthz", headers={"host": f"localhost:{port}",
                                                     "origin": f"http://localhost:{port}"})
    assert response.json() == {"status": "ok"}


# a real server whose app has one more route, a bug on purpose: what the last resort answers
BUGGY_SERVE = [sys.executable, "-c", "import sys, uvicorn; "
               "from gradsvc.service.app import create_app; "
               "app = create_app(); "
               "app.get('/v1/bug')(lambda: {}['/srv/secret/path']); "
               "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')"]


def test_a_bug_is_a_500_in_the_error_json_and_logged(tmp_path):
    """An exception no handler takes: 500 with the error JSON (no traceback, no details that
    may name the server's files), the traceback in the server's log; the server goes on."""
    log = tmp_path / "server.log"
    with running_server(command=BUGGY_SERVE, log=log) as url:
        response = httpx.get(f"{url}/v1/bug")
        error = error_of(response, 500)
        assert error["message"].startswith("internal error: KeyError") and "bug" in error["hint"]
        assert "Traceback" not in response.text and "/srv/secret" not in response.text
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    logged = log.read_text()
    assert "internal error answering GET /v1/bug" in logged and "/srv/secret/path" in logged
