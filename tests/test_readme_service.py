"""README.md's service section is a test too: its `$ ...` shell sessions (curl for every route,
the Python client, `gradsvc submit/status/fetch`) run, in order, in one bash against a real
server, and every line they show must be in what their command printed.

The `gradsvc serve ...` line is the server this test starts (on a free port: `localhost:8000` in
the commands becomes it). A shown line may elide with `...`: its pieces must appear in order.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from servers import running_server

SECTION = re.compile(r"^## Over HTTP: `gradsvc serve`\n(.*?)^## ", re.S | re.M)
SESSION = re.compile(r"^```text\n(.*?)^```", re.S | re.M)
MARK = "@@gradsvc-readme"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples "
                                "call curl, which this machine lacks")


def sessions() -> list[tuple[str, list[str]]]:
    """(command, the lines shown after it) of every `$ ` line of the section's text blocks."""
    section = SECTION.search((ROOT / "README.md").read_text(encoding="utf-8")).group(1)
    steps: list[tuple[str, list[str]]] = []
    for block in SESSION.findall(section):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return steps


def _script(steps: list[tuple[str, list[str]]], port: int) -> str:
    lines = ["set -u"]
    for k, (command, _) in enumerate(steps):
        lines += [f"echo '{MARK} {k}'", command.replace("localhost:8000", f"127.0.0.1:{port}"),
                  f"echo '{MARK} rc' $?"]
    return "\n".join(lines) + "\n"


def _outputs(printed: str) -> list[tuple[str, str]]:
    """(output, exit status) of each command, from the marked transcript."""
    parts = re.split(rf"^{MARK} \d+\n", printed, flags=re.M)[1:]
    done = []
    for part in parts:
        output, _, status = part.rpartition(f"{MARK} rc ")
        done.append((output, status.strip()))
    return done


def _shows(output: str, shown: str) -> bool:
    position = 0
    for piece in (p for p in shown.split("...") if p.strip()):
        position = output.find(piece, position)
        if position < 0:
            return False
        position += len(piece)
    return True


def test_the_readme_service_sessions_run_as_written(tmp_path: Path):
    steps = [step for step in sessions() if not step[0].startswith("gradsvc serve")]
    assert len(steps) >= 15 and any("/v1/jobs/$ID/events" in c for c, _ in steps)
    for folder in ("jobs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    with running_server("--data", str(tmp_path / "serve-data")) as url:
        port = int(url.rsplit(":", 1)[1])
        env = dict(os.environ, GRADSVC_SERVER=url, COLUMNS="120",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        done = subprocess.run(["bash", "-c", _script(steps, port)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    outputs = _outputs(done.stdout)
    assert len(outputs) == len(steps), done.stderr
    for (command, shown), (output, status) in zip(steps, outputs):
        assert status == "0", f"{command}\nexit {status}\n{output}\n{done.stderr}"
        for line in shown:
            assert _shows(output, line), f"{command}\nshows: {line}\nprinted: {output[:2000]}"
    assert (tmp_path / "seed_chain.svg").read_bytes().startswith(b"<?xml")
    assert (tmp_path / "logistic_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
