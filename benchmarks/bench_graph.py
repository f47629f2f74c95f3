"""Building the write graph for petascale inputs: tasks, build time and client memory.

    python benchmarks/bench_graph.py            # 0.27, 1.1 and 4.4 TB lazy uint8 inputs
    python benchmarks/bench_graph.py --sizes 8192,8192,4096

``to_precomputed(..., compute=False)`` on a lazy ``dask.array.zeros`` input (chunks
1024 x 1024 x 256, 64^3 storage chunks, ``sharding="auto"``): nothing is read or written
but the ``info``. Build time should grow linearly with the number of shards.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc

import dask.array as da
import numpy as np
import xarray as xr

import xarray_precomputed as xp

DEFAULT = ["8192,8192,4096", "16384,16384,4096", "32768,32768,4096"]


def measure(shape: list[int]) -> dict:
    arr = da.zeros([*shape, 1], dtype=np.uint8, chunks=(1024, 1024, 256, 1))
    a = xr.DataArray(arr, dims=("x", "y", "z", "channel"), name="image")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        xp.to_precomputed(a, d + "/v", chunk_size=(64, 64, 64), sharding="auto",
                          resolution=(8, 8, 40), compute=False)  # fmt: skip
        seconds = time.perf_counter() - t0
        tracemalloc.start()
        delayed = xp.to_precomputed(a, d + "/w", chunk_size=(64, 64, 64), sharding="auto",
                                    resolution=(8, 8, 40), compute=False)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    keys = [k[0] if isinstance(k, tuple) else k for k in delayed.__dask_graph__().keys()]
    tasks = sum(1 for k in keys if str(k).startswith("to-precomputed-"))
    return {"tb": float(np.prod(shape)) / 1e12, "tasks": tasks, "seconds": seconds,
            "peak_mib": peak / 2**20}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=DEFAULT, help="x,y,z voxel counts")
    args = p.parse_args(argv)
    print(f"{'shape':>22} {'TB':>6} {'write tasks':>11} {'build s':>8} {'s/1k tasks':>10} "
          f"{'client MiB':>10} {'MiB/TB':>7}")  # fmt: skip
    for s in args.sizes:
        shape = [int(v) for v in s.split(",")]
        r = measure(shape)
        print(f"{s:>22} {r['tb']:6.2f} {r['tasks']:11d} {r['seconds']:8.3f} "
              f"{1000 * r['seconds'] / r['tasks']:10.3f} {r['peak_mib']:10.1f} "
              f"{r['peak_mib'] / r['tb']:7.1f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
