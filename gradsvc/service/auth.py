"""Who is asking: the dependency every /v1 route runs first. It sets `request.state.owner`, the
name jobs are filed under and limits are counted against (None: no tokens are configured, and
everyone is one owner), and `request.state.limits`, that owner's `Limits`."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from .config import ServiceConfig


@dataclass(frozen=True)
class Limits:
    max_queued_jobs: int  # jobs queued or running at once
    max_job_points: int  # points of one queued job
    requests_per_second: float | None  # sustained /v1 request rate; None: unlimited
    request_burst: int  # requests allowed at once above the sustained rate


def default_limits(config: ServiceConfig) -> Limits:
    return Limits(config.max_queued_jobs, config.max_job_points, config.requests_per_second,
                  config.request_burst)


async def authenticate(request: Request) -> None:
    request.state.owner = None
    request.state.limits = default_limits(request.app.state.config)
