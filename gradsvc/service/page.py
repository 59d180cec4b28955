"""GET /: the web page (static/index.html) and GET /static/{name}: its script and style sheet.

The page is three plain files shipped in the package (no build step); it asks the /v1 routes
for everything it shows. Only the files named in STATIC are served, so no path reaches beyond
them. A Content-Security-Policy lets the page load its own files and nothing else: no inline
script, no other origin (the pictures come as blob: URLs).
"""
from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from .body import RequestError

STATIC = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-cache"}

router = APIRouter()


@cache
def static_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


@router.get("/", response_class=HTMLResponse)
async def page() -> Response:
    """The page: write or paste a job, see its problems as you type, run it, and see its table,
    graph, plot and explanation; or queue it as a batch job and watch its progress."""
    return HTMLResponse(static_file("index.html"), headers=HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    if name not in STATIC:
        raise RequestError(404, f"the page has no file '{name}'",
                           hint=f"its files are: {', '.join(STATIC)}")
    return Response(static_file(name), media_type=STATIC[name], headers=HEADERS)
