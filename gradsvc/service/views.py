"""POST /v1/explain, /v1/graph and /v1/plot: `gradsvc explain`, `graph` and `plot` over HTTP.

Each takes a job as its body (YAML or JSON, as /v1/run does) and the CLI command's options as
query parameters: `point` (an index) or `at` (coordinates, `v=20,theta=0.8`) for the grid point,
`lang` for explain, `output` for graph. Explain answers the object `gradsvc explain --format json`
prints; graph and plot answer the bytes the CLI writes to an .svg and a .png file. A bad option
is a 422 with a hint, like any other error in a job.

The teaching pictures draw with matplotlib's pyplot, whose figures live in one process-wide
registry: drawings take turns under one lock (the runs and layouts before them need not).
"""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import LimitError
from ..job.grid import QUERY_SPELLING, parse_at
from .body import RequestError, read_job
from .run_routes import SYNC_MAX_POINTS

DRAWING = threading.Lock()  # pyplot's figure registry is not safe to share between threads

router = APIRouter()

POINT = Query(None, description="grid point index (default 0, the first)")
AT = Query(None, description="the grid point with these coordinates, e.g. v=20,theta=0.8 "
           "(the exact values of the inputs that vary)")


@router.post("/v1/explain")
async def explain(request: Request, lang: str = Query("en", description="en (English) or id "
                                                      "(Indonesian)"),
                  point: str | None = POINT, at: str | None = AT) -> dict:
    """Every gradient at one grid point through the chain rule, with numbers and a check: the
    object `gradsvc explain --format json` prints (`text` holds the words)."""
    from ..teaching.explain import explain as explain_job
    from ..teaching.report import json_safe
    job, _ = await read_job(request)

    def answer() -> dict:
        return json_safe(explain_job(job, point_index(job, point, at), lang).to_dict())
    return await run_in_threadpool(answer)


@router.post("/v1/graph", response_class=Response,
             responses={200: {"content": {"image/svg+xml": {}}}})
async def graph(request: Request, point: str | None = POINT, at: str | None = AT,
                output: str | None = Query(None, description="whose gradient the labels show "
                                           "(default: the first output)")) -> Response:
    """The computational graph as SVG, each box labelled with its value and gradient at a point:
    what `gradsvc graph --out graph.svg` draws."""
    from ..teaching.picture import build_picture, write_picture
    job, _ = await read_job(request)

    def answer() -> bytes:
        picture = build_picture(job, point_index(job, point, at), output)
        return drawn_bytes(lambda path: write_picture(picture, path), ".svg")
    return Response(await run_in_threadpool(answer), media_type="image/svg+xml")


@router.post("/v1/plot", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
async def plot(request: Request) -> Response:
    """Values and gradients over a 1-D grid, or heatmaps over a 2-D product grid, as PNG: what
    `gradsvc plot --out plot.png` draws. A single point has nothing to plot over (422)."""
    from ..teaching.plot import from_job, plot as draw
    job, _ = await read_job(request)
    if job.grid.size > SYNC_MAX_POINTS:  # a plot runs the whole grid, as /v1/run does
        raise LimitError(f"the job has {job.grid.size:,} points; /v1/plot runs at most "
                         f"{SYNC_MAX_POINTS:,} while the client waits",
                         hint="run it with `gradsvc batch` (or POST it to /v1/jobs), then "
                         "`gradsvc plot` its result folder")

    def answer() -> bytes:
        grids = from_job(job)
        return drawn_bytes(lambda path: draw(grids, path), ".png")
    return Response(await run_in_threadpool(answer), media_type="image/png")


def drawn_bytes(draw_into, suffix: str) -> bytes:
    """What `draw_into(path)` writes to a file named with `suffix` (the teaching writers choose
    the format by the name), drawn under the lock and read back."""
    with tempfile.TemporaryDirectory(prefix="gradsvc-draw-") as folder:
        path = Path(folder) / f"picture{suffix}"
        with DRAWING:
            draw_into(path)
        return path.read_bytes()


def point_index(job, point: str | None, at: str | None) -> int:
    """The grid point chosen by `point` (an index) or `at` (coordinates); 0 by default."""
    from ..teaching.explain import check_point
    if point is not None and at is not None:
        raise RequestError(422, "give point or at, not both",
                           hint="point picks by index, at by coordinates (at=v=20,theta=0.8)")
    if at is not None:
        return job.grid.index_at(parse_at(at, written="at="), job.settings.dtype,
                                 spelled=QUERY_SPELLING)
    if point is None:
        return 0
    if not (point.isascii() and point.isdigit()):  # int() takes other digits: ² does not
        raise RequestError(422, f"point={point!r} is not a grid point index",
                           hint="a whole number from 0, e.g. point=3")
    index = int(point)
    check_point(job, index, QUERY_SPELLING)
    return index
