"""Two plain ASGI middlewares (not BaseHTTPMiddleware: a streamed body passes through as it is
sent) that answer around the routes, in the error JSON of body.py:

`SameOrigin`, for a server without tokens (open to whoever reaches its loopback port): a browser
would let any page its user visits POST a text/plain job here (no preflight) and, by DNS
rebinding, read the answers. So a request whose Host is not one of this server's loopback names
is refused (400), and so is one whose Origin header (browsers send it on cross-origin requests
and on every POST) is not this server's own origin (403). Clients that are not browsers send no
Origin; the page at / is this origin's.

`LastResort`: any exception a route let escape (a bug) is logged with its traceback and answered
500 with the error JSON, its details kept out of the body (they may name the server's files).
"""
from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from .body import RequestError, error_body

log = logging.getLogger("gradsvc.service")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def host_name(host: str) -> str:
    """A Host header's name without its port: `[::1]:8000` -> `[::1]`, `a:80` -> `a`."""
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameOrigin:
    def __init__(self, app, host: str):
        """`host`: the address the server listens on (--host), a name it may be asked by."""
        self.app = app
        self.hosts = {*LOOPBACK_NAMES, host.lower(), f"[{host.lower()}]"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if host_name(host.lower()) not in self.hosts:
            return await _refuse(scope, receive, send, RequestError(
                400, f"this server is not {host[:100]!r}",
                hint="ask it by the address it listens on (127.0.0.1 or localhost)"))
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope['scheme']}://{host}".lower():
            return await _refuse(scope, receive, send, RequestError(
                403, f"requests from the web page of {origin[:100]!r} are refused",
                hint="a server without --token-file serves only its own page and clients that "
                "are not browsers; give the server a --token-file to serve others"))
        await self.app(scope, receive, send)


async def _refuse(scope, receive, send, error: RequestError) -> None:
    await JSONResponse(error_body(error), status_code=error.status)(scope, receive, send)


class LastResort:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_and_note(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, send_and_note)
        except Exception as error:
            log.exception("internal error answering %s %s", scope["method"], scope["path"][:200])
            if started:  # too late for another answer: the connection is cut short
                raise
            await _refuse(scope, receive, send, RequestError(
                500, f"internal error: {type(error).__name__} (the server's log has its details)",
                hint="this is a bug in gradsvc; please report it with the request that caused "
                "it"))
