"""Real `gradsvc serve` processes for the tests, each on a free loopback port: used once it
answers /healthz, stopped by SIGTERM to its pid (killed, and the test failed, if it does not stop).

A server's stderr goes to a file, not a pipe: a pipe nobody reads would stop the server once full,
and the file says why a start failed.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from conftest import ROOT

LOOPBACK = "127.0.0.1"
SERVE = (sys.executable, "-m", "gradsvc", "serve")
START_S, STOP_S = 60, 60  # generous: a stop waits for a running job's chunk


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def start_server(*options: str, log: Path, command=SERVE,
                 env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`COMMAND --port P OPTIONS --host 127.0.0.1` (the port first: a `command` of `python -c`
    reads it from argv), once it answers /healthz: (its process, its base URL). Its stderr is appended to
    `log` (a restart on the same folder keeps the first server's); `env` adds to this one's."""
    port = free_port()
    with open(log, "ab") as stderr:
        process = subprocess.Popen([*command, "--port", str(port), *options, "--host", LOOPBACK],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, **env} if env else None)
    url = f"http://{LOOPBACK}:{port}"
    try:
        _until_healthy(url, process, log)
    except BaseException:
        stop_server(process)
        raise
    return process, url


def stop_server(process: subprocess.Popen, seconds: float = STOP_S) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the server did not stop in {seconds:.0f} s of SIGTERM; killed")


@contextmanager
def running_server(*options: str, log: Path | None = None, **start):
    """A started server's base URL (start_server's arguments), stopped at the end; its log in a
    temporary folder unless `log` names a file the test reads."""
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(*options, log=log or Path(folder) / "server.log", **start)
        try:
            yield url
        finally:
            stop_server(process)


def _until_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"the server did not answer in {START_S} s"
        time.sleep(0.1)
