"""``precomputed copy SRC DST``: transfer, re-encode, rechunk or reshard a volume.

Each copied scale is opened lazily with the xarray backend and written with
:func:`~xarray_precomputed.to_precomputed`, one scale after the other (finest
first), each with its own progress bar.
"""

from __future__ import annotations

import argparse
from typing import Any

import xarray as xr

from ..backend import open_info
from ..errors import InfoNotFoundError, VolumeExistsError
from ..metadata import VolumeInfo
from ..storage import Store
from .options import add_scheduler_options, add_write_options, dask_scheduler, json_object, region


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "copy", parents=parents, help="copy a volume between stores, changing its layout",
        description="Copy a volume (all scales or one) to another store, optionally "
        "re-encoding, rechunking, resharding or cropping it. Options not given keep the "
        "source's layout. --resume continues an interrupted copy: run the same command "
        "again with --resume and only missing or different objects are written.",
    )  # fmt: skip
    p.add_argument("src", help="source volume URL or path")
    p.add_argument("dst", help="destination volume URL or path")
    p.add_argument("--scale", default="all", metavar="all|INDEX|KEY",
                   help="which scale(s) to copy (default all)")  # fmt: skip
    add_write_options(p)
    p.add_argument("--region", type=region, default=None, metavar="X0:X1,Y0:Y1,Z0:Z1",
                   help="copy only these voxels (absolute coordinates of the first copied "
                   "scale; coarser scales copy the same physical box)")  # fmt: skip
    p.add_argument("--mode", default="w-", choices=("w-", "w", "a", "r+"),
                   help="w- create (default; fails if DST exists), w replace, a add the "
                   "scales to DST, r+ write into DST's existing scales")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted copy: scales already in DST are completed "
                   "in place, objects already stored with the same bytes are skipped")  # fmt: skip
    p.add_argument("--max-tasks", type=int, default=None, metavar="N",
                   help="write in waves of at most N shards, one graph each (for volumes "
                   "of millions of shards)")  # fmt: skip
    p.add_argument("--src-storage-options", type=json_object, default=None, metavar="JSON",
                   help="fsspec options for SRC (inline JSON or @file.json)")  # fmt: skip
    p.add_argument("--dst-storage-options", type=json_object, default=None, metavar="JSON",
                   help="fsspec options for DST (inline JSON or @file.json)")  # fmt: skip
    add_scheduler_options(p)
    p.set_defaults(run=run)


def scale_indices(info: VolumeInfo, which: str, url: str) -> list[int]:
    """The scale indices ``--scale`` selects: all, an index or a key."""
    if which == "all":
        return list(range(len(info.scales)))
    return [info.scale_index(int(which) if which.lstrip("-").isdigit() else which, url)]


def crop(ds: xr.Dataset, box_nm: list[tuple[float | None, float | None]]) -> xr.Dataset:
    """The voxels of ``ds`` whose centres lie in the physical box ``[lo, hi)`` per axis."""
    selection = {}
    for dim, (lo, hi) in zip("xyz", box_nm):
        centres = ds[dim].values
        keep = slice(
            None if lo is None else int((centres < lo).sum()),
            None if hi is None else int((centres < hi).sum()),
        )
        selection[dim] = keep
    out = ds.isel(selection)
    empty = [dim for dim in "xyz" if out.sizes[dim] == 0]
    if empty:
        raise argparse.ArgumentTypeError(
            f"--region selects no voxel along {', '.join(empty)} of scale "
            f"{ds.attrs.get('scale_key')}: its bounds are {_bounds(ds)}"
        )
    return out


def _bounds(ds: xr.Dataset) -> str:
    off, size = ds.attrs["voxel_offset"], ds.attrs["size"]
    return ",".join(f"{o}:{o + n}" for o, n in zip(off, size))


def write_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``to_precomputed`` from the shared write options."""
    sharding = args.sharding
    if args.shard_bytes is not None and sharding == "keep":
        sharding = "auto"
    options: dict[str, Any] = {
        "chunk_size": args.chunk_size,
        "encoding": args.encoding,
        "sharding": None if sharding == "none" else "auto" if sharding == "keep" else sharding,
    }
    if args.shard_bytes is not None:
        options["shard_bytes"] = args.shard_bytes
    return options


def forget_sharding(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without the attrs that make the writer keep the source's sharding."""
    out = ds.copy()
    for obj in (out, *out.data_vars.values()):
        for key in ("sharding", "url"):
            obj.attrs.pop(key, None)
    return out


def run(args: argparse.Namespace) -> int:
    store, info = open_info(args.src, args.src_storage_options)
    indices = scale_indices(info, args.scale, store.url)
    options = write_options(args)
    box_nm = None
    if args.region is not None:
        res = info.scales[indices[0]].resolution
        box_nm = [(None if lo is None else lo * r, None if hi is None else hi * r)
                  for (lo, hi), r in zip(args.region, res)]  # fmt: skip
    done_keys: set[str] = set()
    if args.resume:  # the scales an interrupted run already put in DST's info
        try:
            done_keys = {s.key for s in open_info(args.dst, args.dst_storage_options)[1].scales}
        except InfoNotFoundError:
            pass
    try:
        total = _copy_scales(args, store, indices, box_nm, done_keys, options)
    except VolumeExistsError as e:  # the library's advice names its arguments, not the flags
        raise VolumeExistsError(
            f"{e} (here: --mode w replaces DST, --mode a adds scales to it, --resume "
            "continues an interrupted copy)"
        ) from e
    if not args.quiet:
        print(
            f"copied {len(indices)} scale(s) of {store.url} to {args.dst}: {total} objects written"
        )
    return 0


def _copy_scales(
    args: argparse.Namespace,
    store: Store,
    indices: list[int],
    box_nm: list | None,
    done_keys: set[str],
    options: dict[str, Any],
) -> int:
    """Write each scale of ``indices`` to DST; returns the number of objects written."""
    from ..writer import to_precomputed

    total = 0
    with dask_scheduler(args.scheduler, args.workers, args.quiet):
        for n, index in enumerate(indices):
            ds = xr.open_dataset(store.url, engine="precomputed", scale=index, chunks={},
                                 storage_options=args.src_storage_options)  # fmt: skip
            if box_nm is not None:
                ds = crop(ds, box_nm)
            if args.sharding == "auto" or (
                args.shard_bytes is not None and args.sharding == "keep"
            ):
                ds = forget_sharding(ds)
            mode = args.mode if n == 0 or args.mode == "r+" else "a"
            if ds.attrs["scale_key"] in done_keys:
                mode = "r+"  # resuming: complete the scale in place
            elif done_keys and mode in ("w-", "w"):
                mode = "a"  # resuming: DST exists, this scale is not in it yet
            total += to_precomputed(
                ds, args.dst, mode=mode, region="auto" if mode == "r+" else None,
                resume=args.resume, storage_options=args.dst_storage_options,
                progress=not args.quiet, max_tasks=args.max_tasks, **options,
            )  # fmt: skip
    return total
