"""The aiohttp server behind ``precomputed serve``: static files with ranges and CORS."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ..neuroglancer import neuroglancer_url
from .serve import CORS_HEADERS, find_volumes


@web.middleware
async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
    """CORS headers on every answer, and the answer to preflight requests."""
    if request.method == "OPTIONS":
        headers = dict(CORS_HEADERS)
        if request.headers.get("Access-Control-Request-Private-Network"):
            headers["Access-Control-Allow-Private-Network"] = "true"  # Chrome, https page
        return web.Response(status=204, headers=headers)
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(CORS_HEADERS)
        raise
    response.headers.update(CORS_HEADERS)
    return response


def make_app(root: Path) -> web.Application:
    """The aiohttp application serving ``root``."""
    app = web.Application(middlewares=[cors])
    app.router.add_static("/", root, show_index=True, follow_symlinks=False)
    return app


async def serve(root: Path, bind: str, port: int, host: str | None, quiet: bool) -> None:
    runner = web.AppRunner(make_app(root), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind, port)
    await site.start()
    actual = runner.addresses[0][1]
    shown = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    base = f"http://{shown}:{actual}"
    print(f"serving {root} at {base}/ (Ctrl-C stops)", flush=True)
    volumes = find_volumes(root)
    rels = [v.relative_to(root).as_posix() for v in volumes]
    urls = [base if rel == "." else f"{base}/{rel}" for rel in rels]
    if not quiet:
        for u in urls:
            print(f"  volume: {u}", flush=True)
        if urls:
            try:  # reads each info from this server: in a thread, so the loop answers
                link = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: neuroglancer_url(*urls, host=host)
                )
            except Exception as e:  # an info that does not parse: still serve the files
                print(f"  (no Neuroglancer link: {e})", flush=True)
            else:
                print(f"Neuroglancer: {link}", flush=True)
        else:
            print("  (no volume found: no 'info' file in PATH or the directories below it)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill: stop cleanly, exit 0
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    print("stopped", file=sys.stderr)
