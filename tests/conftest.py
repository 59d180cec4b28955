"""Shared helpers: write a job file, run the CLI through typer's runner, read its JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradsvc.cli import app


def pytest_addoption(parser):
    parser.addoption("--keep-page-screenshot", action="store_true",
                     help="keep the page test's screenshot as docs/page.png (the README's)")


ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    """Tests name jobs like users do (jobs/seed_chain.yaml), from the repository root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def fast_math_everywhere(monkeypatch):
    """Every job is hot: the plan gives every job with sin/cos the fast polynomials (it otherwise
    keeps them for work big enough to repay their longer compile: gradsvc.engine.plan)."""
    from gradsvc.engine import plan
    monkeypatch.setattr(plan, "HOT_POINTS", 1)


@pytest.fixture
def write_job(tmp_path):
    def write(text: str, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return write


def cli(*args: str):
    """Run the CLI in-process; returns typer's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def cli_json(*args: str):
    result = cli("run", *args, "--format", "json")
    assert result.stdout.strip(), result.stderr
    return result, json.loads(result.stdout)
