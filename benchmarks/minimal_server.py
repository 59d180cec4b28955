"""The peer of the service benchmark (benchmarks/service_bench.py): a minimal hand-written FastAPI
server around a pre-jitted `jax.value_and_grad` of the seed job's function (jobs/seed_chain.yaml:
c = a*b, e = c*d), in float64 as gradsvc's default is.

    POST /grad  {"a": 2, "b": 3, "d": 4}  ->  {"e": 24.0, "grads": {"a": 12.0, "b": 8.0, "d": 6.0}}
    GET /healthz                          ->  {"status": "ok"}

    python benchmarks/minimal_server.py --port 8001
"""
from __future__ import annotations

import argparse

import jax
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

jax.config.update("jax_enable_x64", True)  # this script is the whole program: its config is its own


def seed_chain(a, b, d):
    c = a * b
    return c * d


value_and_grads = jax.jit(jax.value_and_grad(seed_chain, argnums=(0, 1, 2)))
value_and_grads(2.0, 3.0, 4.0)  # compiled before the first request

app = FastAPI(title="minimal jax.grad server")


class Point(BaseModel):
    a: float
    b: float
    d: float


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


# async, not a worker thread: one call takes tens of microseconds, less than a thread hand-off
@app.post("/grad")
async def grad(point: Point) -> dict:
    e, (de_da, de_db, de_dd) = value_and_grads(point.a, point.b, point.d)
    return {"e": float(e), "grads": {"a": float(de_da), "b": float(de_db), "d": float(de_dd)}}


def main() -> None:
    parser = argparse.ArgumentParser(description="a minimal jax.grad server (the bench's peer)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
