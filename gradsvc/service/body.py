"""A request's job and the service's error answers: the body read within MAX_BODY_BYTES, YAML or
JSON made into a `Job`, and every `GradsvcError` turned into a 4xx with one JSON object,
`{"error": {"message", "line", "col", "hint"}}` (and "problems", each alike, when a job has
several)."""
from __future__ import annotations

import asyncio
import json
import math
from http import HTTPStatus

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from .. import limits
from ..errors import GradsvcError, JobProblems, Location

MAX_BODY_BYTES = limits.MAX_JOB_FILE_BYTES  # a job sent is a job file: the same limit
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain", "")


class RequestError(GradsvcError):
    """A request the service cannot take, with the HTTP status that says why (and, for a 429,
    the seconds to wait before asking again; `headers`: others the answer needs)."""

    def __init__(self, status: int, message: str, hint: str | None = None, where=None,
                 retry_after: float | None = None, headers: dict | None = None):
        super().__init__(message, hint=hint, where=where)
        self.status = status
        self.retry_after = retry_after
        self.headers = headers or {}


async def read_job(request: Request):
    """(the job in the request's body, its text): YAML or JSON, built in a worker thread."""
    from ..job.spec import SENT, job_from_text
    text = job_text(await read_body(request), request.headers.get("content-type", ""))
    return await run_in_threadpool(job_from_text, text, SENT), text


async def read_body(request: Request) -> bytes:
    """The body, refused (413) as soon as it is known to pass MAX_BODY_BYTES: by its declared
    length before anything is read, or while it streams in; and (408) when it has not all come
    within the config's body_timeout_s (uvicorn waits for a body forever: a client trickling
    one would hold its request open as long as it liked)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(int(declared))
    timeout_s = request.app.state.config.body_timeout_s
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _too_large(size)
                chunks.append(chunk)
    except TimeoutError:  # answered on a connection then closed: the rest is not read
        raise RequestError(408, f"the body did not arrive within {timeout_s:g} s",
                           hint="send the whole job at once",
                           headers={"Connection": "close"}) from None
    except ClientDisconnect:  # nobody reads this answer: it only ends the request quietly
        raise RequestError(400, "the client went away before its body ended",
                           hint="send the whole body") from None
    return b"".join(chunks)


def _too_large(size: int) -> RequestError:
    return RequestError(413, f"the body has {size:,} bytes or more; a job may have "
                        f"{MAX_BODY_BYTES:,} (MAX_JOB_FILE_BYTES)",
                        hint="send a smaller job: big inputs are generated (linspace, uniform, "
                        "...), not listed")


def job_text(body: bytes, content_type: str) -> str:
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
        except RecursionError:
            raise RequestError(422, "the JSON nests too deeply to read",
                               hint="job files need only a few levels of nesting") from None
    return text


def _json_error(error: json.JSONDecodeError) -> GradsvcError:
    from ..job.spec import SENT
    return RequestError(422, f"the body is not JSON: {error.msg}",
                        hint="check the JSON at that place, or send the job as YAML",
                        where=Location(SENT, error.lineno, error.colno))


def error_fields(error: GradsvcError) -> dict:
    where = error.where
    return {"message": error.message, "line": where.line if where else None,
            "col": where.col if where else None, "hint": error.hint}


def error_body(error: GradsvcError) -> dict:
    body = error_fields(error)
    if isinstance(error, JobProblems):
        body["problems"] = [error_fields(problem) for problem in error.problems]
    return {"error": body}


async def error_response(request: Request, error: GradsvcError) -> JSONResponse:
    headers = dict(getattr(error, "headers", None) or {})  # a 401's challenge, a 405's Allow
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:  # rounded up: asking again sooner would be refused again
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    # an error a compute process answered (compute.Relayed) brings its body with it
    body = getattr(error, "body", None) or error_body(error)
    return JSONResponse(body, status_code=getattr(error, "status", 422), headers=headers)


async def http_error_response(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own answers (no such route, a method a route does not take) in the same
    shape as every other error."""
    status, path, method = error.status_code, request.url.path[:200], request.method[:20]
    message, hint = str(error.detail), "the routes and what they take are listed at /docs"
    headers = dict(error.headers or {})
    if status == 404 and error.detail == HTTPStatus(status).phrase:
        message = f"no route {path}"
    elif status == 405 and error.detail == HTTPStatus(status).phrase:
        headers["Allow"] = _methods_at(request)
        message, hint = f"{path} does not take {method}", f"{path} takes {headers['Allow']}"
    return await error_response(request, RequestError(status, message, hint=hint,
                                                      headers=headers))


def _methods_at(request: Request) -> str:
    """Every method some route takes at the request's path (Starlette's own 405 names only
    the first such route's: GET /v1/jobs and POST /v1/jobs are two routes)."""
    routes = request.app.router.routes
    return ", ".join(method for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
                     if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                            for route in routes))


async def validation_error_response(request: Request,
                                    error: RequestValidationError) -> JSONResponse:
    """FastAPI's checks of a route's parameters (a query value of the wrong kind) as a 422 in
    the same shape as every other error."""
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    place = " ".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return await error_response(request, RequestError(
        422, f"{place}: {first.get('msg')}{more}"[:500],
        hint="the routes and what they take are listed at /docs"))
