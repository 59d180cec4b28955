"""The HTTP service: `create_app(config)` is the ASGI app `gradsvc serve` runs on uvicorn.

Routes (a contract: clients and tests rely on them; OpenAPI at /openapi.json and /docs):
  GET  /healthz       200 {"status": "ok"} once the app is up
  POST /v1/run        a job as YAML (application/yaml, text/plain) or JSON (application/json)
                      -> 200 with the object `gradsvc run --format json` prints
  POST /v1/validate   the same body -> 200 with what `gradsvc validate` says of it

Every user error is a 4xx with one JSON object, `{"error": {"message", "line", "col", "hint"}}`
(see body.py): 422 for a job that is wrong or too big to run synchronously, 413 for a body over
MAX_BODY_BYTES (refused before it is read whole), 415 for a body that is neither YAML nor JSON.
A job sent here reads no data files (the server's files are not the sender's). Jobs run in worker
threads: the event loop keeps serving other requests.

Each part of the service is a module of this folder with its router and, where it keeps
something running, a start and a stop called from `lifespan` here.
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from .. import __version__
from ..errors import GradsvcError
from . import auth, run_routes
from .batcher import Batcher
from .body import error_response
from .config import ServiceConfig


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    config = config or ServiceConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield

    app = FastAPI(title="gradsvc", version=__version__, lifespan=lifespan,
                  description="Derivatives of formula graphs, verified: the HTTP door of gradsvc")
    app.state.config = config
    app.add_exception_handler(GradsvcError, error_response)
    needs_owner = [Depends(auth.authenticate)]

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app.include_router(run_routes.router, dependencies=needs_owner)
    app.state.batcher = Batcher(config.batch_window_s, config.max_batch_points,
                                config.batch_request_max_points,
                                metrics=getattr(app.state, "metrics", None))
    return app
