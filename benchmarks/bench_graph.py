"""Building the write graph for petascale inputs: tasks, build time and client memory.

    python benchmarks/bench_graph.py            # 0.27, 1.1 and 4.4 TB lazy uint8 inputs
    python benchmarks/bench_graph.py --sizes 8192,8192,4096
    python benchmarks/bench_graph.py --max-tasks 10000 --sizes 262144,196608,24576  # waves

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


class _StopWaves(Exception):
    pass


def measure_waves(shape: list[int], max_tasks: int, sample: int) -> dict:
    """``to_precomputed(..., max_tasks=...)`` with each wave's compute replaced by a probe:
    build time and write tasks of the first ``sample`` waves, and the client's peak memory
    over them (nothing is written but the ``info``)."""
    import xarray_precomputed.writer as writer

    arr = da.zeros([*shape, 1], dtype=np.uint8, chunks=(1024, 1024, 256, 1))
    a = xr.DataArray(arr, dims=("x", "y", "z", "channel"), name="image")
    waves: list[dict] = []
    last = [0.0]

    def probe(graph, *args, **kwargs):
        now = time.perf_counter()
        (layer,) = graph.__dask_layers__()  # the write layer: its tasks and their total
        tasks = len(graph.__dask_graph__().layers[layer]) - 1
        waves.append({"seconds": now - last[0], "tasks": tasks,
                      "description": kwargs.get("description", "")})  # fmt: skip
        if len(waves) >= sample:
            raise _StopWaves
        last[0] = time.perf_counter()
        return tasks

    real = writer.compute_with_progress
    writer.compute_with_progress = probe
    try:
        with tempfile.TemporaryDirectory() as d:
            tracemalloc.start()
            t0 = time.perf_counter()
            last[0] = t0
            try:
                xp.to_precomputed(a, d + "/v", chunk_size=(64, 64, 64), sharding="auto",
                                  resolution=(8, 8, 40), max_tasks=max_tasks)  # fmt: skip
            except _StopWaves:
                pass
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    finally:
        writer.compute_with_progress = real
    total = int(waves[0]["description"].rsplit("/", 1)[1]) if waves else 0
    per_wave = sorted(w["seconds"] for w in waves[1:]) or [waves[0]["seconds"]]
    return {"tb": float(np.prod(shape)) / 1e12, "waves": total, "sampled": len(waves),
            "tasks_per_wave": max(w["tasks"] for w in waves),
            "first_wave_s": waves[0]["seconds"], "median_wave_s": per_wave[len(per_wave) // 2],
            "peak_mib": peak / 2**20}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=DEFAULT, help="x,y,z voxel counts")
    p.add_argument("--max-tasks", type=int,
                   help="write in waves of at most this many tasks (to_precomputed's "
                        "max_tasks): report per-wave figures instead")  # fmt: skip
    p.add_argument("--sample", type=int, default=5, help="waves built with --max-tasks")
    args = p.parse_args(argv)
    if args.max_tasks:
        print(f"{'shape':>24} {'TB':>7} {'waves':>6} {'tasks/wave':>10} {'first s':>8} "
              f"{'wave s':>7} {'all waves s':>11} {'client MiB':>10}")  # fmt: skip
        for s in args.sizes:
            shape = [int(v) for v in s.split(",")]
            r = measure_waves(shape, args.max_tasks, args.sample)
            est = r["first_wave_s"] + r["median_wave_s"] * (r["waves"] - 1)
            print(f"{s:>24} {r['tb']:7.2f} {r['waves']:6d} {r['tasks_per_wave']:10d} "
                  f"{r['first_wave_s']:8.2f} {r['median_wave_s']:7.3f} {est:11.0f} "
                  f"{r['peak_mib']:10.1f}", flush=True)  # fmt: skip
        return 0
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
