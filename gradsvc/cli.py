"""The `gradsvc` command line: thin typer commands over the library.

Exit codes: 0 verified, 1 verification mismatch, 2 invalid job or usage, 3 device unavailable,
4 results could not be written, 5 busy (another `gradsvc batch` is writing to the same --out
folder), 70 internal error (a bug in gradsvc: please report it), 130 interrupted (Ctrl-C),
143 terminated (SIGTERM, which `batch` handles as it does Ctrl-C), 141 standard output closed
early (`gradsvc run JOB | head -1`: quietly, as a Unix tool stopped by SIGPIPE).
"""
from __future__ import annotations

import gc
import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_MISMATCH, EXIT_OK,
                     EXIT_TERMINATED, GradsvcError, OutputError, UsageError, internal_error,
                     write_failure_words)


app = typer.Typer(help="gradsvc: values and verified gradients of formula graphs, from YAML jobs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(str, Enum):
    table = "table"
    json = "json"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Executor(str, Enum):
    local = "local"
    dask = "dask"


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    tpu = "tpu"


def fail(error: GradsvcError) -> None:
    err.print(str(error), markup=False)
    raise typer.Exit(code=error.exit_code)


JobFiles = Annotated[list[Path], typer.Argument(help="job files (YAML); - reads one from stdin",
                                                show_default=False)]


def _device_count(text: str) -> int | str:
    """--devices: a whole number of at least 1, or all (the setting takes either)."""
    if text == "all":
        return text
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise typer.BadParameter(f"expected a count of at least 1, or all; got {text!r}")


Devices = Annotated[Optional[str], typer.Option(
    parser=_device_count, metavar="N|all",
    help="shard each chunk's points over N local devices of the --device kind (all: every one)")]
ExecutorOption = Annotated[Executor, typer.Option(
    help="where the points of a batch, or of the queued jobs of serve, run: this process, or a "
    "Dask cluster (--workers or --scheduler)")]
WorkersOption = Annotated[Optional[int], typer.Option(
    min=1, help="--executor dask: start a local cluster of N single-threaded workers")]
SchedulerOption = Annotated[Optional[str], typer.Option(
    help="--executor dask: the address of a running scheduler (tcp://host:8786)")]


@contextmanager
def start_up():
    """Imports a command's modules with the cyclic garbage collector paused, then freezes what
    they made out of later collections. Importing JAX, numpy and pydantic makes about a million
    objects that live as long as the process, and the collector walked them again and again
    while they were made: 0.11 s of a 0.7 s cold `gradsvc run`."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def _load(path: Path, overrides: dict | None, config: Path | None):
    """A job from a file, or from stdin for `-`."""
    with start_up():
        from .job.source import read_stdin_text
        from .job.spec import job_from_text, load_job

    if str(path) == "-":
        return job_from_text(read_stdin_text(), "<stdin>", overrides, config, "stdin")
    return load_job(path, overrides, config)


@app.command()
def run(
    jobs: JobFiles,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json")] = Format.table,
    dtype: Annotated[Optional[DType], typer.Option(help="override the job's dtype")] = None,
    device: Annotated[Optional[Device], typer.Option(help="override the job's device")] = None,
    devices: Devices = None,
    config: Annotated[Optional[Path], typer.Option(help="settings file instead of "
                                                   "configs/default.yaml")] = None,
    verify_points: Annotated[Optional[int], typer.Option(min=1, help="points checked against the "
                                                         "reference (all up to this many)")] = None,
    compile_cache: Annotated[Optional[str], typer.Option(help="compiled-kernel cache folder, or "
                                                         "off")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(min=1, help="points per compiled call")] = None,
) -> None:
    """Run jobs: every node's value and d(output)/d(node), verified against the reference."""
    with start_up():
        from .api import run as run_job
        from .teaching.report import print_table, to_json

    overrides = {"dtype": dtype and dtype.value, "device": device and device.value,
                 "devices": devices, "verify_points": verify_points, "chunk_size": chunk_size,
                 "compile_cache": compile_cache}
    documents, worst = [], EXIT_OK
    for path in jobs:
        try:
            result = run_job(_load(path, overrides, config))
        except GradsvcError as error:
            if len(jobs) == 1:
                fail(error)
            err.print(str(error), markup=False)
            worst = max(worst, error.exit_code)
            continue
        if format is Format.json:
            documents.append(to_json(result))
        else:
            print_table(result, out)
        if not result.ok:
            worst = max(worst, EXIT_MISMATCH)
    if format is Format.json:
        payload = documents[0] if len(jobs) == 1 else documents
        sys.stdout.write(json.dumps(payload, allow_nan=False) + "\n")
    raise typer.Exit(code=worst)


@app.command()
def batch(
    paths: Annotated[list[Path], typer.Argument(help="job files and folders of job files",
                                                show_default=False)],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="folder for the results, or an "
                                         "fsspec URL (s3://bucket/results)")] = "results",
    force: Annotated[bool, typer.Option("--force", help="rerun jobs whose results are complete")] =
    False,
    dtype: Annotated[Optional[DType], typer.Option(help="override every job's dtype")] = None,
    device: Annotated[Optional[Device], typer.Option(help="override every job's device")] = None,
    devices: Devices = None,
    executor: ExecutorOption = Executor.local,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    config: Annotated[Optional[Path], typer.Option(help="settings file instead of "
                                                   "configs/default.yaml")] = None,
    compile_cache: Annotated[Optional[str], typer.Option(help="compiled-kernel cache folder, or "
                                                         "off")] = None,
    verify_files: Annotated[bool, typer.Option("--verify-files", help="check the checksum of "
                                               "every finished result's files before skipping "
                                               "it (sizes are always checked; checksums also "
                                               "when a result is small)")] = False,
) -> None:
    """Run many jobs into one folder each under --out, with progress; skips finished jobs."""
    with start_up():
        from . import api  # noqa: F401  (JAX: every batch runs jobs
        from .batch import Terminated, exit_code, run_batch, sigterm_as_interrupt, summary_table

    overrides = {"dtype": dtype and dtype.value, "device": device and device.value,
                 "devices": devices, "compile_cache": compile_cache}
    try:
        with sigterm_as_interrupt(), executor_for(executor, workers, scheduler) as execute:
            outcomes = run_batch(paths, out_dir, force=force, overrides=overrides, config=config,
                                 console=err, verify=True if verify_files else None,
                                 execute=execute)
    except GradsvcError as error:
        fail(error)
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        err.print(f"interrupted{' by SIGTERM' * terminated}: finished results are kept in "
                  f"{out_dir}, and so is the unfinished one; run the same command again to "
                  "resume", markup=False)
        raise typer.Exit(code=EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
    for outcome in outcomes:
        if outcome.message and outcome.status != "skipped":
            note = "" if outcome.status != "ok" else f"{outcome.file}: note: "
            err.print(note + outcome.message, markup=False)
    out.print(summary_table(outcomes))
    out.print(f"results in {out_dir}/ (batch.json lists every job)", markup=False)
    raise typer.Exit(code=exit_code(outcomes))


@contextmanager
def executor_for(kind: Executor, workers: int | None, scheduler: str | None):
    """The `execute` a batch runs jobs with: None (this process), or a Dask cluster's for the
    batch's duration."""
    if kind is Executor.local:
        if workers is not None or scheduler is not None:
            raise UsageError("--workers and --scheduler go with --executor dask",
                             hint="add --executor dask, or leave them out to run in this process")
        yield None
        return
    with start_up():
        from .executor.dask_cluster import dask_executor
    with dask_executor(workers, scheduler) as execute:
        yield execute


GRACEFUL_SHUTDOWN_S = 5


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on; beyond loopback only with "
                                      "--token-file")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    data: Annotated[Optional[Path], typer.Option(help="folder of the durable job queue and the "
                                                 "queued jobs' results (default: a temporary "
                                                 "folder, lost at exit)")] = None,
    token_file: Annotated[Optional[Path], typer.Option(help="bearer tokens (YAML: name -> "
                                                       "token); without it /v1 is open")] = None,
    executor: ExecutorOption = Executor.local,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    batch_window_ms: Annotated[float, typer.Option(min=0, max=1000, help="how long the first "
                                                   "/v1/run request to an idle service waits "
                                                   "for others to share its call (under load, "
                                                   "requests share calls anyway)")] = 0.0,
    processes: Annotated[int, typer.Option(min=0, max=256, help="processes of their own for "
                                           "/v1/run's reading, verification and answers (0: "
                                           "threads of this process)")] = 0,
    body_timeout: Annotated[float, typer.Option(min=0.1, max=3600, help="seconds a request's "
                                                "body may take to arrive; a slower one gets a "
                                                "408")] = 30.0,
) -> None:
    """Serve gradsvc over HTTP: POST a job to /v1/run for its JSON, or to /v1/jobs to queue it;
    the page at / (OpenAPI at /docs)."""
    refusal = open_host_refusal(host, token_file)
    if refusal is not None:
        fail(refusal)
    with start_up():
        import uvicorn

        from .service.app import create_app
        from .service.config import ServiceConfig
    config = ServiceConfig(host=host, port=port, data=data, token_file=token_file,
                           executor=executor.value, workers=workers, scheduler=scheduler,
                           batch_window_s=batch_window_ms / 1000, processes=processes,
                           body_timeout_s=body_timeout)
    try:
        app = create_app(config)
    except GradsvcError as error:
        fail(error)
    # SIGTERM: open answers (an /events stream) get this long, then the lifespan's shutdown
    # stops the running job at its next chunk; uvicorn would otherwise wait for them to end
    uvicorn.run(app, host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def open_host_refusal(host: str, token_file: Path | None) -> UsageError | None:
    """Why `serve` may not listen on `host`: an address beyond loopback needs tokens."""
    if _loopback(host) or token_file is not None:
        return None
    return UsageError(f"--host {host} would serve anyone who can reach this machine, without "
                      "tokens", hint="give --token-file (YAML: name -> token), or serve on "
                      "127.0.0.1")


def _loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve anywhere
        return False


DEFAULT_SERVER = "http://127.0.0.1:8000"
Server = Annotated[str, typer.Option("--server", envvar="GRADSVC_SERVER",
                                     help="the gradsvc service's address")]
Token = Annotated[Optional[str], typer.Option(envvar="GRADSVC_TOKEN", show_default=False,
                                              help="bearer token (better in GRADSVC_TOKEN, "
                                              "which other users' ps does not show)")]


@contextmanager
def _service(server: str, token: str | None):
    """A client of the service for one command; its errors end the command as the others'."""
    from .client import Client
    try:
        with Client(server, token) as client:
            yield client
    except GradsvcError as error:
        fail(error)


@app.command()
def submit(
    jobs: JobFiles,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait for each job (progress on stderr); "
                                       "exit 1 if one mismatched, 2 failed, 130 cancelled")] =
    False,
) -> None:
    """Queue jobs on a gradsvc service (`gradsvc serve`); prints each job's id."""
    with _service(server, token) as client:
        ids = []
        for path in jobs:
            ids.append(client.submit(_stdin_job() if str(path) == "-" else path))
            out.print(ids[-1], markup=False)
        worst = EXIT_OK
        for job_id in ids if wait else ():
            final = client.wait(job_id)
            err.print(_status_text(final), markup=False)
            worst = max(worst, _finished_exit(final))
    raise typer.Exit(code=worst)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="the id `gradsvc submit` printed",
                                          show_default=False)],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json")] = Format.table,
) -> None:
    """A queued job's status and progress on a gradsvc service."""
    with _service(server, token) as client:
        state = client.status(job_id)
    if format is Format.json:
        sys.stdout.write(json.dumps(state) + "\n")
    else:
        out.print(_status_text(state), markup=False)


@app.command()
def fetch(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="the id `gradsvc submit` printed",
                                          show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder to write ID/... under")] =
    Path("results"),
    server: Server = DEFAULT_SERVER,
    token: Token = None,
) -> None:
    """Download a queued job's result store (summary.json, results.csv, the arrays) to OUT/ID/."""
    with _service(server, token) as client:
        written = client.download(job_id, out_dir)
    out.print(f"wrote {len(written)} files to {out_dir / job_id}/", markup=False)


def _stdin_job() -> str:
    with start_up():
        from .job.source import read_stdin_text
    return read_stdin_text() + "\n"  # a line break: the client sends it as text, not a path


def _status_text(state: dict) -> str:
    """`ID name: status, done/total points`, and a failed job's error under it."""
    points = state.get("progress") or {}
    done, total = points.get("points_done") or 0, points.get("points_total") or 0
    share = f" ({100 * done // total}%)" if total else ""
    text = (f"{state.get('id')} {state.get('name')}: {state.get('status')}, "
            f"{done:,}/{total:,} points{share}")
    error = state.get("error") or {}
    if error:
        text += f"\n  error: {error.get('message')}\n  hint: {error.get('hint')}"
    return text


def _finished_exit(state: dict) -> int:
    if state.get("status") == "cancelled":
        return EXIT_INTERRUPTED
    if state.get("status") != "done":
        return EXIT_INVALID
    return EXIT_MISMATCH if (state.get("summary") or {}).get("status") == "mismatch" else EXIT_OK


@app.command()
def validate(jobs: JobFiles,
             config: Annotated[Optional[Path], typer.Option(help="settings file")] = None) -> None:
    """Check job files without running them; report every problem as file:line:col."""
    bad = 0
    for path in jobs:
        try:
            job = _load(path, None, config)
        except GradsvcError as error:
            err.print(str(error), markup=False)
            bad += 1
            continue
        g = job.graph
        out.print(f"ok {path}: {job.name}, {job.grid.size:,} points, {len(g.inputs)} inputs, "
                  f"{len(g.named)} nodes, outputs {', '.join(g.outputs)}", markup=False)
        if g.has_tensors:
            from .core.tensor_ops import shape_text
            shapes = ", ".join(f"{n} {shape_text(g.shape_of(n))}" for n in g.visible)
            out.print(f"  shapes at each point: {shapes}", markup=False)
        for note in job.notes:
            out.print(f"  {note}", markup=False)
    if bad:
        err.print(f"{bad} of {len(jobs)} job file{'s' * (len(jobs) > 1)} invalid", markup=False)
    raise typer.Exit(code=EXIT_INVALID if bad else EXIT_OK)


class Lang(str, Enum):
    en = "en"
    id = "id"


PointOption = Annotated[Optional[int], typer.Option("--point", "-p", min=0, show_default=False,
                                                    help="grid point index (default 0, the "
                                                    "first)")]
AtOption = Annotated[Optional[str], typer.Option(
    "--at", show_default=False, metavar="NAME=VALUE,...",
    help="the grid point with these coordinates, e.g. --at v=20,theta=0.8 (the exact values of "
    "the inputs that vary)")]


def _point_index(job, point: int | None, at: str | None) -> int:
    """The grid point chosen by --point (an index) or --at (coordinates); 0 by default."""
    from .errors import UsageError
    from .job.grid import parse_at
    if at is None:
        return point or 0
    if point is not None:
        raise UsageError("give --point or --at, not both")
    return job.grid.index_at(parse_at(at), job.settings.dtype)


@app.command()
def explain(
    job: Annotated[Path, typer.Argument(help="job file (YAML); - reads it from stdin",
                                        show_default=False)],
    point: PointOption = None,
    at: AtOption = None,
    lang: Annotated[Lang, typer.Option("--lang", help="en (English) or id (Indonesian)")] = Lang.en,
    format: Annotated[Format, typer.Option("--format", "-f", help="table (text) or json")] =
    Format.table,
    config: Annotated[Optional[Path], typer.Option(help="settings file")] = None,
) -> None:
    """Explain every gradient at one point through the chain rule, with numbers and a check."""
    with start_up():
        from .teaching.explain import explain as explain_job
        from .teaching.report import json_safe

    try:
        loaded = _load(job, None, config)
        ex = explain_job(loaded, _point_index(loaded, point, at), lang.value)
    except GradsvcError as error:
        fail(error)
    if format is Format.json:
        sys.stdout.write(json.dumps(json_safe(ex.to_dict()), allow_nan=False) + "\n")
    else:
        _write_text(ex.text)


@app.command()
def graph(
    job: Annotated[Path, typer.Argument(help="job file (YAML); - reads it from stdin",
                                        show_default=False)],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="picture file: .svg, .png or "
                                           ".dot", show_default=False)],
    point: PointOption = None,
    at: AtOption = None,
    output: Annotated[Optional[str], typer.Option(help="whose gradient the labels show (default: "
                                                  "the first output)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="settings file")] = None,
) -> None:
    """Draw the computational graph, each node labelled with its value and gradient at a point."""
    with start_up():
        from .teaching.picture import build_picture, write_picture

    try:
        loaded = _load(job, None, config)
        picture = build_picture(loaded, _point_index(loaded, point, at), output)
        write_picture(picture, out_file)
    except GradsvcError as error:
        fail(error)
    except OSError as error:
        fail(_write_error(out_file, error))
    out.print(f"wrote {out_file} ({len(picture.shown)} boxes and operations)", markup=False)


@app.command()
def plot(
    source: Annotated[Path, typer.Argument(help="job file (YAML, - for stdin), or a result "
                                           "folder written by `gradsvc batch`",
                                           show_default=False)],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="plot file: .png, .svg or .pdf",
                                           show_default=False)],
    config: Annotated[Optional[Path], typer.Option(help="settings file")] = None,
) -> None:
    """Plot values and gradients over a 1-D grid, or heatmaps over a 2-D product grid."""
    with start_up():
        from .teaching.plot import from_folder, from_job, plot as draw

    try:
        grids = from_folder(source) if source.is_dir() else from_job(_load(source, None, config))
        what = draw(grids, out_file)
    except GradsvcError as error:
        fail(error)
    except OSError as error:
        fail(_write_error(out_file, error))
    out.print(f"wrote {out_file}: {what}", markup=False)


def _write_error(path: Path, error: OSError) -> GradsvcError:
    return OutputError(f"cannot write {path}: {write_failure_words(error, name_file=False)}",
                       hint="check that the folder exists and is writable, and the disk has room")


def _write_text(text: str) -> None:
    """Plain text as is (no markup), degrading characters the terminal's encoding lacks."""
    encoding = sys.stdout.encoding or "utf-8"
    sys.stdout.write(text.encode(encoding, errors="replace").decode(encoding))


@app.command()
def ops() -> None:
    """List the formula language: operators, functions, constants and their derivative rules."""
    from .core.expr import FUNCTION_NAMES
    from .core.ops import CONSTANTS, OPS
    from .core.tensor_ops import TENSOR_OPS

    rows = []
    for op in OPS.values():
        if op.name == "id":
            continue
        if op.symbol and op.arity == 2:
            syntax = f"a {op.symbol} b" + (", pow(a, b)" if op.name == "pow" else "")
        elif op.symbol:
            syntax = f"{op.symbol}x"
        else:
            syntax = f"{op.name}({ {1: 'x', 2: 'a, b', 3: 'x > 0, a, b'}[op.arity] })"
        rows.append((syntax, op.name, op.rule))
    rows.append(("x ** n", "ipow", "n a literal integer: d(x**n)/dx = n*x**(n-1), exact powers"))
    rows += [(op.syntax, op.name, op.rule) for op in TENSOR_OPS.values()]
    rows += [(name, "constant", f"{value!r} (unless an input or node is named {name})")
             for name, value in CONSTANTS.items()]
    width = max(len(r[0]) for r in rows)
    out.print("gradsvc formula language: write, op, derivative rule", markup=False)
    for syntax, name, rule in rows:
        out.print(f"  {syntax:<{width}}  {name:<8}  {rule}", markup=False)
    out.print("elementwise functions and operators apply to tensors with numpy's broadcasting",
              markup=False)
    out.print(f"callable functions: {', '.join(sorted(FUNCTION_NAMES))}")



@app.command()
def schema() -> None:
    """Print the JSON Schema of job files (for editor autocompletion and validation)."""
    from .job.spec import job_schema

    sys.stdout.write(json.dumps(job_schema(), indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        from . import __version__
        out.print(f"gradsvc {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False) -> None:
    """gradsvc: values and verified gradients of formula graphs, from YAML jobs."""


EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE: what the shell reports for `yes | head -1`'s yes


class StdoutClosed(Exception):
    """The reader of standard output went away (`| head -1`). Not an OSError, so that typer's
    own handling of a broken pipe (exit 1, the mismatch code) never sees it."""


class _PipeGuard:
    """Standard output that turns a broken pipe into `StdoutClosed`."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise StdoutClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise StdoutClosed from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _leave_quietly_on_closed_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's last flush at exit finds
    nowhere to fail, then exit like a tool stopped by SIGPIPE, saying nothing."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)
    sys.exit(EXIT_STDOUT_CLOSED)


def main() -> None:
    """Console entry point: user errors are one message and an exit code, never a traceback."""
    sys.stdout = _PipeGuard(sys.stdout)
    try:
        try:
            app(standalone_mode=True)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except StdoutClosed:
        _leave_quietly_on_closed_stdout()
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except GradsvcError as error:  # raised outside a command's own handling
        err.print(str(error), markup=False)
        sys.exit(error.exit_code)
    except Exception as exc:  # a bug in gradsvc, not the user's fault: say so in one line
        err.print(internal_error(exc), markup=False)
        sys.exit(EXIT_INTERNAL)
