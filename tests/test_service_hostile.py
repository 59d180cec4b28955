"""Hostile requests to a real `gradsvc serve` (a subprocess on a free loopback port, stopped by
its pid): each attack gets a clear 4xx with the error JSON, never a 500 or a traceback, and the
server answers /healthz afterwards. Elsewhere: a body over the limit with and without
Content-Length, malformed JSON at its place, a wrong Content-Type (test_service.py); path
traversal in /files and unknown job ids (the queue's tests)."""
from __future__ import annotations

import socket
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
    answer, _ = server.raw(b"POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                           b"Content-Length: 1000000000000\r\nConnection: close\r\n\r\n")
    assert "MAX_JOB_FILE_BYTES" in raw_error(answer, 413)["message"]


def test_a_slow_body_is_cut_off_with_a_408(server):
    """Headers, then a body of 200 bytes trickled a byte every 0.5 s: 408 at the server's
    --body-timeout, and the connection closed (the request is not held open for 100 s)."""
    head = (b"POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\n"
            b"Content-Length: 200\r\n\r\n")
    answer, seconds = server.raw(head, *[b"#"] * 12, pause_s=0.5)
    error = raw_error(answer, 408)
    assert error["message"] == f"the body did not arrive within {BODY_TIMEOUT_S} s"
    assert b"connection: close" in answer.lower() and seconds < BODY_TIMEOUT_S + 5


def test_clients_that_leave_mid_body_leave_the_server_serving(server):
    """Ten clients each send half a body and hang up: nothing logged, every later request
    answered."""
    head = (b"POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SEED))
    for _ in range(10):
        server.raw(head, SEED[: len(SEED) // 2].encode(), read=False)
    time.sleep(0.5)  # the server has seen them all go


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
    answer, _ = server.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000
                           + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Invalid HTTP request" in answer


@pytest.mark.parametrize("query,words", [("/v1/jobs?limit=-1", "?limit=-1 is not a count"),
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
