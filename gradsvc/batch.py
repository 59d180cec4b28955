"""`gradsvc batch`: many jobs, results in stores, progress, resumable.

Each job runs into its own Zarr store under `--out`, a local folder or an fsspec URL (see
`storage.store`). A job whose folder already holds a complete, intact result for the same job
text, settings and gradsvc version is skipped (`force` reruns it); a damaged one (an object
missing, truncated or changed) is recomputed, saying what was wrong; an unfinished one (a killed
run's) is resumed, computing only the ranges of points it lacks. A failing job, whatever the
exception, is recorded and the rest go on; `batch.json` in `--out` lists every job's outcome,
and is written however the batch ends (Ctrl-C, SIGTERM too).
Jobs with the same graph structure compile once (the compiled function is cached per process, and
JAX's persistent compilation cache serves later processes).
"""
from __future__ import annotations

import fcntl
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from .errors import (EXIT_DEVICE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_IO,
                     EXIT_MISMATCH, EXIT_OK, EXIT_TERMINATED, BusyError, GradsvcError, UsageError,
                     internal_error, write_failure_words)
from .job.spec import Job, load_job
from .storage.place import Place, is_url
from .storage.store import (job_folder, remove_stale_temporaries, safe_folder_name, stored_result,
                            write_json_atomic, write_result)

JOB_SUFFIXES = (".yaml", ".yml")


@dataclass
class JobOutcome:
    file: str
    name: str
    status: str  # ok, mismatch, skipped, invalid, device, write error, error, interrupted, not run
    points: int = 0
    max_rel_err: float | None = None
    timings: dict = field(default_factory=dict)
    folder: str | None = None
    message: str | None = None
    exit_code: int = EXIT_OK
    repaired: str | None = None  # what was wrong with the stored result this run recomputed


def collect_job_files(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their *.yaml / *.yml files (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in JOB_SUFFIXES
                                and p.is_file() and not any(part.startswith(".") for part in p.parts)))
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"no such job file or folder: {path}")
    if not files:
        raise UsageError("no job files found", hint="pass job files or folders holding *.yaml files")
    return list(dict.fromkeys(files))


@contextmanager
def locked(out):
    """One batch at a time per local output folder: two writers would race on the same results.
    An fsspec URL has no lock (object stores have no fcntl): keep one batch per --out there."""
    if is_url(out):
        yield
        return
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / ".gradsvc.lock", "w")
    except OSError as error:
        raise UsageError(f"cannot write results to {out}: {error.strerror}",
                         hint="choose an --out folder you can create and write to") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"another gradsvc batch is writing to {out}",
                            hint="wait for it, or choose another --out folder") from None
        yield


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that it is handled the same
    way: the job in progress is discarded, finished results are kept, batch.json is written."""

    exit_code = EXIT_TERMINATED


@contextmanager
def sigterm_as_interrupt():
    """For the duration of the block, SIGTERM raises `Terminated`; the previous handler is put
    back afterwards (the CLI's batch uses this; a library call changes no signal handler). Only
    the first SIGTERM raises: later ones arrive while the first is being handled (a supervisor
    repeating itself) and must not cut the cleanup short. Signal handlers live in the main
    thread only; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum, frame):
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} points/s" if speed else "", style="progress.data.speed")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeRemainingColumn(), console=console, transient=False)


def run_batch(paths: list[Path], out: Path | str, *, force: bool = False,
              overrides: dict | None = None, config=None, console: Console | None = None,
              execute: Callable | None = None, verify: bool | None = None) -> list[JobOutcome]:
    """Run every job found in `paths` into `out` (a folder, or an fsspec URL such as
    `s3://bucket/results`); returns one outcome per job file.

    A finished result is reused only if its files are intact: sizes are always checked, checksums
    with `verify=True` (`--verify-files`), or when cheap with the default `verify=None`.
    """
    from .api import execute as default_execute
    execute = execute or default_execute
    console = console or Console(stderr=True)
    files = collect_job_files(paths)
    with locked(out):
        removed = remove_stale_temporaries(out)
        if removed:
            console.print(f"removed {len(removed)} unfinished result(s) left by an interrupted run: "
                          f"{', '.join(removed)}", markup=False)
        jobs: dict[str, Job] = {}
        outcomes: list[JobOutcome] = []
        try:
            _load_all(files, overrides, config, jobs, outcomes)
            _run_all(jobs, outcomes, out, force, verify, console, execute)
        finally:
            _write_batch_json(out, outcomes)
    return outcomes


def _load_all(files, overrides, config, jobs: dict[str, Job], outcomes: list[JobOutcome]) -> None:
    """Loads every job file into `jobs`, one outcome each into `outcomes` (filled as it goes, so
    that an interrupt still leaves every outcome so far for batch.json)."""
    folders: dict[str, str] = {}
    for path in files:
        try:
            job = load_job(path, overrides, config)
        except GradsvcError as error:
            outcomes.append(JobOutcome(str(path), path.stem, "invalid", message=str(error),
                                       exit_code=error.exit_code))
            continue
        except Exception as error:  # a bug in loading this one file: the other jobs still run
            outcomes.append(JobOutcome(str(path), path.stem, "error", exit_code=EXIT_INTERNAL,
                                       message=internal_error(error, str(path))))
            continue
        folder = safe_folder_name(job.name)
        if folder in folders:
            message = (f"{path}: error: job name '{job.name}' is also used by {folders[folder]}\n"
                       f"  hint: give one of them another `name:`")
            outcomes.append(JobOutcome(str(path), job.name, "invalid", message=message,
                                       exit_code=EXIT_INVALID))
            continue
        folders[folder] = str(path)
        jobs[str(path)] = job
        outcomes.append(JobOutcome(str(path), job.name, "not run", points=job.grid.size,
                                   folder=folder))


def _run_all(jobs: dict[str, Job], outcomes: list[JobOutcome], out: Path, force: bool,
             verify: bool | None, console: Console, execute) -> None:
    total = sum(job.grid.size for job in jobs.values())
    with _progress(console) as progress:
        overall = progress.add_task("all jobs", total=total)
        for outcome in outcomes:
            job = jobs.get(outcome.file)
            if job is None:
                continue
            try:
                _run_one(job, outcome, out, force, verify, console, progress, overall, execute)
            except KeyboardInterrupt as stop:
                outcome.status = "interrupted"
                outcome.exit_code = getattr(stop, "exit_code", EXIT_INTERRUPTED)
                by = " by SIGTERM" if isinstance(stop, Terminated) else ""
                outcome.message = (f"interrupted{by}: the unfinished result is kept; running "
                                   "the batch again resumes it")
                raise
            except GradsvcError as error:
                outcome.status = "device" if error.exit_code == EXIT_DEVICE else "invalid"
                outcome.message, outcome.exit_code = str(error), error.exit_code
            except OSError as error:  # disk full, permissions: the job failed, the batch goes on
                outcome.status, outcome.exit_code = "write error", EXIT_IO
                outcome.message = write_failure(outcome.file, error)
            except Exception as error:  # a bug: record it, keep the other jobs going
                outcome.status, outcome.exit_code = "error", EXIT_INTERNAL
                outcome.message = internal_error(error, outcome.file)


def _run_one(job: Job, outcome: JobOutcome, out: Path, force: bool, verify: bool | None,
             console: Console, progress: Progress, overall, execute) -> None:
    """One job: reuse its intact result, or (re)compute it, saying what was wrong with a damaged
    one."""
    stored = None if force else stored_result(job_folder(out, job), job, verify)
    if stored is not None and stored.complete:
        _skip(outcome, stored.summary)
        progress.advance(overall, job.grid.size)
        return
    if stored is not None and stored.damage:
        outcome.repaired = stored.damage
        console.print(f"{outcome.folder}: {stored.damage}; recomputing", markup=False)
    if stored is not None and stored.unfinished:
        console.print(f"{outcome.folder}: resuming the unfinished result of an interrupted run",
                      markup=False)
    task = progress.add_task(job.name, total=job.grid.size)

    def advance(points: int) -> None:
        progress.advance(task, points)
        progress.advance(overall, points)
    written = write_result(out, job, execute, advance)
    _record(outcome, written.summary)
    if not Path(outcome.file).is_file():
        outcome.message = ("the job file was deleted while the batch ran; this result "
                           "is from its text as read when the batch started")


def write_failure(file: str, error: OSError) -> str:
    """One message for a result that could not be written: what happened, and that nothing is lost."""
    return (f"{file}: error: could not write the result: {write_failure_words(error)}\n"
            "  hint: finished results are untouched, and this one is kept unfinished (no "
            "summary.json); make room (or make the folder writable) and rerun the same command: "
            "it resumes from the ranges already written")


def _record(outcome: JobOutcome, summary: dict) -> None:
    outcome.status = summary["status"]
    outcome.exit_code = EXIT_OK if summary["status"] == "ok" else EXIT_MISMATCH
    outcome.max_rel_err = summary["verify"]["max_rel_err"]
    outcome.timings = summary["timings"]


def _skip(outcome: JobOutcome, summary: dict) -> None:
    _record(outcome, summary)
    outcome.message = f"already complete ({summary['status']}); --force reruns it"
    outcome.status = "skipped"


def _write_batch_json(out: Path, outcomes: list[JobOutcome]) -> None:
    from .teaching.report import json_safe
    write_json_atomic(f"{Place.of(out).url}/batch.json", {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "jobs": json_safe(outcomes),
    })


def exit_code(outcomes: list[JobOutcome]) -> int:
    return max((o.exit_code for o in outcomes), default=EXIT_OK)


def summary_table(outcomes: list[JobOutcome]) -> Table:
    table = Table(title="batch summary (rel err: worst relative error; times in seconds)",
                  title_justify="left")
    # in a narrow terminal a long job name folds onto a second line; numbers are never cut
    table.add_column("job", overflow="fold", min_width=12)
    for column, justify in [("points", "right"), ("status", "left"), ("rel err", "right"),
                            ("compile", "right"), ("run", "right"), ("verify", "right")]:
        table.add_column(column, justify=justify, no_wrap=True)
    styles = {"ok": "green", "skipped": "cyan", "mismatch": "red", "invalid": "red",
              "device": "red", "write error": "red", "error": "red", "interrupted": "yellow",
              "not run": "yellow"}
    for o in outcomes:
        t = o.timings or {}
        err = "" if o.max_rel_err is None else f"{o.max_rel_err:.2g}"
        table.add_row(o.name, f"{o.points:,}", f"[{styles[o.status]}]{o.status}[/]", err,
                      *(f"{t[k]:.3f}" if k in t else "" for k in ("compile_s", "run_s", "verify_s")))
    return table
