"""GET /metrics: the service's numbers as Prometheus text, from a registry of this app's own
(never prometheus_client's global REGISTRY: two apps in one process keep their own counts).

  gradsvc_requests_total{method,route,status}   answers sent
  gradsvc_request_seconds{route}                time until an answer's status was sent
  gradsvc_queue_depth                           jobs of the durable queue queued or running
  gradsvc_kernels_made_total{source}            kernels this process compiled, or loaded from
                                                the executable cache
  gradsvc_kernels_kept                          compiled kernels held in memory now
  gradsvc_batch_requests, gradsvc_batch_points  the dynamic batcher's calls (histograms)
  gradsvc_points_total, gradsvc_compute_seconds_total, gradsvc_points_per_second

`route` is the route's TEMPLATE (`/v1/jobs/{job_id}`), never the path asked for: one series per
route whatever ids clients send (`<unmatched>` for a path no route has). A streamed answer
(Server-Sent Events) is timed until it starts, and passes through untouched.

Whoever computes points reports them: the batcher calls `observe_batch(requests, points)` per
batched call, and a route or the queue's runner calls `observe_points(points, seconds)` when it
has computed `points` grid points in `seconds`.
"""
from __future__ import annotations

import importlib
import sys
import threading
import time
from collections import Counter as Tally, deque

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

RATE_WINDOW_S = 10.0  # points/s is the points computed over this many recent seconds
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}  # others: "other"
_LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
_COUNT_BUCKETS = tuple(2 ** k for k in range(13))  # 1 .. 4096: requests of a call
_POINT_BUCKETS = tuple(8 ** k for k in range(9))  # 1 .. 16.8 M: points of a call


class ServiceMetrics:
    """One app's metrics (`app.state.metrics`)."""

    def __init__(self, app):
        self.registry = CollectorRegistry()
        self.requests = Counter("gradsvc_requests", "HTTP answers sent, by route template",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("gradsvc_request_seconds", "time until an answer's status was "
                                 "sent (a stream: until it started)", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("gradsvc_batch_requests", "requests in one batched call",
                                        buckets=_COUNT_BUCKETS, registry=self.registry)
        self.batch_points = Histogram("gradsvc_batch_points", "grid points in one batched call",
                                      buckets=_POINT_BUCKETS, registry=self.registry)
        self.points = Counter("gradsvc_points", "grid points computed", registry=self.registry)
        self.compute_seconds = Counter("gradsvc_compute_seconds", "seconds spent computing them",
                                       registry=self.registry)
        self._recent: deque[tuple[float, int]] = deque()  # (when, points), for points/s
        self._recent_lock = threading.Lock()  # threads of the runner and of routes report
        self.registry.register(_LiveNumbers(app, self))

    def observe_batch(self, requests: int, points: int) -> None:
        """One batched call of the dynamic batcher: how many requests, how many points."""
        self.batch_requests.observe(requests)
        self.batch_points.observe(points)

    def observe_points(self, points: int, seconds: float) -> None:
        """`points` grid points computed in `seconds`."""
        self.points.inc(points)
        self.compute_seconds.inc(seconds)
        now = time.monotonic()
        with self._recent_lock:
            self._forget_before(now - RATE_WINDOW_S)  # kept short even if nobody scrapes
            self._recent.append((now, points))

    def points_per_second(self) -> float:
        """The points computed over the last RATE_WINDOW_S, a second."""
        with self._recent_lock:
            self._forget_before(time.monotonic() - RATE_WINDOW_S)
            return sum(points for _, points in self._recent) / RATE_WINDOW_S

    def _forget_before(self, moment: float) -> None:
        while self._recent and self._recent[0][0] < moment:
            self._recent.popleft()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _LiveNumbers:
    """Numbers read when scraped, from where they live: the queue, the engine's kernels."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    def collect(self):
        rate = GaugeMetricFamily("gradsvc_points_per_second", f"grid points computed a second, "
                                 f"over the last {RATE_WINDOW_S:g} s")
        rate.add_metric([], self.metrics.points_per_second())
        yield rate
        yield from _queue_depth(getattr(self.app.state, "queue", None))
        yield from _kernels(getattr(getattr(self.app.state, "batcher", None), "pool", None))


def _queue_depth(queue):
    """Jobs queued or running, everyone's (`JobQueue.active_total`); nothing while the app has
    no queue."""
    active_total = getattr(queue, "active_total", None)
    if active_total is None:
        return
    depth = GaugeMetricFamily("gradsvc_queue_depth", "jobs queued or running, everyone's")
    depth.add_metric([], active_total())
    yield depth


JAX_BACKEND = "gradsvc.engine.jax_backend"


def _kernels(pool):
    """From the JAX backend if this process has loaded it (a scrape never imports JAX), and
    from the compute processes' last answers (`compute.ComputePool.kernels`)."""
    # the runner's thread imports the engine at start: a module still being imported is in
    # sys.modules half made, and import_module waits for that import to finish
    backend = (importlib.import_module(JAX_BACKEND) if JAX_BACKEND in sys.modules else None)
    made = CounterMetricFamily("gradsvc_kernels_made", "kernels this service's processes made, "
                               "by where from: compiled, or loaded from the executable cache",
                               labels=["source"])
    kept = GaugeMetricFamily("gradsvc_kernels_kept", "compiled kernels held in memory")
    counts = Tally(dict(backend.KERNELS_MADE) if backend else {})
    held = backend.kernels_kept() if backend else 0
    for made_there, kept_there in (pool.kernels.values() if pool is not None else ()):
        counts.update(made_there)
        held += kept_there
    for source in sorted({"compiled", "executable cache", *counts}):
        made.add_metric([source], counts.get(source, 0))
    kept.add_metric([], held)
    yield made
    yield kept


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP answer by its route's template. Plain
    ASGI (not BaseHTTPMiddleware): a streamed body passes through as it is sent."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), [None]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self._observe(scope, status[0], time.perf_counter() - began)
            await send(message)
        try:
            await self.app(scope, receive, send_and_note)
        except Exception:  # (a cancelled request, a client gone, is no answer: not counted)
            if status[0] is None:  # it failed before answering: what the client gets
                self._observe(scope, 500, time.perf_counter() - began)
            raise

    def _observe(self, scope, status: int, seconds: float) -> None:
        route = _route_template(scope)
        method = scope["method"] if scope["method"] in _METHODS else "other"
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)


def _route_template(scope) -> str:
    """The template of the route that took the request: routing notes a FastAPI route in the
    scope; others of the app's own (/docs, /openapi.json) are found again; else <unmatched>."""
    noted = getattr(scope.get("route"), "path", None)
    if noted:
        return noted
    for route in scope["app"].router.routes:
        if getattr(route, "path", None) and route.matches(scope)[0] is not Match.NONE:
            return route.path
    return "<unmatched>"


router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text; open without a token, for scrapers (it shows no job and no owner)."""
    text = await run_in_threadpool(request.app.state.metrics.text)  # the queue's count is SQL
    return Response(text, media_type=CONTENT_TYPE_LATEST)
