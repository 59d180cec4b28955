"""README.md is a test: every shell, Python and YAML example in it runs as written.

The examples run in README order, once, in a scratch folder holding copies of `jobs/` and
`examples/` (later examples read what earlier ones wrote: the Python block after the batch example
loads its results). Each example is then one test, named by its line in README.md:
  - ```yaml: a job file; it must validate;
  - ```python: runs with this interpreter; it must exit 0;
  - ``` (shell): one command a line, each must exit 0; a block starting with `$ cmd` shows `cmd`'s
    output, and every shown line (bar elisions with `...` and timings) must be in what it prints;
  - ```text: output shown for reading (a fuzz campaign's summary), not run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
COPIED = ("jobs", "examples")
NOT_RUN = {"make": "installs the project and runs this very test suite"}
TIMINGS = re.compile(r"\d\.\d+s\b")  # "compile 0.003s": differs from run to run
COMMAND_TIMEOUT_S = 180


@dataclass
class Example:
    line: int  # where its fence opens in README.md
    kind: str
    body: str


def examples() -> list[Example]:
    text = README.read_text(encoding="utf-8")
    return [Example(text.count("\n", 0, m.start()) + 1, m.group(1) or "shell", m.group(2))
            for m in FENCE.finditer(text)]


def _environment() -> dict:
    env = dict(os.environ, PYTHONIOENCODING="utf-8", COLUMNS="120")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # gradsvc
    return env


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=_environment(), capture_output=True, text=True,
                          encoding="utf-8", timeout=COMMAND_TIMEOUT_S)


def _failure(what: str, done: subprocess.CompletedProcess) -> str | None:
    if done.returncode == 0:
        return None
    return f"{what!r} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def _shown_lines_missing(shown: list[str], printed: str) -> list[str]:
    printed_lines = {line.rstrip() for line in printed.splitlines()}
    return [line for line in shown if line.strip() and "..." not in line
            and not TIMINGS.search(line) and line.rstrip() not in printed_lines]


def _shell(example: Example, cwd: Path) -> str | None:
    lines = example.body.splitlines()
    if lines and lines[0].startswith("$ "):
        command = lines[0][2:]
        done = _run(["bash", "-c", command], cwd)
        missing = _shown_lines_missing(lines[1:], done.stdout)
        return _failure(command, done) or (
            f"{command!r} did not print these lines README shows:\n" + "\n".join(missing)
            if missing else None)
    for command in filter(None, (line.strip() for line in lines)):
        if command.split()[0] in NOT_RUN:
            continue
        problem = _failure(command, _run(["bash", "-c", command], cwd))
        if problem:
            return problem
    return None


def _python(example: Example, cwd: Path) -> str | None:
    return _failure("python example", _run([sys.executable, "-c", example.body], cwd))


def _yaml(example: Example, cwd: Path) -> str | None:
    from gradsvc.errors import GradsvcError
    from gradsvc.job.spec import job_from_text
    try:
        job_from_text(example.body, file=f"README.md:{example.line}")
    except GradsvcError as error:
        return str(error)
    return None


RUNNERS = {"shell": _shell, "python": _python, "yaml": _yaml, "text": lambda example, cwd: None}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[int, str | None]:
    """Every example run once, in order, in one scratch folder: {line: problem or None}."""
    cwd = tmp_path_factory.mktemp("readme")
    for name in COPIED:
        shutil.copytree(ROOT / name, cwd / name)
    found = {}
    for example in examples():
        runner = RUNNERS.get(example.kind)
        found[example.line] = (runner(example, cwd) if runner else
                               f"README.md:{example.line}: unknown example kind '{example.kind}'")
    return found


@pytest.mark.parametrize("line", [e.line for e in examples()], ids=lambda line: f"README.md:{line}")
def test_readme_example_runs_as_written(outcomes, line):
    assert outcomes[line] is None, outcomes[line]


def test_every_example_kind_is_known_and_the_readme_has_examples_of_each():
    kinds = [e.kind for e in examples()]
    assert set(kinds) <= set(RUNNERS)
    assert {"shell", "python", "yaml"} <= set(kinds)


def test_a_shown_output_line_that_is_not_printed_is_caught():
    """The checker itself: a table line README shows must be in the output, timings aside."""
    printed = "verified: 1 point\n  compile 0.050s, run 0.010s\n"
    shown = ["verified: 1 point", "  compile 0.003s, run 0.002s", "  ...", "max abs err 0"]
    assert _shown_lines_missing(shown, printed) == ["max abs err 0"]
