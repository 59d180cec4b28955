"""What one `gradsvc serve` process is set up with: `ServiceConfig`, made by the CLI from its
options and by tests directly. Numbers that shape the service's behaviour (the batching window,
limits) are configuration here, not constants in the code that uses them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # the durable queue (SQLite) and the queued jobs' result stores; None: a temporary folder
    # that lives as long as the process (nothing survives a restart)
    data: Path | None = None
    token_file: Path | None = None  # bearer tokens; None: every /v1 route is open (loopback only)
    executor: str = "local"  # where queued jobs run: "local" (this process) or "dask"
    workers: int | None = None  # --executor dask: a LocalCluster of this many workers
    scheduler: str | None = None  # --executor dask: a running scheduler's address
    # dynamic batching of /v1/run: how long the first request to an idle batcher waits for others;
    # under load requests gather while a call runs, so waiting more only adds latency (measured:
    # benchmarks/README.md, "The service")
    batch_window_s: float = 0.0
    max_batch_points: int = 4096  # points in one batched call, at most
    processes: int = 0  # compute processes for /v1/run's Python work; 0: this process's threads
    batch_request_max_points: int = 256  # a request with more points runs on its own
    body_timeout_s: float = 30.0  # a request's whole body must arrive within this (else 408)
    # per owner (a token, or everyone when there are none); a token file may set its own
    max_queued_jobs: int = 100  # jobs queued or running at once
    max_job_points: int = 10**10  # points of one queued job
    requests_per_second: float | None = None  # sustained /v1 request rate; None: unlimited
    request_burst: int = 100  # requests allowed at once above the sustained rate
