"""The HTTP service: `create_app(config)` is the ASGI app `gradsvc serve` runs on uvicorn.

Routes (a contract: clients and tests rely on them; OpenAPI at /openapi.json and /docs):
  GET  /healthz       200 {"status": "ok"} once the app is up
  POST /v1/run        a job as YAML (application/yaml, text/plain) or JSON (application/json)
                      -> 200 with the object `gradsvc run --format json` prints
  POST /v1/validate   the same body -> 200 with what `gradsvc validate` says of it
  POST /v1/explain    ?lang=en|id&point=|at= -> what `gradsvc explain --format json` prints
  POST /v1/graph      ?point=|at=&output= -> the SVG `gradsvc graph` draws
  POST /v1/plot       -> the PNG `gradsvc plot` draws
  GET  /              the web page (page.py; its files in static/)
  POST /v1/jobs       the same body -> 202 {"id", "status": "queued"}, stored durably first;
                      GET /v1/jobs lists, GET/DELETE /v1/jobs/{id} status/cancel, and
                      /v1/jobs/{id}/events (SSE), /result, /files, /files/{path} (jobs_routes.py)

Every user error is a 4xx with one JSON object, `{"error": {"message", "line", "col", "hint"}}`
(see body.py): 422 for a job that is wrong or too big to run synchronously, 413 for a body over
MAX_BODY_BYTES (refused before it is read whole), 415 for a body that is neither YAML nor JSON.
A job sent here reads no data files (the server's files are not the sender's). Jobs run in worker
threads: the event loop keeps serving other requests.

Starlette's own answers (no such route: 404, a method a route does not take: 405) and FastAPI's
checks of parameters (422) have that shape too. Who may ask: auth.py (bearer tokens from
--token-file, each with its limits; 401, 429 with Retry-After); /healthz, /metrics, / and /docs
are open. CORS is closed: no answer carries Access-Control-Allow-Origin, so a page of another
origin cannot read this service's answers with its visitor's browser (the page at / is this
origin's); without tokens, a request from another origin's page (its Origin header) is refused
(403), and so is one for a Host that is not this server's (400: DNS rebinding) (guards.py). A bug
is a 500 in the error JSON, logged with its traceback. GET /metrics: Prometheus text (metrics.py).

Each part of the service is a module of this folder with its router and, where it keeps
something running, a start and a stop called from `lifespan` here.
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import GradsvcError
from . import auth, guards, jobs_routes, metrics, page, run_routes, views
from .batcher import Batcher
from .compute import ComputePool
from .body import error_response, http_error_response, validation_error_response
from .config import ServiceConfig


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    config = config or ServiceConfig()
    gate = auth.Gate(config)  # first: a bad token file stops the server before anything starts

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs_routes.start(app)
        pool = app.state.batcher.pool
        try:
            if pool is not None:
                await pool.warm_up()
            yield
        finally:
            await run_in_threadpool(jobs_routes.stop, app)  # waits for the running job's chunk
            if pool is not None:
                await run_in_threadpool(pool.close)

    app = FastAPI(title="gradsvc", version=__version__, lifespan=lifespan,
                  description="Derivatives of formula graphs, verified: the HTTP door of gradsvc")
    app.state.config = config
    app.state.gate = gate
    app.state.metrics = metrics.ServiceMetrics(app)
    jobs_routes.open_queue(app)  # a --data folder in use or unwritable stops it here
    if config.token_file is None:  # open to its loopback port: not to other origins' pages
        app.add_middleware(guards.SameOrigin, host=config.host)
    app.add_middleware(guards.LastResort)  # a bug: logged, answered 500 in the error JSON
    app.add_middleware(metrics.RequestMetrics, metrics=app.state.metrics)  # outermost: counts all
    app.add_exception_handler(GradsvcError, error_response)
    app.add_exception_handler(HTTPException, http_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    needs_owner = [Depends(auth.authenticate)]

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app.include_router(run_routes.router, dependencies=needs_owner)
    app.include_router(jobs_routes.router, dependencies=needs_owner)
    app.include_router(views.router, dependencies=needs_owner)
    app.include_router(page.router)
    app.include_router(metrics.router)
    app.state.batcher = Batcher(config.batch_window_s, config.max_batch_points,
                                config.batch_request_max_points, read=run_routes.read_to_run,
                                finish=run_routes.run_json, metrics=app.state.metrics,
                                known=run_routes.known_to_run,
                                pool=ComputePool(config.processes, config.max_batch_points,
                                                 config.batch_request_max_points)
                                if config.processes else None)
    return app
