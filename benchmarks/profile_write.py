"""Where our writer spends its time and memory on bench_write.py's volume (evidence for README).

    python benchmarks/profile_write.py                    # 1 GiB, data_encoding raw
    python benchmarks/profile_write.py --quick            # 64 MiB
    python benchmarks/profile_write.py --gzip             # data_encoding gzip
    python benchmarks/profile_write.py --source-order C   # C-ordered source blocks

1. cProfile of ``to_precomputed`` on the synchronous scheduler (one thread, so the profile
   sees every task): the functions with the most own time.
2. Copying one 64^3 chunk out of a 128^3 input block into x-fastest memory, as a write task
   does for every chunk: ``input_blocks.fortran_order`` (a tiled copy written for C-ordered input)
   against ``np.asfortranarray``, for Fortran- and C-ordered blocks. When the block is
   already x-fastest, the plain copy is the fast one.
3. ``to_precomputed`` in fresh subprocesses like bench_write.py (2 dask threads): the package
   as is, and a what-if where ``fortran_order`` is replaced *in memory* (nothing on disk is
   edited) by ``np.asfortranarray`` whenever x is already the fastest axis. Both are checked
   by reading the volume back with tensorstore.
4. Memory: tracemalloc's peak of Python/NumPy allocations with 1 and 2 dask threads, i.e. how
   many shard-sized buffers one in-flight shard keeps alive.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from bench_write import (
    INPUT_CHUNK,
    _release_free_memory,
    _warmup_case,
    _write_ours,
    shard_bytes,
    source_array,
    source_block,
    source_tables,
    write_cases,
)
from common import (
    DEFAULT_DATA_DIR,
    MiB,
    PeakMemory,
    checksum,
    cpu_seconds,
    emit_result,
    run_worker,
    shard_box,
    tensorstore_spec,
)


def patch_fortran_order() -> None:
    """What-if: a plain (fast) copy when x is already the smallest stride."""
    import xarray_precomputed.input_blocks as w

    tiled = w.fortran_order

    def fortran_order(array: np.ndarray, tile: int = 16) -> np.ndarray:
        s = array.strides
        if abs(s[0]) <= min(abs(s[1]), abs(s[2])):
            return np.asfortranarray(array)
        return tiled(array, tile)

    w.fortran_order = fortran_order


def _threads(n: int):
    import dask

    return dask.config.set(scheduler="threads" if n > 1 else "sync", num_workers=n)


def _prepare(case, path: Path, threads: int, order: str = "F"):
    import bench_write

    bench_write._dask_threads = lambda: _threads(threads)
    src = source_array(case, order)
    source_tables(tuple(case.shape), case.seed, order)
    wcase = _warmup_case(case)
    wpath = Path(str(path) + ".warmup")
    shutil.rmtree(wpath, ignore_errors=True)
    _write_ours(wcase, str(wpath), source_array(wcase, order))
    shutil.rmtree(wpath, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    return src


def worker(payload: dict[str, Any]) -> None:
    case = write_cases(payload["quick"])[payload["case"]]
    path = Path(payload["path"])
    if payload["variant"] == "plain-copy-when-x-fastest":
        patch_fortran_order()
    src = _prepare(case, path, 2, payload["order"])
    _release_free_memory()
    with PeakMemory() as mem:
        c0, t0 = cpu_seconds(), time.perf_counter()
        _write_ours(case, str(path), src)
        t1, c1 = time.perf_counter(), cpu_seconds()
    import tensorstore as ts

    a = ts.open(tensorstore_spec(path), read=True).result().read(order="F").result()
    shutil.rmtree(path, ignore_errors=True)
    emit_result({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "peak_extra_bytes": mem.extra,
                 "checksum": checksum(a)})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 MiB volume")
    p.add_argument("--gzip", action="store_true", help="shard data_encoding gzip (default raw)")
    p.add_argument("--source-order", choices=("F", "C"), default="F", help="source block order")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--repeat", type=int, default=3, help="subprocess runs per variant")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    case_index = 1 if args.gzip else 0
    case = write_cases(args.quick)[case_index]
    out = Path(args.data_dir) / "write" / "profile"
    shard = shard_bytes(case)
    print(f"{case.name}: {case.nbytes / MiB:.0f} MiB, dask chunks {INPUT_CHUNK} "
          f"({args.source_order}-ordered), shard box {shard_box(case)} chunks "
          f"({shard / MiB:.0f} MiB)\n")  # fmt: skip

    # 1. cProfile, synchronous scheduler
    src = _prepare(case, out, 1, args.source_order)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    _write_ours(case, str(out), src)
    prof.disable()
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    s = io.StringIO()
    stats = pstats.Stats(prof, stream=s)
    stats.sort_stats("tottime").print_stats(10)
    print(f"1. cProfile, synchronous scheduler: {wall:.2f} s wall; own time per function:")
    print("\n".join(line for line in s.getvalue().splitlines()[6:] if line.strip()))
    print()

    # 2. one chunk out of one input block
    from xarray_precomputed.input_blocks import fortran_order

    lo, size = (0, 0, 0), INPUT_CHUNK
    f_block = source_block(case.shape, case.seed, lo, size, "F")[..., np.newaxis]
    c_block = np.ascontiguousarray(f_block)
    c = case.chunk

    def per_chunk(fn, block) -> float:
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for x in range(0, size[0], c[0]):
                for y in range(0, size[1], c[1]):
                    for z in range(0, size[2], c[2]):
                        fn(block[x : x + c[0], y : y + c[1], z : z + c[2]])
            best = min(best, time.perf_counter() - t)
        return best / (np.prod(size) // np.prod(c))

    chunk_bytes = int(np.prod(c))
    n_chunks = case.nbytes // chunk_bytes
    print(f"2. one {c[0]}x{c[1]}x{c[2]} chunk out of a {size[0]}^3 input block into x-fastest "
          f"memory (one thread; x {n_chunks} chunks for the volume):")  # fmt: skip
    for label, block in (("F-ordered block", f_block), ("C-ordered block", c_block)):
        for name, fn in (("input_blocks.fortran_order", fortran_order),
                         ("np.asfortranarray", np.asfortranarray)):  # fmt: skip
            t = per_chunk(fn, block)
            print(f"   {label}, {name:22s} {t * 1e6:6.0f} us  {chunk_bytes / t / 1e6:6.0f} MB/s"
                  f"  = {t * n_chunks:5.2f} s CPU per volume")  # fmt: skip
    print()

    # 3. as is and the what-if, fresh subprocesses
    print("3. to_precomputed, 2 dask threads, fresh subprocess each (best time, median peak):")
    script = Path(__file__).resolve()
    for variant in ("as-is", "plain-copy-when-x-fastest"):
        payload = {"quick": args.quick, "case": case_index, "variant": variant,
                   "path": str(out), "order": args.source_order}  # fmt: skip
        runs = [run_worker(script, payload) for _ in range(args.repeat)]
        good = [r for r in runs if "error" not in r]
        if not good:
            print(f"   {variant}: ERROR {runs[-1]['error']}")
            continue
        b = min(good, key=lambda r: r["seconds"])
        peak = float(np.median([r["peak_extra_bytes"] for r in good]))
        print(f"   {variant:26s} {case.nbytes / b['seconds'] / 1e6:5.0f} MB/s  {b['seconds']:.2f} s"
              f"  cpu {b['cpu_seconds']:.2f} s  peak +{peak / MiB:.0f} MiB ({peak / shard:.2f} "
              f"shards)  others {b['others_cores']:.2f}  {b['checksum']}")  # fmt: skip
    print()

    # 4. tracemalloc
    print("4. tracemalloc peak (NumPy + Python allocations) during to_precomputed:")
    for threads in (1, 2):
        src = _prepare(case, out, threads, args.source_order)
        tracemalloc.start()
        _write_ours(case, str(out), src)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        shutil.rmtree(out, ignore_errors=True)
        print(f"   {threads} dask thread(s): {peak / MiB:.0f} MiB = {peak / shard:.2f} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
