"""``precomputed downsample URL``: add coarser scales to a volume.

Each new scale is computed from the previous one as written to storage (not from
the full-resolution data again), like a pyramid built level by level.
"""

from __future__ import annotations

import argparse
from typing import Any

import xarray as xr

from ..backend import open_info
from ..pyramid import METHODS
from .copy import forget_sharding, scale_indices, write_options
from .options import (
    add_scheduler_options,
    add_write_options,
    dask_scheduler,
    int_triple,
    json_object,
)


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "downsample", parents=parents, help="add downsampled scales to a volume",
        description="Add LEVELS scales to a volume, each downsampled by FACTORS from the "
        "previous one, starting from the coarsest existing scale (or --from). New scales keep "
        "the source scale's chunk size and encoding unless told otherwise, with auto sharding.",
    )  # fmt: skip
    p.add_argument("url", help="volume URL or path")
    p.add_argument("--factors", type=int_triple, default=(2, 2, 1), metavar="X,Y,Z",
                   help="downsampling factors per level (default 2,2,1)")  # fmt: skip
    p.add_argument("--levels", type=int, default=1, metavar="N",
                   help="number of scales to add (default 1)")  # fmt: skip
    p.add_argument("--method", choices=METHODS, default=None,
                   help="mean for images, mode (most frequent label) for segmentations "
                   "(the default follows the volume's type)")  # fmt: skip
    p.add_argument("--from", dest="source_scale", default="-1", metavar="INDEX|KEY",
                   help="scale to start from (default: the coarsest)")  # fmt: skip
    add_write_options(p)
    p.add_argument("--storage-options", type=json_object, default=None, metavar="JSON",
                   help="fsspec options (inline JSON or @file.json)")  # fmt: skip
    add_scheduler_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..pyramid import downsample
    from ..writer import to_precomputed

    if args.levels < 1:
        raise argparse.ArgumentTypeError(f"--levels must be at least 1, got {args.levels}")
    store, info = open_info(args.url, args.storage_options)
    if args.source_scale == "-1":
        index = len(info.scales) - 1
    else:
        index = scale_indices(info, args.source_scale, store.url)[0]
    options = write_options(args)
    added = []
    with dask_scheduler(args.scheduler, args.workers, args.quiet):
        for _ in range(args.levels):
            ds = xr.open_dataset(store.url, engine="precomputed", scale=index, chunks={},
                                 storage_options=args.storage_options)  # fmt: skip
            smaller = forget_sharding(downsample(ds, args.factors, args.method))
            to_precomputed(smaller, store.url, mode="a", storage_options=args.storage_options,
                           progress=not args.quiet, **options)  # fmt: skip
            _, info = open_info(store.url, args.storage_options)
            index = len(info.scales) - 1  # mode "a" appends the new scale
            added.append(info.scales[index])
    if not args.quiet:
        for s in added:
            size = "x".join(str(n) for n in s.size)
            print(f"added scale {s.key}: {size} voxels")
    return 0
