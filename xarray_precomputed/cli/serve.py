"""``precomputed serve PATH``: local volumes over HTTP, for Neuroglancer and remote readers.

Static files with byte ranges (sharded volumes are read by range) and CORS
headers (Neuroglancer runs on another origin), served by aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ..neuroglancer import neuroglancer_url

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Content-Type",
    "Access-Control-Expose-Headers": "Content-Range, Content-Length, Accept-Ranges, ETag",
    "Access-Control-Max-Age": "3600",
}


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", parents=parents, help="serve local volumes over HTTP for Neuroglancer",
        description="Serve the files under PATH over HTTP with byte ranges and CORS, print "
        "the URL of every volume found (PATH itself or directories below it holding an "
        "'info' file) and a Neuroglancer link showing them. Stop with Ctrl-C. Binds to "
        "127.0.0.1 unless --bind says otherwise: anyone who can reach the port can read PATH.",
    )  # fmt: skip
    p.add_argument("path", type=Path, help="directory to serve")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default=None, help="Neuroglancer deployment for the printed link")
    p.set_defaults(run=run)


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


def find_volumes(root: Path, depth: int = 3) -> list[Path]:
    """``root`` and directories below it (``depth`` levels) that hold an ``info`` file,
    not looking inside a volume."""
    if (root / "info").is_file():
        return [root]
    found: list[Path] = []
    if depth == 0:
        return found
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except PermissionError:
        return found
    for child in children:
        found += find_volumes(child, depth - 1)
    return found


async def _serve(root: Path, bind: str, port: int, host: str | None, quiet: bool) -> None:
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


def run(args: argparse.Namespace) -> int:
    root = args.path.expanduser().absolute()
    if not root.is_dir():
        raise argparse.ArgumentTypeError(f"{root} is not a directory")
    asyncio.run(_serve(root, args.bind, args.port, args.host, args.quiet))
    return 0
