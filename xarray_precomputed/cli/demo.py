"""``precomputed demo``: the built-in example (see :mod:`xarray_precomputed.demo`)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from .options import int_triple


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", parents=parents, help="write, reopen and analyse a synthetic EM volume",
        description="Synthesise an EM-like image and its segmentation (no network needed), "
        "write both as sharded multiscale volumes, reopen them lazily and compute per-label "
        "statistics with Dask.",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="directory (default: a temp dir)")
    p.add_argument("--size", type=int_triple, default=(384, 384, 64), metavar="X,Y,Z",
                   help="volume shape in voxels (default 384,384,64)")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run as run_demo  # dask: imported when the demo runs

    out = args.out or Path(tempfile.mkdtemp(prefix="xarray-precomputed-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    r = run_demo(out.absolute(), args.size)
    print(f"Wrote a synthetic EM image and segmentation in {r['write_s']:.1f} s:")
    print(f"  image (jpeg, sharded):                           {r['image_url']}")
    print(f"  segmentation (compressed_segmentation, sharded): {r['segmentation_url']}")
    print("  scales: " + ", ".join(f"{k} {s}" for k, s in r["scales"]))
    print(f"  {r['shards']} shard files in the finest scale")
    print(f"Reopened lazily and computed with Dask: {r['labels']} labels; the largest:")
    print("  label id              voxels   mean intensity")
    for label, count, mean in r["top"]:
        print(f"  {label:<20d} {count:>8d}   {mean:8.1f}")
    print(f"  {100 * r['dark_fraction']:.1f}% of voxels are membrane-dark (< 100)")
    print("Open them with:")
    print("  import xarray as xr")
    print(f"  ds = xr.open_dataset({r['image_url']!r}, engine='precomputed', chunks={{}})")
    print(f"  tree = xr.open_datatree({r['segmentation_url']!r}, engine='precomputed')")
    print(f"Look at them in Neuroglancer: precomputed serve {out.absolute()}")
    print(f"Done in {r['total_s']:.1f} s.")
    return 0
