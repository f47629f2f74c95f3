"""Where our writer spends its time and memory on bench_write.py's volume (evidence for README).

    python benchmarks/profile_write.py            # 1 GiB, data_encoding raw
    python benchmarks/profile_write.py --quick    # 64 MiB
    python benchmarks/profile_write.py --gzip     # data_encoding gzip

1. cProfile of ``to_precomputed`` on the synchronous scheduler (one thread, so the profile
   sees every task): the functions with the most own time.
2. The two copies that dominate, on one shard box (512x256x256 uint8): dask's
   ``concatenate3`` (used by ``rechunk``) builds a C-ordered block from the x-fastest
   (Fortran) input blocks, and the raw codec's ``tobytes(order="F")`` turns each chunk of
   that C-ordered block back into x-fastest bytes: two transposing copies of every voxel.
3. Each in a fresh subprocess like bench_write.py (2 dask threads): the package as is and,
   while ``_write_graph`` still calls ``data.rechunk(chunks)``, a what-if with that line
   changed *in memory* (nothing on disk is edited) to rechunk the transposed array -- dask
   then concatenates blocks into an x-fastest result and no voxel is transposed. Both are
   checked by reading back with tensorstore.
4. Memory: tracemalloc's peak of Python/NumPy allocations with 1 and 2 dask threads, i.e. how
   many shard-sized buffers one in-flight shard keeps alive.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
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
    _warmup_case,
    _write_ours,
    shard_bytes,
    shard_slices,
    source_array,
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

PATCH_OLD = "data = data.rechunk(chunks)"
PATCH_NEW = "data = data.transpose().rechunk(tuple(reversed(chunks))).transpose()"


def patch_writer() -> None:
    """Re-define ``_write_graph`` in memory: every ``rechunk`` done on the transposed array."""
    import xarray_precomputed.writer as w

    src = inspect.getsource(w._write_graph)
    if PATCH_OLD not in src:
        raise RuntimeError("_write_graph no longer has the line this what-if replaces")
    exec(compile(src.replace(PATCH_OLD, PATCH_NEW), w.__file__, "exec"), w.__dict__)


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
    if payload["variant"] == "transposed-rechunk":
        patch_writer()
    src = _prepare(case, path, 2, payload["order"])
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
    p.add_argument("--repeat", type=int, default=2, help="what-if runs per variant")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    case_index = 1 if args.gzip else 0
    case = write_cases(args.quick)[case_index]
    out = Path(args.data_dir) / "write" / "profile"
    shard = shard_bytes(case)
    print(f"{case.name}: {case.nbytes / MiB:.0f} MiB, dask chunks {INPUT_CHUNK}, shard box "
          f"{shard_box(case)} chunks ({shard / MiB:.0f} MiB)\n")  # fmt: skip

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
    stats.sort_stats("tottime").print_stats(8)
    print(f"1. cProfile, synchronous scheduler: {wall:.2f} s wall")
    print("\n".join(line for line in s.getvalue().splitlines()[6:] if line.strip()))
    own = {f[2]: v[2] for f, v in stats.stats.items()}  # type: ignore[attr-defined]
    conc = own.get("concatenate3", 0.0)
    tob = own.get("<method 'tobytes' of 'numpy.ndarray' objects>", 0.0)
    print(f"   concatenate3 + ndarray.tobytes: {conc + tob:.2f} s of {wall:.2f} s "
          f"({(conc + tob) / wall:.0%})\n")  # fmt: skip

    # 2. the two copies, on one shard box
    import dask.array as da

    sl = shard_slices(case)[0]
    shape = tuple(x.stop - x.start for x in sl)
    f_block = np.empty(shape, np.uint8, order="F")
    da.store(src[sl], f_block, lock=False, scheduler="sync")

    def best(fn, n=3) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    def chunks_to_bytes(block):
        c = case.chunk
        for z in range(0, shape[2], c[2]):
            for y in range(0, shape[1], c[1]):
                for x in range(0, shape[0], c[0]):
                    block[x : x + c[0], y : y + c[1], z : z + c[2]].tobytes(order="F")

    c_block = np.ascontiguousarray(f_block)
    rows = [
        ("F blocks -> C shard (what rechunk's concatenate3 does)",
         best(lambda: np.ascontiguousarray(f_block))),
        ("F blocks -> F shard (rechunk of the transposed array)",
         best(lambda: np.asfortranarray(f_block).copy(order="K"))),
        ("chunks of a C shard -> F bytes (raw encode now)", best(lambda: chunks_to_bytes(c_block))),
        ("chunks of an F shard -> F bytes", best(lambda: chunks_to_bytes(f_block))),
    ]  # fmt: skip
    print(f"2. copies of one {shard / MiB:.0f} MiB shard box, one thread:")
    for label, t in rows:
        print(f"   {label:55s} {t * 1e3:7.1f} ms  {shard / t / 1e6:6.0f} MB/s")
    n = len(shard_slices(case))
    print(
        f"   x {n} shards: {n * (rows[0][1] + rows[2][1]):.2f} s of CPU in the two "
        f"transposing copies vs {n * (rows[1][1] + rows[3][1]):.2f} s without\n"
    )

    # 3. what-if, fresh subprocesses
    print("3. to_precomputed, 2 dask threads, fresh subprocess each (best time, median peak):")
    script = Path(__file__).resolve()
    import xarray_precomputed.writer as w

    variants = ["as-is"]
    if PATCH_OLD in inspect.getsource(w._write_graph):
        variants.append("transposed-rechunk")
    else:
        print(
            "   (the writer no longer rechunks with dask: the transposed-rechunk what-if is moot)"
        )
    for variant in variants:
        runs = [
            run_worker(
                script,
                {
                    "quick": args.quick,
                    "case": case_index,
                    "variant": variant,
                    "path": str(out),
                    "order": args.source_order,
                },
            )  # fmt: skip
            for _ in range(args.repeat)
        ]
        good = [r for r in runs if "error" not in r]
        if not good:
            print(f"   {variant}: ERROR {runs[-1]['error']}")
            continue
        b = min(good, key=lambda r: r["seconds"])
        peak = float(np.median([r["peak_extra_bytes"] for r in good]))
        print(f"   {variant:20s} {case.nbytes / b['seconds'] / 1e6:6.0f} MB/s  {b['seconds']:.2f} s"
              f"  cpu {b['cpu_seconds']:.2f} s  peak +{peak / MiB:.0f} MiB ({peak / shard:.2f} "
              f"shards)  others {b['others_cores']:.2f}  checksum {b['checksum']}")  # fmt: skip
    if len(variants) > 1:
        print(f"   (the what-if replaces `{PATCH_OLD}` with `{PATCH_NEW}`)")
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
