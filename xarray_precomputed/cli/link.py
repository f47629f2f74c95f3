"""``precomputed link URL...``: print a Neuroglancer URL showing the volumes."""

from __future__ import annotations

import argparse
from typing import Any

from ..neuroglancer import DEFAULT_HOST, HOST_VARIABLE, neuroglancer_url
from .options import json_object


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "link", parents=parents, help="print a Neuroglancer URL showing volumes",
        description="Print a Neuroglancer URL with one layer per volume (image or "
        "segmentation, from the volume's type), centred on the first volume. Volumes must be "
        "reachable from the browser (gs://, s3://, http(s)://); serve local ones with "
        "`precomputed serve DIR` first.",
    )  # fmt: skip
    p.add_argument("urls", nargs="+", metavar="URL", help="volume URLs")
    p.add_argument("--host", default=None,
                   help=f"Neuroglancer deployment (default ${HOST_VARIABLE}, else {DEFAULT_HOST})")  # fmt: skip
    p.add_argument("--layout", default="4panel",
                   help="xy, yz, xz, 3d, 4panel (default) or xy-3d, ...")  # fmt: skip
    p.add_argument("--storage-options", type=json_object, default=None, metavar="JSON",
                   help="fsspec options for reading the volumes' info")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(neuroglancer_url(*args.urls, host=args.host, layout=args.layout,
                           storage_options=args.storage_options))  # fmt: skip
    return 0
