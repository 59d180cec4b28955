"""`gradsvc.Client`: a gradsvc service (`gradsvc serve`) from Python, over HTTP.

    import gradsvc

    with gradsvc.Client("http://127.0.0.1:8000") as client:
        doc = client.run("jobs/seed_chain.yaml")      # answered while you wait: POST /v1/run
        doc["values"]["e"], doc["grads"]["e"]["a"]     # (24.0, 12.0)
        job_id = client.submit("jobs/seed_chain.yaml")  # queued: POST /v1/jobs
        client.wait(job_id)                             # a progress bar on stderr
        client.download(job_id, "results")              # results/<id>/summary.json, ...

A job is a path to a YAML file (a `Path`, or a str without a line break), YAML text (a str with
one, or starting with `{`) or a dict (sent as JSON). A service reads no data files, so a path is
sent as its text, and the places the service reports in it are shown against the file's name.
Every refusal is a `ServiceError` that reads as the CLI's errors do (`file:line:col: error: ...`,
the line, a hint) and keeps the HTTP `status` (and a 429's `retry_after`); a service that cannot
be reached is one too, with `status` None.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Union
from urllib.parse import quote

import httpx

from .errors import (GradsvcError, Location, OutputError, ServiceError, UsageError,
                     write_failure_words)
from .storage.names import stays_inside

TERMINAL = ("done", "failed", "cancelled")  # a queued job's last status
SENT = "<request>"  # where a job sent as text or a dict is, as the service names it
JobLike = Union[str, Path, dict]


@dataclass(frozen=True)
class Sent:
    """A job as it goes over the wire, and the name and text its errors are shown against."""

    body: bytes
    content_type: str
    name: str
    text: str


def job_to_send(job: JobLike) -> Sent:
    if isinstance(job, dict):
        try:
            text = json.dumps(job, indent=1, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise UsageError(f"the job dict is not JSON: {error}",
                             hint="give numbers, strings, lists and dicts (no NaN, no arrays: "
                             "use .tolist())") from None
        return Sent(text.encode(), "application/json", SENT, text)
    if isinstance(job, str) and ("\n" in job or job.lstrip().startswith("{")):
        return Sent(job.encode(), "application/yaml", SENT, job)
    if isinstance(job, (str, Path)):
        text = _read_job_file(Path(job))
        return Sent(text.encode(), "application/yaml", str(job), text)
    raise UsageError(f"a job is a path, YAML text or a dict, not a {type(job).__name__}",
                     hint='for example client.run("jobs/seed_chain.yaml")')


def _read_job_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no job file {path}",
                         hint="give a path to a YAML job file, or the YAML text itself") from None
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise UsageError(f"cannot read the job file {path}: {why}",
                         hint="give a readable YAML job file") from None


class Client:
    """A connection to one gradsvc service; `token` goes as `Authorization: Bearer`.
    Use it in a `with` block, or `close()` it."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def run(self, job: JobLike) -> dict:
        """The job's values, gradients and verification: what `gradsvc run --format json` prints."""
        return self._send("/v1/run", job)

    def validate(self, job: JobLike) -> dict:
        """What the service says of the job without running it: points, names and shapes."""
        return self._send("/v1/validate", job)

    def submit(self, job: JobLike) -> str:
        """Queue the job (stored durably before the service answers); returns its id."""
        return self._send("/v1/jobs", job)["id"]

    def jobs(self) -> list[dict]:
        """The jobs this client's token may see, newest first: id, name, status, points."""
        return self._call("GET", "/v1/jobs")["jobs"]

    def status(self, job_id: str) -> dict:
        """{"id", "name", "status", "progress": {"points_done", "points_total"}, "summary", ...}"""
        return self._call("GET", _job_route(job_id))

    def result(self, job_id: str) -> dict:
        """A finished job's run JSON (as `run` returns), for results small enough to send whole."""
        return self._call("GET", _job_route(job_id, "result"))

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job; returns its status."""
        return self._call("DELETE", _job_route(job_id))

    def files(self, job_id: str) -> list[dict]:
        """{"path", "size"} of each file of the job's result store, its path relative to it."""
        return self._files(job_id)

    def download(self, job_id: str, out_dir: str | Path) -> list[Path]:
        """Write a finished job's result store's files under out_dir/<id>/; returns the files
        written. Every path the service names is checked to stay inside that folder before any
        is written, and every file's size against the listing's."""
        root = _id_folder(Path(out_dir), job_id)
        listed = self._files(job_id, complete=True)
        targets = {confined(root, entry["path"]): entry for entry in listed}
        for target, entry in targets.items():
            route = _job_route(job_id, "files") + "/" + quote(entry["path"])
            self._download_file(route, target, entry.get("size"))
        return list(targets)

    def _files(self, job_id: str, complete: bool = False) -> list[dict]:
        listing = self._call("GET", _job_route(job_id, "files"))
        files = listing.get("files")
        if not (isinstance(files, list) and all(isinstance(f, dict) and isinstance(
                f.get("path"), str) and isinstance(f.get("size", 0), int) for f in files)):
            raise ServiceError(f"the service at {self.url} listed job {job_id}'s files in a "
                               "shape gradsvc does not give",
                               hint="check that this address is a gradsvc service")
        if complete and listing.get("complete") is False:
            raise ServiceError(f"job {job_id} is not done: its result store is not complete",
                               hint="wait for it (client.wait, `gradsvc status ID`), then fetch")
        return files

    def wait(self, job_id: str, progress: bool = True, timeout: float | None = None) -> dict:
        """Wait for the job to be done, failed or cancelled, showing its points on stderr when
        `progress`; returns its last status. Follows the job's events (Server-Sent Events), and
        asks for its status now and then where they cannot be followed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with ProgressBar(job_id, progress) as bar:
            final = self._follow_events(job_id, bar, deadline)
            return final if final is not None else self._poll(job_id, bar, deadline)

    def _send(self, route: str, job: JobLike) -> dict:
        sent = job_to_send(job)
        return self._call("POST", route, sent, content=sent.body,
                          headers={"content-type": sent.content_type})

    def _call(self, method: str, route: str, sent: Sent | None = None, **options) -> dict:
        """The service's JSON object answering this request; its refusal raised."""
        try:
            response = self._http.request(method, route, **options)
        except httpx.TransportError as error:
            raise unreachable(self.url, error) from None
        if response.is_error:
            raise refusal(response, sent)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ServiceError(f"the service at {self.url} answered {method} {route} with "
                               "something other than a JSON object",
                               hint="check that this address is a gradsvc service")
        return answer

    def _download_file(self, route: str, target: Path, size: int | None) -> None:
        try:
            with self._http.stream("GET", route) as response:
                if response.is_error:
                    response.read()
                    raise refusal(response)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
            if size is not None and target.stat().st_size != size:
                raise ServiceError(f"{target} arrived with {target.stat().st_size:,} bytes of "
                                   f"the {size:,} listed", hint="fetch it again")
        except httpx.TransportError as error:
            raise unreachable(self.url, error) from None
        except OSError as error:
            raise OutputError(f"cannot write {target}: {write_failure_words(error, False)}",
                              hint="check that the folder is writable and the disk has room"
                              ) from None

    def _follow_events(self, job_id: str, bar: ProgressBar, deadline: float | None) -> dict | None:
        """The job's last status from its event stream, or None where the stream could not be
        followed to the end (no such route, a proxy that buffers, a dropped connection)."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=_left(deadline))
        try:
            with self._http.stream("GET", _job_route(job_id, "events"), timeout=timeout,
                                   headers={"accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    return None
                for name, data in sse_events(response.iter_lines()):
                    status = json.loads(data)
                    if not isinstance(status, dict):
                        return None
                    bar.show(status)
                    if status.get("status") in TERMINAL:
                        return status
                    if name in TERMINAL:
                        return None  # the last event, without the last status: a poll gives it
                    _check_deadline(job_id, deadline)
        except (httpx.TransportError, ValueError):
            return None  # the stream broke or said something else: polling tells
        return None

    def _poll(self, job_id: str, bar: ProgressBar, deadline: float | None) -> dict:
        pause = 0.05
        while True:
            status = self.status(job_id)
            bar.show(status)
            if status.get("status") in TERMINAL:
                return status
            _check_deadline(job_id, deadline)
            time.sleep(min(pause, _left(deadline) or pause))
            pause = min(2 * pause, 1.0)  # quick for small jobs, one request a second for long


def _job_route(job_id: str, *rest: str) -> str:
    return "/".join([f"/v1/jobs/{quote(str(job_id), safe='')}", *rest])


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _check_deadline(job_id: str, deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise ServiceError(f"job {job_id} has not finished in the time given to wait",
                           hint="wait again (client.wait, gradsvc status), or cancel it")


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) of each event of a Server-Sent Events stream; an unnamed event is a
    "message" (the SSE standard's rules: comments start with ':', a blank line ends an event)."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


def unreachable(url: str, error: httpx.TransportError) -> ServiceError:
    if isinstance(error, httpx.ConnectError):
        why = "connection refused" if "refused" in str(error).lower() else str(error)
        return ServiceError(f"cannot reach the gradsvc service at {url}: {why}",
                            hint="is it running? start one with `gradsvc serve`, or check the "
                            "address (the CLI's --server, or GRADSVC_SERVER)")
    if isinstance(error, httpx.TimeoutException):
        return ServiceError(f"the gradsvc service at {url} did not answer in time",
                            hint="it may be busy: try again, or give a longer timeout "
                            "(Client(url, timeout=...))")
    return ServiceError(f"lost the connection to the gradsvc service at {url}: {error}",
                        hint="the service may have stopped; check it and try again")


def refusal(response: httpx.Response, sent: Sent | None = None) -> ServiceError:
    """The service's 4xx or 5xx as an error that reads as the CLI's: the place in the job sent,
    the message and the hint of its error JSON."""
    retry_after = _retry_after(response.headers.get("retry-after"))
    try:
        fields = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        fields = None
    if not isinstance(fields, dict):
        request = response.request
        return ServiceError(f"the service answered {response.status_code} "
                            f"{response.reason_phrase} to {request.method} {request.url.path}",
                            status=response.status_code, retry_after=retry_after,
                            hint="the service failed: its log says why" if response.status_code
                            >= 500 else "is this address a gradsvc service of this version?")
    problems = [GradsvcError(**_placed(problem, sent)) for problem in fields.get("problems") or ()
                if isinstance(problem, dict)]
    return ServiceError(**_placed(fields, sent), status=response.status_code,
                        retry_after=retry_after, problems=problems)


def _placed(fields: dict, sent: Sent | None) -> dict:
    """A GradsvcError's arguments from an error JSON object: its place in the job sent (with
    the line, and a caret under the column), message and hint."""
    line, col = fields.get("line"), fields.get("col")
    line = line if isinstance(line, int) and line >= 1 else None
    col = col if isinstance(col, int) and col >= 1 and line else None
    place = {"message": str(fields.get("message") or "the service refused the request"),
             "hint": str(fields.get("hint") or "see the service's message above")}
    if sent is not None and line is not None:
        place["where"] = Location(sent.name, line, col)
        lines = sent.text.splitlines()
        if line <= len(lines):
            place["text"], place["caret_col"] = lines[line - 1], col
    return place


def _retry_after(header: str | None) -> float | None:
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None  # an HTTP date: rare from a service, and no number to keep


def _id_folder(out_dir: Path, job_id: str) -> Path:
    """out_dir/<id>: an id is one plain name, never a path."""
    if not job_id or job_id in (".", "..") or any(c in job_id for c in "/\\\0:"):
        raise UsageError(f"{job_id!r} is not a job id",
                         hint="give the id `gradsvc submit` (or client.submit) gave")
    return out_dir.resolve() / job_id


def confined(root: Path, name: str) -> Path:
    """root/name, for a file name a service gave: refused unless it stays inside root (no
    absolute path, no `..`, no drive, nothing that resolves outside through a link), so that a
    hostile service cannot write anywhere else."""
    outside = not stays_inside(name)
    target = root.resolve().joinpath(*PurePosixPath(name).parts) if not outside else None
    if outside or not target.resolve().is_relative_to(root.resolve()):
        raise ServiceError(f"refused the name {name!r}: it would be written outside {root}",
                           hint="a gradsvc service names result files inside the result "
                           "folder; check that this address is the service you meant")
    return target.resolve()


class ProgressBar:
    """A job's points done, on stderr (rich); nothing at all when not `shown`."""

    def __init__(self, job_id: str, shown: bool):
        self._job_id, self._task, self._progress = job_id, None, None
        if shown:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(stderr=True), redirect_stdout=False,
                                      redirect_stderr=False)

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def show(self, status: dict) -> None:
        if self._progress is None:
            return
        points = status.get("progress") or {}
        described = f"{status.get('name') or self._job_id} {status.get('status', '')}"
        if self._task is None:
            self._task = self._progress.add_task(described, total=points.get("points_total"))
        self._progress.update(self._task, description=described,
                              completed=points.get("points_done") or 0,
                              total=points.get("points_total"))
