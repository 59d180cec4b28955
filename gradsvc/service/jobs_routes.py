"""/v1/jobs: the durable queue over HTTP. A job is queued (202, committed before the answer),
run by the runner into its own result store, watched, cancelled, and its result fetched.

Routes (each job is its owner's: another's job or an unknown id is the same 404):
  POST   /v1/jobs                    a job as for /v1/run -> 202 {"id", "status": "queued"}
  GET    /v1/jobs[?status=&limit=]   {"jobs": [...]}: the owner's jobs, newest first
  GET    /v1/jobs/{id}               the status object (`describe`)
  GET    /v1/jobs/{id}/events        Server-Sent Events: `progress` (the status object) on each
                                     change, then one named after the finished status
  DELETE /v1/jobs/{id}               cancel: a queued job at once, a running one at its next chunk
  GET    /v1/jobs/{id}/result        what `gradsvc run --format json` prints, up to
                                     RESULT_JSON_MAX_POINTS; a `keep: stats` job's statistics
  GET    /v1/jobs/{id}/files         the result store's files: relative paths and sizes
  GET    /v1/jobs/{id}/files/{path}  one of them (nothing outside the store: 404)

A `keep: stats` job's result is the run JSON without the per-point `values` and `grads`, with
`stats` (summary.json's statistics) in their place. The status object's `summary` is the store's
summary.json without its `files` (the list of every object: /files has it).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .body import RequestError, read_job
from .config import ServiceConfig
from .queue import FINISHED, LIST_LIMIT, STATUSES, JobQueue
from .runner import Runner

RESULT_JSON_MAX_POINTS = 100_000  # bigger results are fetched as files (/files), not as JSON
QUEUE_FULL_RETRY_S = 10  # Retry-After of a 429 for an owner's full queue
EVENTS_POLL_S = 0.2  # how often an event stream looks for a change
CANCEL_WAIT_S = 5.0  # DELETE of a running job waits this long for it to stop at a chunk
MAX_LIST_LIMIT = 1000

router = APIRouter()


# --- the queue and runner, for app.py's lifespan ---

def open_queue(app) -> None:
    """The queue under the config's --data (a temporary folder without one) and its runner,
    not started yet, on app.state."""
    config: ServiceConfig = app.state.config
    data = config.data
    if data is None:
        import tempfile
        app.state.jobs_tmp = tempfile.TemporaryDirectory(prefix="gradsvc-serve-")
        data = Path(app.state.jobs_tmp.name)
    app.state.queue = JobQueue(Path(data))
    app.state.runner = Runner(app.state.queue, Path(data) / "jobs", config,
                              getattr(app.state, "metrics", None))


def start(app) -> None:
    """Start the runner (jobs a killed server left running are queued again first)."""
    app.state.runner.start()


def stop(app) -> None:
    """Stop the runner (the running job queued again, its blocks kept), then close the queue."""
    app.state.runner.stop()
    app.state.queue.close()
    tmp = getattr(app.state, "jobs_tmp", None)
    if tmp is not None:
        tmp.cleanup()


# --- routes ---

@router.post("/v1/jobs", status_code=202)
async def submit(request: Request) -> JSONResponse:
    """Queue a job (the body as for /v1/run): stored durably before this answers."""
    job, text = await read_job(request)
    limits, owner = request.state.limits, request.state.owner
    if job.grid.size > limits.max_job_points:
        raise RequestError(422, f"the job has {job.grid.size:,} points; a queued job may have "
                           f"{limits.max_job_points:,}",
                           hint="split the grid into several jobs, or run it with `gradsvc "
                           "batch` on a machine of your own")
    queue: JobQueue = request.app.state.queue
    job_id = await run_in_threadpool(queue.add, owner, job.name, text, job.grid.size,
                                     limits.max_queued_jobs)
    if job_id is None:
        raise RequestError(429, f"{limits.max_queued_jobs} of your jobs are queued or running "
                           "already, as many as you may have",
                           hint="wait for one to finish (or cancel one: DELETE /v1/jobs/{id}), "
                           "then submit again", retry_after=QUEUE_FULL_RETRY_S)
    request.app.state.runner.wake()
    return JSONResponse({"id": job_id, "status": "queued"}, status_code=202,
                        headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("/v1/jobs")
async def list_jobs(request: Request, status: str | None = None,
                    limit: str | None = None) -> dict:
    """Your jobs, newest first: optionally only those of one `status`, at most `limit`."""
    if status is not None and status not in STATUSES:
        raise RequestError(422, f"no job status {status!r}",
                           hint=f"?status= is one of {', '.join(STATUSES)}")
    count = _limit(limit)
    rows = await run_in_threadpool(request.app.state.queue.listed, request.state.owner, status,
                                   count)
    return {"jobs": [{"id": r["id"], "name": r["name"], "status": r["status"],
                      "points_total": r["points_total"], "points_done": r["points_done"],
                      "created": r["created"], "started": r["started"],
                      "finished": r["finished"]} for r in rows]}


def _limit(text: str | None) -> int:
    if text is None:
        return LIST_LIMIT
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIST_LIMIT):
        raise RequestError(422, f"?limit={text} is not a count from 1 to {MAX_LIST_LIMIT}",
                           hint=f"leave it out for the newest {LIST_LIMIT}")
    return int(text)


@router.get("/v1/jobs/{job_id}")
async def status(job_id: str, request: Request) -> dict:
    """A job's status, progress, summary (once done) and error (once failed)."""
    return await run_in_threadpool(describe, request, job_id)


@router.get("/v1/jobs/{job_id}/events")
async def events(job_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events: `progress` with the status object whenever it changes, then an event
    named after the finished status (done, failed, cancelled), and the stream ends."""
    first = await run_in_threadpool(describe, request, job_id)  # a 404 before streaming

    async def stream():
        shown, now = None, first
        while not await request.is_disconnected():
            seen = (now["status"], now["progress"]["points_done"])
            if seen != shown:
                shown = seen
                yield _event("progress", now)
            if now["status"] in FINISHED:
                yield _event(now["status"], now)
                return
            await asyncio.sleep(EVENTS_POLL_S)
            now = await run_in_threadpool(describe, request, job_id)
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


@router.delete("/v1/jobs/{job_id}")
async def cancel(job_id: str, request: Request) -> dict:
    """Cancel a job: a queued one at once, a running one at its next chunk (this waits a little
    for it); the status object. A finished job: 409."""
    row = await run_in_threadpool(_own_row, request, job_id)
    if row["status"] in FINISHED:
        raise RequestError(409, f"job {job_id} is {row['status']} already: there is nothing to "
                           "cancel", hint=f"GET /v1/jobs/{job_id} for its status")
    queue: JobQueue = request.app.state.queue
    runner: Runner = request.app.state.runner
    if await run_in_threadpool(queue.cancel_queued, job_id):
        await run_in_threadpool(runner.remove_store, job_id)
    elif await run_in_threadpool(queue.request_cancel, job_id):
        runner.cancel(job_id)
        await _until_finished(request, job_id)
    return await run_in_threadpool(describe, request, job_id)


async def _until_finished(request: Request, job_id: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT_S
    while loop.time() < deadline:
        row = await run_in_threadpool(_own_row, request, job_id)
        if row["status"] in FINISHED:
            return
        await asyncio.sleep(EVENTS_POLL_S)


@router.get("/v1/jobs/{job_id}/result")
async def result(job_id: str, request: Request) -> Response:
    """The finished job's result as `gradsvc run --format json` prints it (a `keep: stats`
    job's: its statistics instead of every point's numbers)."""
    from ..job.spec import SENT, job_from_text
    from .job_results import result_json
    row = await run_in_threadpool(_own_row, request, job_id)
    if row["status"] != "done":
        raise RequestError(409, f"job {job_id} is {row['status']}: it has no result"
                           + (" yet" if row["status"] not in FINISHED else ""),
                           hint=_no_result_hint(job_id, row))
    text = await run_in_threadpool(request.app.state.queue.text_of, job_id)
    job = await run_in_threadpool(job_from_text, text, SENT)
    if job.settings.keep != "stats" and job.grid.size > RESULT_JSON_MAX_POINTS:
        raise RequestError(409, f"the result has {job.grid.size:,} points; as JSON it is "
                           f"given up to {RESULT_JSON_MAX_POINTS:,} (RESULT_JSON_MAX_POINTS)",
                           hint=f"fetch its files: GET /v1/jobs/{job_id}/files lists them (a "
                           "Zarr store: open it with xarray, or `gradsvc fetch`)")

    def answer() -> str:  # reading and encoding a big result takes a while: off the loop
        return json.dumps(result_json(job, _store(request, row)), allow_nan=False)
    return Response(await run_in_threadpool(answer), media_type="application/json")


def _no_result_hint(job_id: str, row: dict) -> str:
    if row["status"] == "failed":
        return f"GET /v1/jobs/{job_id} says why it failed; fix the job and submit it again"
    if row["status"] == "cancelled":
        return "it was cancelled: submit it again to run it"
    return f"wait for it: GET /v1/jobs/{job_id}/events streams its progress"


@router.get("/v1/jobs/{job_id}/files")
async def files(job_id: str, request: Request) -> dict:
    """The files of the job's result store (a Zarr store, complete once the job is done)."""
    from .job_results import store_files
    row = await run_in_threadpool(_own_row, request, job_id)
    listed = await run_in_threadpool(store_files, _store(request, row))
    return {"id": job_id, "complete": row["status"] == "done",
            "files": [{"path": path, "size": size} for path, size in listed]}


@router.get("/v1/jobs/{job_id}/files/{path:path}")
async def file(job_id: str, path: str, request: Request) -> FileResponse:
    """One file of the job's result store, as it is."""
    from .job_results import confined
    row = await run_in_threadpool(_own_row, request, job_id)
    found = confined(_store(request, row), path)
    if found is None:
        raise RequestError(404, f"job {job_id}'s result has no file {path!r}",
                           hint=f"GET /v1/jobs/{job_id}/files lists its files")
    return FileResponse(found, media_type=_media_type(found))


def _media_type(path: Path) -> str:
    return {".json": "application/json", ".csv": "text/csv"}.get(path.suffix,
                                                                 "application/octet-stream")


# --- the status object ---

def _own_row(request: Request, job_id: str) -> dict:
    row = request.app.state.queue.get(job_id, request.state.owner)
    if row is None:  # another's job looks the same as none: ids cannot be probed
        raise RequestError(404, f"no job {job_id}",
                           hint="GET /v1/jobs lists your jobs")
    return row


def _store(request: Request, row: dict) -> Path:
    """The job's result store (its name's folder inside the job's own)."""
    from ..storage.store import safe_folder_name
    return request.app.state.runner.job_folder(row["id"]) / safe_folder_name(row["name"])


def describe(request: Request, job_id: str) -> dict:
    """The status object of `GET /v1/jobs/{id}`."""
    row = _own_row(request, job_id)
    done = request.app.state.runner.points_done(job_id) if row["status"] == "running" else None
    return {"id": row["id"], "name": row["name"], "status": row["status"],
            "progress": {"points_done": row["points_done"] if done is None else done,
                         "points_total": row["points_total"]},
            "summary": _summary(_store(request, row)) if row["status"] == "done" else None,
            "error": json.loads(row["error"]) if row["error"] else None,
            "attempts": row["attempts"], "created": row["created"], "started": row["started"],
            "finished": row["finished"]}


def _summary(store: Path) -> dict | None:
    try:
        summary = json.loads((store / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # removed by hand since: the job's status still says done
        return None
    return {k: v for k, v in summary.items() if k != "files"} if isinstance(summary, dict) else None
