"""Who is asking, and how often: the dependency every /v1 route runs first.

It sets `request.state.owner`, the name jobs are filed under and limits are counted against, and
`request.state.limits`, that owner's `Limits`. Without a token file the owner is None: everyone
is one owner (and `gradsvc serve` listens on loopback only). With one (`--token-file`), every /v1
request needs `Authorization: Bearer <token>` (else 401), and its owner is the token's NAME: the
token itself is kept only as a digest, compared in constant time, and never shown.

A token file is YAML, read by the project's safe loader; each name maps to its token, or to its
token and its own limits (the others are ServiceConfig's):

    alice: 3f9c0a1e6b2d47c8a5e1
    ci:
      token: 9b7e55c0d1f24a6b8c3e
      requests_per_second: 5
      request_burst: 20

Rate: a token bucket per owner, in this app's memory: it refills at `requests_per_second` up to
`request_burst`; a request that finds it empty is a 429 with Retry-After.

Open without a token, on purpose: /healthz and /metrics (health probes and scrapers carry no
secret, and show no job), / and /docs (pages that ask for the token and send it with each call).
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import GradsvcError, Location, UsageError
from .body import RequestError
from .config import ServiceConfig

MIN_TOKEN_CHARS = 16  # shorter tokens can be guessed
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # an owner's name: safe in logs and files
_TOKEN_FILE_HINT = "a token file maps names to tokens, e.g. `alice: 3f9c0a1e6b2d47c8a5e1`"


@dataclass(frozen=True)
class Limits:
    max_queued_jobs: int  # jobs queued or running at once
    max_job_points: int  # points of one queued job
    requests_per_second: float | None  # sustained /v1 request rate; None: unlimited
    request_burst: int  # requests allowed at once above the sustained rate


def default_limits(config: ServiceConfig) -> Limits:
    return Limits(config.max_queued_jobs, config.max_job_points, config.requests_per_second,
                  config.request_burst)


@dataclass(frozen=True)
class Owner:
    name: str | None  # None: the one anonymous owner of a server without tokens
    limits: Limits
    digest: bytes = b""  # SHA-256 of the token


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


# --- the token file ---

def load_owners(path: Path, config: ServiceConfig) -> tuple[Owner, ...]:
    """The owners a token file names, each with its limits; a GradsvcError with the place of
    the first thing wrong (a server must not start with half its tokens)."""
    from ..job.source import load_yaml
    try:
        doc = load_yaml(_read_token_file(path), str(path))
    except GradsvcError as error:
        error.text = error.caret_col = None  # its line, shown under the message, may hold a token
        raise
    if not isinstance(doc.data, dict) or not doc.data:
        raise UsageError("the token file names no tokens", where=doc.where(()),
                         hint=_TOKEN_FILE_HINT)
    owners, seen = [], {}
    for name, entry in doc.data.items():
        owner = _owner(name, entry, doc, default_limits(config))
        if owner.digest in seen:  # the line, never the token
            raise _file_error(f"{name} has the same token as {seen[owner.digest]}", doc,
                              (name,), "every name needs a token of its own")
        seen[owner.digest] = name
        owners.append(owner)
    return tuple(owners)


def _read_token_file(path: Path) -> str:
    from .. import limits
    where = Location(str(path))
    try:
        if path.stat().st_size > limits.MAX_JOB_FILE_BYTES:
            raise UsageError("the token file is too large to be one", where=where,
                             hint=_TOKEN_FILE_HINT)
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read the token file: {error.strerror}", where=where,
                         hint="check the path given to --token-file") from None
    except UnicodeDecodeError:
        raise UsageError("the token file is not UTF-8 text", where=where,
                         hint=_TOKEN_FILE_HINT) from None
    if not text.strip():
        raise UsageError("the token file is empty", where=where, hint=_TOKEN_FILE_HINT)
    return text


def _file_error(message: str, doc, path: tuple, hint: str, key: bool = False) -> GradsvcError:
    # no `text=`: the offending line may hold a token, and the message is printed and logged
    return UsageError(message, where=doc.where(path, key=key), hint=hint)


def _owner(name: str, entry, doc, defaults: Limits) -> Owner:
    if not _NAME.fullmatch(name):
        raise _file_error(f"{name[:80]!r} is not a name for a token", doc, (name,),
                          "names are letters, digits, '_', '.' and '-', at most 64")
    if isinstance(entry, str):
        entry = {"token": entry}
    if not isinstance(entry, dict) or "token" not in entry:
        raise _file_error(f"{name} has no token", doc, (name,),
                          f"{_TOKEN_FILE_HINT}, or to {{token: ..., requests_per_second: ...}}")
    unknown = sorted(set(entry) - {"token", *_LIMIT_CHECKS})
    if unknown:
        raise _file_error(f"{name}: unknown setting {unknown[0]!r}", doc, (name, unknown[0]),
                          f"a token's settings are: token, {', '.join(_LIMIT_CHECKS)}", key=True)
    limits = replace(defaults, **{key: _limit(key, entry[key], doc, (name, key))
                                  for key in _LIMIT_CHECKS if key in entry})
    return Owner(name, limits, _digest(_token(entry["token"], doc, (name, "token"))))


def _token(token, doc, path: tuple) -> str:
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
        raise _file_error(f"{path[0]}'s token is shorter than {MIN_TOKEN_CHARS} characters",
                          doc, path, "make one with: python -c 'import secrets; "
                          "print(secrets.token_urlsafe(24))'")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise _file_error(f"{path[0]}'s token has a space or a character that is not "
                          "printable ASCII", doc, path, "a token travels in an HTTP header: "
                          "use letters, digits and -._~+/")
    return token


def _whole_at_least_1(value) -> bool:
    return type(value) is int and value >= 1


def _rate(value) -> bool:
    return value is None or (type(value) in (int, float) and 0 < value < math.inf)


_LIMIT_CHECKS = {  # each limit a token may set, and what it may be
    "max_queued_jobs": (_whole_at_least_1, "a whole number, at least 1"),
    "max_job_points": (_whole_at_least_1, "a whole number, at least 1"),
    "requests_per_second": (_rate, "a number above 0, or null for no limit"),
    "request_burst": (_whole_at_least_1, "a whole number, at least 1"),
}


def _limit(key: str, value, doc, path: tuple):
    accepts, words = _LIMIT_CHECKS[key]
    if not accepts(value):
        raise _file_error(f"{path[0]}: {key} is {value!r}", doc, path, f"{key} is {words}")
    return float(value) if key == "requests_per_second" and value is not None else value


# --- the rate of requests ---

class TokenBucket:
    """`burst` requests at once, refilled at `rate` a second (time from `time.monotonic`)."""

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, burst
        self.level, self.at = float(burst), now

    def take(self, now: float) -> float:
        """0 when a request may go now (it is counted), else the seconds until one may."""
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate


class Gate:
    """One app's owners and their buckets (made by `create_app`: a bad token file stops the
    server before it starts)."""

    def __init__(self, config: ServiceConfig):
        self.anonymous = Owner(None, default_limits(config))
        self.owners = load_owners(config.token_file, config) if config.token_file else None
        self.buckets: dict[str | None, TokenBucket] = {}

    def identify(self, token: str | None) -> Owner:
        """The token's owner (the anonymous one when there are no tokens), or a 401."""
        if self.owners is None:
            return self.anonymous
        if token is None:
            raise Unauthorized("this server needs a token")
        presented, found = _digest(token), None
        for owner in self.owners:  # every one compared: the time says nothing of which matched
            if hmac.compare_digest(owner.digest, presented):
                found = owner
        if found is None:
            raise Unauthorized("the token is not one this server knows", ', error="invalid_token"')
        return found

    def admit(self, owner: Owner, now: float) -> None:
        """Count a request against its owner's rate, or refuse it (429)."""
        rate = owner.limits.requests_per_second
        if rate is None:
            return
        bucket = self.buckets.get(owner.name)
        if bucket is None:
            bucket = self.buckets[owner.name] = TokenBucket(rate, owner.limits.request_burst, now)
        wait = bucket.take(now)
        if wait:
            raise RequestError(429, f"more than {rate:g} requests a second (a burst of "
                               f"{owner.limits.request_burst})", retry_after=wait,
                               hint="wait the seconds Retry-After says, then ask again")


class Unauthorized(RequestError):
    """A 401, with the challenge (RFC 6750) that says which scheme to answer with."""

    def __init__(self, message: str, challenge: str = ""):
        super().__init__(401, message, hint="send the header `Authorization: Bearer <token>` "
                         "with a token from the server's --token-file",
                         headers={"WWW-Authenticate": f'Bearer realm="gradsvc"{challenge}'})


_bearer = HTTPBearer(auto_error=False, description="a token from the server's --token-file "
                     "(only when it was started with one)")


async def authenticate(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    gate: Gate = request.app.state.gate
    owner = gate.identify(credentials.credentials if credentials else None)
    request.state.owner = owner.name
    request.state.limits = owner.limits
    gate.admit(owner, time.monotonic())
