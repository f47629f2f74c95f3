"""Retrying remote requests: which failures are transient, backoff with jitter, bounds.

Object stores answer with 429/5xx under load and connections get reset; such a request
is worth repeating after a pause that grows exponentially (with full jitter, so that many
workers do not retry in lockstep). Everything else (404, 403, bad requests) is final.
An endpoint that was never reached (refused connection, unknown host, connect timeout) is
given up on quickly, since that usually means a wrong URL or no network.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, fields, replace
from typing import Any

# Statuses worth another attempt (request timeout, throttling, server-side failures).
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# Exception class names (matched along the MRO and the cause chain, so that aiohttp and
# botocore need not be imported here) by what they mean.
_UNREACHABLE = frozenset({
    "ClientConnectorError", "ClientConnectorDNSError", "ConnectionRefusedError",
    "EndpointConnectionError", "ConnectTimeoutError", "ConnectionTimeoutError",
    "gaierror",
})  # fmt: skip
_TRANSIENT = frozenset({
    "TimeoutError", "FSTimeoutError", "ServerDisconnectedError", "ClientPayloadError",
    "ConnectionResetError", "ClientOSError", "ReadTimeoutError", "ResponseStreamingError",
    "IncompleteRead", "ServerTimeoutError", "SocketTimeoutError", "ConnectionClosedError",
    "BrokenPipeError", "ProtocolError", "ContentLengthError", "IncompleteReadError",
    "ProxyError",  # gcsfs's answer to a 502
})  # fmt: skip


# A connection made and then broken: transient even when a client reports it as a failed
# connection (aiobotocore turns a reset while a PUT's body is sent into
# EndpointConnectionError).
_BROKEN = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_BROKEN_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one request is retried.

    ``attempts`` bounds the tries per request (1: no retries), ``timeout`` the seconds one
    request may take in total, retries and pauses included. Pause ``n`` (from 0) is drawn
    uniformly from ``[0, min(max_backoff, backoff * 2**n)]``. An endpoint not reached yet
    is given up on after ``connect_timeout`` seconds.

    Pass it (or a dict of its fields) as ``storage_options={"retry": ...}``:

    >>> RetryPolicy.from_option({"attempts": 3, "timeout": 30})
    RetryPolicy(attempts=3, backoff=0.1, max_backoff=5.0, timeout=30.0, connect_timeout=5.0)
    >>> RetryPolicy.from_option(False).attempts
    1
    """

    attempts: int = 8
    backoff: float = 0.1
    max_backoff: float = 5.0
    timeout: float = 120.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if int(self.attempts) < 1:
            raise ValueError(f"retry attempts must be at least 1, not {self.attempts!r}")
        for f in ("backoff", "max_backoff", "timeout", "connect_timeout"):
            if not float(getattr(self, f)) >= 0:
                raise ValueError(f"retry {f} must be a number >= 0, not {getattr(self, f)!r}")

    @classmethod
    def from_option(cls, value: Any) -> RetryPolicy:
        """A policy from ``None`` (defaults), ``False`` (no retries), a dict or a policy."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(attempts=1)
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown retry option(s) {unknown}; known: {sorted(known)}")
            p = replace(cls(), **value)
            return replace(p, attempts=int(p.attempts), timeout=float(p.timeout),
                           connect_timeout=float(p.connect_timeout))  # fmt: skip
        raise TypeError(
            f"storage_options['retry'] must be a dict, bool or RetryPolicy, not {value!r}"
        )

    def pause(self, n: int) -> float:
        """Seconds to wait before retry ``n`` (0-based), with full jitter."""
        return random.uniform(0.0, min(self.max_backoff, self.backoff * (2.0**n)))


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out and len(out) < 8:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an exception from aiohttp, botocore, s3fs or gcsfs, if any."""
    for e in _chain(exc):
        for attr in ("status", "code", "status_code"):
            v = getattr(e, attr, None)
            if isinstance(v, int) and 100 <= v < 600:
                return v
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            v = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(v, int):
                return v
    return None


def classify(exc: BaseException) -> str:
    """``"transient"``, ``"unreachable"`` (no connection made) or ``"final"``."""
    if isinstance(exc, FileNotFoundError):
        return "final"
    status = status_of(exc)
    if status is not None:
        return "transient" if status in TRANSIENT_STATUS else "final"
    chain = _chain(exc)
    if any(isinstance(e, _BROKEN) or getattr(e, "errno", None) in _BROKEN_ERRNOS for e in chain):
        return "transient"
    names = {c.__name__ for e in chain for c in type(e).__mro__}
    if names & _UNREACHABLE:
        return "unreachable"
    if names & _TRANSIENT:
        return "transient"
    text = str(exc)
    if "SlowDown" in text or "reduce your request rate" in text:
        return "transient"
    return "final"


def describe(exc: BaseException) -> str:
    """A one-line description: the HTTP status when there is one, else the exception."""
    status = status_of(exc)
    msg = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if len(msg) > 300:
        msg = msg[:300] + "..."
    return f"HTTP {status} ({msg})" if status is not None else msg
