"""Who is asking: the dependency every /v1 route runs first. It sets `request.state.owner`, the
name jobs are filed under and limits are counted against (None: no tokens are configured, and
everyone is one owner)."""
from __future__ import annotations

from fastapi import Request


async def authenticate(request: Request) -> None:
    request.state.owner = None
