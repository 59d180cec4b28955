"""A request's job and the service's error answers: the body read within MAX_BODY_BYTES, YAML or
JSON made into a `Job`, and every `GradsvcError` turned into a 4xx with one JSON object,
`{"error": {"message", "line", "col", "hint"}}` (and "problems", each alike, when a job has
several)."""
from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import limits
from ..errors import GradsvcError, JobProblems, Location

MAX_BODY_BYTES = limits.MAX_JOB_FILE_BYTES  # a job sent is a job file: the same limit
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain", "")


class RequestError(GradsvcError):
    """A request the service cannot take, with the HTTP status that says why (and, for a 429,
    the seconds to wait before asking again)."""

    def __init__(self, status: int, message: str, hint: str | None = None, where=None,
                 retry_after: float | None = None):
        super().__init__(message, hint=hint, where=where)
        self.status = status
        self.retry_after = retry_after


async def read_job(request: Request):
    """(the job in the request's body, its text): YAML or JSON, built in a worker thread."""
    from ..job.spec import SENT, job_from_text
    text = job_text(await read_body(request), request.headers.get("content-type", ""))
    return await run_in_threadpool(job_from_text, text, SENT), text


async def read_body(request: Request) -> bytes:
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
    retry_after = getattr(error, "retry_after", None)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
    return JSONResponse(error_body(error), status_code=getattr(error, "status", 422),
                        headers=headers)
