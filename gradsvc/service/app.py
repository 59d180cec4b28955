"""The HTTP service: `create_app()` is the ASGI app `gradsvc serve` runs on uvicorn.

Routes (a contract: clients and tests rely on them):
  GET  /healthz       200 {"status": "ok"} once the app is up
  POST /v1/run        a job as YAML (application/yaml, text/plain) or JSON (application/json)
                      -> 200 with the object `gradsvc run --format json` prints
  POST /v1/validate   the same body -> 200 with what `gradsvc validate` says of it

Every user error is a 4xx with one JSON object, `{"error": {"message", "line", "col", "hint"}}`
(and "problems", each alike, when a job has several): 422 for a job that is wrong or too big to
run synchronously, 413 for a body over MAX_BODY_BYTES (refused before it is read whole), 415 for a
body that is neither YAML nor JSON. A job sent here reads no data files (the server's files are
not the sender's). Jobs run in a worker thread: the event loop keeps serving other requests.
"""
from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import __version__, limits
from ..errors import GradsvcError, JobProblems, LimitError

MAX_BODY_BYTES = limits.MAX_JOB_FILE_BYTES  # a job sent is a job file: the same limit
SYNC_MAX_POINTS = 1_000_000  # /v1/run answers while the client waits: bigger jobs go to batch
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain", "")


class RequestError(GradsvcError):
    """A request the service cannot take, with the HTTP status that says why."""

    def __init__(self, status: int, message: str, hint: str | None = None, where=None):
        super().__init__(message, hint=hint, where=where)
        self.status = status


def create_app() -> FastAPI:
    app = FastAPI(title="gradsvc", version=__version__,
                  description="Derivatives of formula graphs, verified: the HTTP door of gradsvc")
    app.add_exception_handler(GradsvcError, _error_response)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/run")
    async def run(request: Request) -> Response:
        """Run a job: every node's value and every output's gradient at every grid point,
        verified against the reference, as `gradsvc run --format json` prints it."""
        from ..api import run as run_job
        from ..teaching.report import to_json
        job = await _job_of(request)
        if job.grid.size > SYNC_MAX_POINTS:
            raise LimitError(f"the job has {job.grid.size:,} points; /v1/run runs at most "
                             f"{SYNC_MAX_POINTS:,} while the client waits",
                             hint="run it with `gradsvc batch`, which streams its results to a "
                             "store (a queue of such jobs behind this service is to come)")
        def answer() -> str:  # the JSON of a big grid takes seconds too: off the event loop
            return json.dumps(to_json(run_job(job)), allow_nan=False)
        return Response(await run_in_threadpool(answer), media_type="application/json")

    @app.post("/v1/validate")
    async def validate(request: Request) -> dict:
        """Check a job without running it: its size, names and every node's shape."""
        job = await _job_of(request)
        graph = job.graph
        return {"ok": True, "name": job.name, "points": job.grid.size,
                "inputs": list(graph.inputs), "nodes": list(graph.named),
                "outputs": list(graph.outputs), "wrt": list(graph.wrt),
                "shapes": {n: list(graph.shape_of(n)) for n in graph.visible}}

    return app


async def _job_of(request: Request):
    """The job in the request's body (YAML or JSON), built in a worker thread."""
    from ..job.spec import SENT, job_from_text
    text = _text(await _body(request), request.headers.get("content-type", ""))
    return await run_in_threadpool(job_from_text, text, SENT)


async def _body(request: Request) -> bytes:
    """The body, refused (413) as soon as it is known to pass MAX_BODY_BYTES: by its declared
    length before anything is read, or while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int) -> RequestError:
    return RequestError(413, f"the body has {size:,} bytes or more; a job may have "
                        f"{MAX_BODY_BYTES:,} (MAX_JOB_FILE_BYTES)",
                        hint="send a smaller job: big inputs are generated (linspace, uniform, "
                        "...), not listed")


def _text(body: bytes, content_type: str) -> str:
    """The job's text: YAML as it is; JSON checked to be JSON first (its own error has the
    place), then read as the YAML it also is, so that every later error points into the body."""
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and media not in YAML_TYPES:
        raise RequestError(415, f"a job is sent as YAML or JSON, not {media}",
                           hint="Content-Type: application/yaml, text/plain or application/json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(422, f"the body is not UTF-8 text (byte {error.start})",
                           hint="send the job file's text as UTF-8") from None
    if media == "application/json":
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            raise _json_error(error) from None
    return text


def _json_error(error: json.JSONDecodeError) -> GradsvcError:
    from ..errors import Location
    from ..job.spec import SENT
    return RequestError(422, f"the body is not JSON: {error.msg}",
                        hint="check the JSON at that place, or send the job as YAML",
                        where=Location(SENT, error.lineno, error.colno))


def _fields(error: GradsvcError) -> dict:
    where = error.where
    return {"message": error.message, "line": where.line if where else None,
            "col": where.col if where else None, "hint": error.hint}


async def _error_response(request: Request, error: GradsvcError) -> JSONResponse:
    body = _fields(error)
    if isinstance(error, JobProblems):
        body["problems"] = [_fields(problem) for problem in error.problems]
    return JSONResponse({"error": body}, status_code=getattr(error, "status", 422))
