"""POST /v1/run and POST /v1/validate: a job answered while the client waits."""
from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import LimitError
from .batcher import INLINE_MAX_CHARS
from .body import job_text, read_body, read_job

SYNC_MAX_POINTS = 1_000_000  # /v1/run answers while the client waits: bigger jobs are queued

router = APIRouter()


@router.post("/v1/run")
async def run(request: Request) -> Response:
    """Run a job: every node's value and every output's gradient at every grid point,
    verified against the reference, as `gradsvc run --format json` prints it."""
    body, media = await read_body(request), request.headers.get("content-type", "")
    # a long body's JSON check is work too: off the event loop
    text = (job_text(body, media) if len(body) <= INLINE_MAX_CHARS
            else await run_in_threadpool(job_text, body, media))
    # read, run (with concurrent requests of its kernel) and answered in worker threads
    return Response(await request.app.state.batcher.answer(text), media_type="application/json")


def read_to_run(text: str):
    """The job a /v1/run request sends, refused where it is too big to wait for."""
    from ..job.spec import SENT, job_from_text
    return _small_enough(job_from_text(text, SENT))


def known_to_run(text: str):
    """The job a /v1/run request sends if it is of a shape read before (one point), else None."""
    from ..job.spec import SENT, known_job
    job = known_job(text, SENT)
    return None if job is None else _small_enough(job)


def _small_enough(job):
    if job.grid.size > SYNC_MAX_POINTS:
        raise LimitError(f"the job has {job.grid.size:,} points; /v1/run runs at most "
                         f"{SYNC_MAX_POINTS:,} while the client waits",
                         hint="queue it: POST it to /v1/jobs (or `gradsvc submit`), or run "
                         "it with `gradsvc batch`")
    return job


def run_json(result) -> str:
    """The answer: what `gradsvc run --format json` prints."""
    from ..teaching.report import to_json
    return json.dumps(to_json(result), allow_nan=False)


@router.post("/v1/validate")
async def validate(request: Request) -> dict:
    """Check a job without running it: its size, names and every node's shape."""
    job, _ = await read_job(request)
    graph = job.graph
    return {"ok": True, "name": job.name, "points": job.grid.size,
            "inputs": list(graph.inputs), "nodes": list(graph.named),
            "outputs": list(graph.outputs), "wrt": list(graph.wrt),
            "shapes": {n: list(graph.shape_of(n)) for n in graph.visible}}
