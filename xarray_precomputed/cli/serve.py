"""``precomputed serve PATH``: local volumes over HTTP, for Neuroglancer and remote readers.

Static files with byte ranges (sharded volumes are read by range) and CORS
headers (Neuroglancer runs on another origin), served by aiohttp (``serve_app``, imported
when the server starts: aiohttp takes ~0.3 s to import, which other commands need not pay).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

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


def run(args: argparse.Namespace) -> int:
    root = args.path.expanduser().absolute()
    if not root.is_dir():
        raise argparse.ArgumentTypeError(f"{root} is not a directory")
    from .serve_app import serve

    asyncio.run(serve(root, args.bind, args.port, args.host, args.quiet))
    return 0
