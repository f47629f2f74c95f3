"""A fault-injecting reverse proxy on loopback, for the retry tests.

``FaultProxy(upstream_url)`` forwards every request to ``upstream_url`` (moto, fake-gcs-server,
the aiohttp static server) unless a fault is queued. Faults are consumed one per request:

``"503"`` (any digits)   answer with that HTTP status and a short body;
``"reset"``              drop the connection without an answer;
``"stall:<seconds>"``    wait, then forward (for deadline tests).

``always`` (a fault or ``None``) applies once the queue is empty. ``methods`` (e.g.
``{"PUT", "POST"}``) limits the faults to requests with those methods; others are forwarded.
Every request's method, raw path and headers are recorded in ``seen``, faulted or not.
"""

from __future__ import annotations

import asyncio
import collections

from . import servers


class FaultProxy(servers._ReverseProxy):
    def __init__(self, upstream_url: str) -> None:
        self.faults: collections.deque[str] = collections.deque()
        self.always: str | None = None
        self.methods: frozenset[str] | None = None
        self.seen: list[tuple[str, str, dict[str, str], str]] = []  # + the fault or "ok"
        super().__init__(servers.RequestLog(), "fault-proxy")
        self.upstream = upstream_url

    def inject(
        self, *faults: str, always: str | None = None, methods: set[str] | None = None
    ) -> None:
        self.faults.clear()
        self.faults.extend(faults)
        self.always = always
        self.methods = frozenset(methods) if methods is not None else None
        self.seen.clear()

    def injected(self) -> list[str]:
        return [f for *_, f in self.seen if f != "ok"]

    async def _handle(self, request):
        from aiohttp import web

        fault = None
        if self.methods is None or request.method in self.methods:
            fault = self.faults.popleft() if self.faults else self.always
        self.seen.append((request.method, request.raw_path, dict(request.headers), fault or "ok"))
        if fault is None:
            return await super()._handle(request)
        if fault.isdigit():
            return web.Response(status=int(fault), text=f"injected {fault}")
        if fault == "reset":
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to send on a dropped connection
        if fault.startswith("stall:"):
            await asyncio.sleep(float(fault.split(":", 1)[1]))
            return await super()._handle(request)
        raise ValueError(f"unknown fault {fault!r}")
