"""Whole-volume write benchmark: xarray_precomputed vs tensorstore vs cloud-volume.

    python benchmarks/bench_write.py              # full: 1 GiB uint8 volume, raw and gzip shards
    python benchmarks/bench_write.py --quick      # smoke test: 64 MiB volume
    python benchmarks/bench_write.py --repeat 5 --writers ours tensorstore
    python benchmarks/bench_write.py --scheduler cluster   # ours on a 2-process LocalCluster

Every writer writes the same Dask array (EM-like uint8 data generated block by block, input
chunks of 128^3, smaller than the 512x256x256 shards) as a sharded precomputed volume with
the same info. Each (writer, case, repeat) runs in a fresh subprocess; afterwards the volume
is read back with tensorstore and checksummed. See README.md in this directory.

``--scheduler cluster`` runs ``ours`` on a ``distributed.LocalCluster`` of 2 worker processes
(1 thread each) started in that subprocess, and reports its peak memory per worker process.
``tensorstore-cluster`` (run by default with ``--scheduler cluster``) is tensorstore's
one-shard-per-write loop on the same kind of cluster: one task per shard box computes its box
in the worker and writes it; the other writers stay on the threaded scheduler. Ratios are
against the fastest tensorstore mode.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import statistics
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    MiB,
    PeakMemory,
    VolumeSpec,
    _vm_hwm_bytes,
    box_sharding,
    checksum,
    cpu_seconds,
    emit_result,
    format_machine,
    format_table,
    machine_info,
    run_worker,
    shard_box,
    tensorstore_spec,
    wait_for_quiet,
)
from harness import (
    add_common_arguments,
    add_output_arguments,
    add_run_arguments,
    finish,
    fmt_ratio,
    paired_median,
    ratio,
)

WRITERS = ("ours", "tensorstore", "tensorstore-pipelined", "tensorstore-cluster", "cloud-volume")
TENSORSTORE = ("tensorstore", "tensorstore-pipelined", "tensorstore-cluster")
OURS = "ours"
ON_CLUSTER = (OURS, "tensorstore-cluster")  # with --scheduler cluster: written on the cluster
# Targets from the issue: ours >= 1.5x tensorstore's throughput (its faster mode), and our
# peak memory (the whole process with 2 threads; per worker on the cluster) at most 4
# uncompressed shards + 2 input blocks.
TARGET_VS_TS = 1.5
INPUT_CHUNK = (128, 128, 128)
THREADS = 2  # dask threaded scheduler workers, for every writer
SCHEDULERS = ("threads", "cluster")
# --scheduler cluster: ours on a LocalCluster of CLUSTER_WORKERS processes x 1 thread.
CLUSTER_WORKERS = 2
TARGET_WORKER_SHARDS, TARGET_WORKER_BLOCKS = 4.0, 2  # the peak bound, threaded or per worker
SEED = 7


# -- cases -----------------------------------------------------------------------------------------


def write_cases(quick: bool) -> list[VolumeSpec]:
    """The volumes written: one geometry, shard ``data_encoding`` raw and gzip."""
    shape = (512, 512, 256) if quick else (1024, 1024, 1024)
    chunk = (64, 64, 64)
    out = []
    for enc in ("raw", "gzip"):
        out.append(
            VolumeSpec(
                name=f"write-uint8-sharded-{enc}",
                description=f"uint8 EM-like, raw chunks, 32 MiB box shards, data_encoding {enc}",
                shape=shape,
                dtype="uint8",
                encoding="raw",
                generator="dask_em_like",
                seed=SEED,
                chunk=chunk,
                # 128 chunks of 256 KiB = 32 MiB per shard (an 8x4x4-chunk box), 8-chunk minishards
                sharding=box_sharding(shape, chunk, 128, 8, enc),
            )
        )
    return out


def shard_bytes(case: VolumeSpec) -> int:
    box = shard_box(case)
    assert box is not None
    return int(np.prod([b * c for b, c in zip(box, case.chunk)])) * np.dtype(case.dtype).itemsize


def shard_slices(case: VolumeSpec) -> list[tuple[slice, slice, slice]]:
    """The shard boxes in voxels, x fastest (the order tensorstore and cloud-volume write)."""
    box = shard_box(case)
    assert box is not None
    step = [b * c for b, c in zip(box, case.chunk)]
    X, Y, Z = case.shape
    return [
        (
            slice(x, min(x + step[0], X)),
            slice(y, min(y + step[1], Y)),
            slice(z, min(z + step[2], Z)),
        )
        for z in range(0, Z, step[2])
        for y in range(0, Y, step[1])
        for x in range(0, X, step[0])
    ]


# -- source data: a Dask array generated block by block ---------------------------------------------
#
# Cheap on purpose (about 4-5 GB/s on one core; numpy ufuncs release the GIL), so that
# generating the data does not dominate any writer's time. Every value depends only on the
# seed and the voxel position: three smooth 2-D fields of (x, y), (y, z) and (x, z) with
# dark "membrane" ridges, summed by broadcasting, plus per-voxel noise taken from a
# 192^3 table at an offset that depends on the block position. The result looks and
# compresses like EM (gzip ~1.2-1.3x); no chunk is constant. The fields cover the whole
# volume, so the texture is continuous across blocks (the noise window is not).

_NOISE = 192


_SLAB = 32  # rows per step when building tables: temporaries stay ~100 KiB (see below)


def _coarse(rng: np.random.Generator, n0: int, n1: int, cell: int) -> np.ndarray:
    return rng.standard_normal((n0 // cell + 2, n1 // cell + 2), dtype=np.float32)


def _interp_rows(g: np.ndarray, r0: int, r1: int, n1: int, cell: int) -> np.ndarray:
    """Rows ``r0:r1`` of the bilinear upsampling of ``g`` (samples ``cell`` apart)."""
    p0 = (np.arange(r0, r1) + 0.5) / cell
    i0 = p0.astype(np.intp)
    w0 = (p0 - i0).astype(np.float32)[:, None]
    g = g[i0] * (1 - w0) + g[i0 + 1] * w0
    p1 = (np.arange(n1) + 0.5) / cell
    i1 = p1.astype(np.intp)
    w1 = (p1 - i1).astype(np.float32)[None, :]
    return g[:, i1] * (1 - w1) + g[:, i1 + 1] * w1


def _plane(rng: np.random.Generator, n0: int, n1: int, order: str) -> np.ndarray:
    g64, g16, ridge = _coarse(rng, n0, n1, 64), _coarse(rng, n0, n1, 16), _coarse(rng, n0, n1, 24)
    out = np.empty((n0, n1), np.uint8, order=order)
    for r0 in range(0, n0, _SLAB):
        r1 = min(n0, r0 + _SLAB)
        f = _interp_rows(g64, r0, r1, n1, 64) + 0.5 * _interp_rows(g16, r0, r1, n1, 16)
        m = _interp_rows(ridge, r0, r1, n1, 24)
        f = 30 + 12 * f - 40 * np.exp(-((m / 0.12) ** 2))
        out[r0:r1] = np.clip(f, 0, 56)
    return out


@lru_cache(maxsize=4)
def source_tables(
    shape: tuple[int, int, int], seed: int, order: str = "F"
) -> tuple[np.ndarray, ...]:
    """The fields and the noise table (~10 MiB for 1024^3), laid out in ``order`` so that
    blocks of that order are filled with contiguous reads; built once per process.

    Built a few rows at a time: large temporaries, once freed, would stay in the worker's
    heap (and raise glibc's mmap threshold), and a writer could then reuse that memory
    without it showing in the peak RSS.
    """
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    a, b, c = _plane(rng, X, Y, order), _plane(rng, Y, Z, order), _plane(rng, X, Z, order)
    noise = np.empty((_NOISE,) * 3, np.uint8, order=order)
    for i in range(0, _NOISE, 2):  # the same values as one standard_normal((192,) * 3) call
        n = rng.standard_normal((2, _NOISE, _NOISE), dtype=np.float32) * 6
        noise[i : i + 2] = np.clip(np.rint(n), -30, 30) + 30
    return a, b, c, noise


def source_block(shape, seed, lo, size, order: str = "F") -> np.ndarray:
    """The block of the source volume at voxel ``lo`` with shape ``size``, in memory order
    ``order`` (the values do not depend on it)."""
    a, b, c, noise = source_tables(tuple(shape), seed, order)
    (x0, y0, z0), (bx, by, bz) = lo, size
    if max(size) > _NOISE - 64:
        raise ValueError(f"blocks of up to {_NOISE - 64} voxels per axis, got {size}")
    out = np.empty((bx, by, bz), np.uint8, order=order)
    np.add(a[x0 : x0 + bx, y0 : y0 + by, None], b[None, y0 : y0 + by, z0 : z0 + bz], out=out)
    np.add(out, c[x0 : x0 + bx, None, z0 : z0 + bz], out=out)
    h = (x0 * 73856093 ^ y0 * 19349663 ^ z0 * 83492791 ^ seed) & 0xFFFFFFFF
    ox, oy, oz = h % 61, (h // 61) % 59, (h // 3599) % 53
    np.add(out, noise[ox : ox + bx, oy : oy + by, oz : oz + bz], out=out)
    out += 10  # values 10..230
    return out


def _dask_block(shape, seed, order, block_info=None):
    """A block of any layout, assembled from the INPUT_CHUNK-aligned tiles that define the
    values, so every input chunking gives the same data (and the same checksum)."""
    loc = block_info[None]["array-location"][:3]
    lo, hi = [a for a, _ in loc], [b for _, b in loc]
    tiles = [
        range(lo[d] // INPUT_CHUNK[d] * INPUT_CHUNK[d], hi[d], INPUT_CHUNK[d]) for d in range(3)
    ]
    if all(len(t) == 1 and t[0] == lo[d] for d, t in enumerate(tiles)):
        if all(hi[d] - lo[d] == min(INPUT_CHUNK[d], shape[d] - lo[d]) for d in range(3)):
            return source_block(shape, seed, lo, [hi[d] - lo[d] for d in range(3)], order)
    out = np.empty([hi[d] - lo[d] for d in range(3)], np.uint8, order=order)
    for tx in tiles[0]:
        for ty in tiles[1]:
            for tz in tiles[2]:
                t = (tx, ty, tz)
                size = [min(INPUT_CHUNK[d], shape[d] - t[d]) for d in range(3)]
                tile = source_block(shape, seed, t, size, order)
                a = [max(lo[d], t[d]) for d in range(3)]
                b = [min(hi[d], t[d] + size[d]) for d in range(3)]
                out[tuple(slice(a[d] - lo[d], b[d] - lo[d]) for d in range(3))] = tile[
                    tuple(slice(a[d] - t[d], b[d] - t[d]) for d in range(3))
                ]
    return out


def source_array(case: VolumeSpec, order: str = "F", input_chunk=INPUT_CHUNK):
    """The Dask array every writer writes: ``case.shape`` uint8, chunks ``input_chunk``,
    blocks in memory order ``order`` (F: x-fastest, as read from precomputed/tensorstore;
    C: as from zarr, TIFF or most NumPy code)."""
    import dask.array as da

    chunks = tuple(
        tuple(min(c, n - i) for i in range(0, n, c)) for n, c in zip(case.shape, input_chunk)
    )
    return da.map_blocks(
        _dask_block,
        tuple(case.shape),
        case.seed,
        order,
        chunks=chunks,
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), np.uint8),
        name=f"em-like-{case.shape[0]}x{case.shape[1]}x{case.shape[2]}-{case.seed}-{order}",
    )


class _NullSink:
    """A ``da.store`` target that drops what it is given (times the generator alone)."""

    def __init__(self) -> None:
        self.blocks = 0

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.blocks += 1


# -- writers (each runs in a fresh subprocess) -------------------------------------------------------
#
# ``write(case, path, src, opts)`` writes the whole Dask array ``src`` as the volume described
# by ``case`` at ``path`` (a new, empty directory) and returns extra facts for the JSON.


def _dask_threads():
    import dask

    return dask.config.set(scheduler="threads", num_workers=THREADS)


def _ours_scheduler(opts):
    """The threaded scheduler, or (``--scheduler cluster``) the active distributed Client,
    which ``dask.compute`` (``to_precomputed``) uses by default."""
    if (opts or {}).get("scheduler") == "cluster":
        return contextlib.nullcontext()
    return _dask_threads()


def _compute_box(src, sl, buf: np.ndarray) -> np.ndarray:
    """One shard box of ``src`` into the preallocated Fortran buffer ``buf`` (no C-ordered
    concatenate: each 128^3 block is copied once into place, contiguously when the blocks
    are Fortran-ordered)."""
    import dask.array as da

    view = buf[tuple(slice(0, s.stop - s.start) for s in sl)]
    da.store(src[sl], view, lock=False)
    return view


def _write_ours(case: VolumeSpec, path: str, src, opts=None) -> dict[str, Any]:
    import xarray as xr

    from xarray_precomputed import to_precomputed

    coords = {d: (np.arange(n) + 0.5) * r for d, n, r in zip("xyz", case.shape, case.resolution)}
    arr = xr.DataArray(src, dims=("x", "y", "z"), coords=coords, name="image")
    with _ours_scheduler(opts):
        n = to_precomputed(
            arr,
            path,
            mode="w-",
            chunk_size=case.chunk,
            encoding=case.encoding,
            sharding=dict(case.sharding or {}),
        )
    return {"objects_written": int(n)}


def _ts_create(case: VolumeSpec, path: str):
    import tensorstore as ts

    return ts.open(
        {
            **tensorstore_spec(path),
            "multiscale_metadata": {"type": "image", "data_type": case.dtype, "num_channels": 1},
            "scale_metadata": case.scale_metadata(),
        },
        create=True,
        delete_existing=True,
    ).result()


def _write_tensorstore(case: VolumeSpec, path: str, src, opts=None) -> dict[str, Any]:
    """Sequential: compute one shard box (2 dask threads), write it, wait, next box."""
    store = _ts_create(case, path)
    boxes = shard_slices(case)
    buf = np.empty([s.stop - s.start for s in boxes[0]], case.dtype, order="F")
    with _dask_threads():
        for sl in boxes:
            view = _compute_box(src, sl, buf)
            store[sl].write(view[..., np.newaxis]).result()
    return {"writes": len(boxes), "outstanding_writes": 0}


def _write_tensorstore_pipelined(case: VolumeSpec, path: str, src, opts=None) -> dict[str, Any]:
    """At most ``ts_outstanding`` (default 1) writes in flight: box i+1 is computed while
    tensorstore encodes and stores box i, and write i+1 is issued once write i finished.
    ``outstanding + 1`` buffers rotate; a buffer is reused only after its write finished."""
    depth = int((opts or {}).get("ts_outstanding", 1))
    store = _ts_create(case, path)
    boxes = shard_slices(case)
    shape = [s.stop - s.start for s in boxes[0]]
    bufs = [np.empty(shape, case.dtype, order="F") for _ in range(depth + 1)]
    pending: collections.deque = collections.deque()
    with _dask_threads():
        for i, sl in enumerate(boxes):
            view = _compute_box(src, sl, bufs[i % (depth + 1)])  # overlaps pending writes
            while len(pending) >= depth:
                pending.popleft().result()
            pending.append(store[sl].write(view[..., np.newaxis]))
        while pending:
            pending.popleft().result()
    return {"writes": len(boxes), "outstanding_writes": depth}


def _write_tensorstore_cluster(case: VolumeSpec, path: str, src, opts=None) -> dict[str, Any]:
    """tensorstore's one-shard-per-write loop spread over the active distributed Client: one
    task per shard box (``_ts_cluster_box``), as a tensorstore user with a cluster writes."""
    from distributed import get_client

    opts = opts or {}
    client = get_client()
    _ts_create(case, path)
    n = len(shard_slices(case))
    args = (_case_params(case), path, opts["source_order"], list(opts["input_chunk"]))
    futures = [client.submit(_ts_cluster_box, *args, i, pure=False) for i in range(n)]
    client.gather(futures)
    return {"writes": n, "outstanding_writes": 0}


@lru_cache(maxsize=1)
def _ts_worker_state(path: str, box: tuple[int, ...], dtype: str):
    """Per worker process: the open store and a box buffer, reused by its tasks. (An
    ``lru_cache`` is pickled by reference, so tasks share it; a dict global of this script
    would travel by value with each task, and each task would open its own store.)"""
    import tensorstore as ts

    store = ts.open(tensorstore_spec(path), open=True).result()
    return store, np.empty(box, dtype, order="F")


def _ts_cluster_box(params, path: str, order: str, input_chunk, index: int) -> int:
    """Runs in a worker: compute shard box ``index`` there (the synchronous scheduler, as
    the worker's one thread) into a buffer the worker reuses, and write it with tensorstore."""
    import dask

    case = _case_from(params)
    boxes = shard_slices(case)
    sl = boxes[index]
    store, buf = _ts_worker_state(path, tuple(s.stop - s.start for s in boxes[0]), case.dtype)
    src = source_array(case, order, tuple(input_chunk))
    with dask.config.set(scheduler="synchronous"):
        view = _compute_box(src, sl, buf)
    store[sl].write(view[..., np.newaxis]).result()
    return 1


def _write_cloudvolume(case: VolumeSpec, path: str, src, opts=None) -> dict[str, Any]:
    """One shard per assignment (its sharded writer accepts exactly one shard per write).

    ``parallel`` does not apply to sharded uploads (``_upload_shard`` ignores it).
    """
    from cloudvolume import CloudVolume

    m = case.scale_metadata()
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="image",
        data_type=case.dtype,
        encoding=case.encoding,
        resolution=m["resolution"],
        voxel_offset=m["voxel_offset"],
        chunk_size=m["chunk_size"],
        volume_size=m["size"],
    )
    info["scales"][0]["sharding"] = dict(m["sharding"])
    vol = CloudVolume(
        "file://" + str(Path(path).resolve()),
        info=info,
        compress=False,
        progress=False,
        parallel=1,
        non_aligned_writes=False,
    )
    vol.commit_info()
    boxes = shard_slices(case)
    buf = np.empty([s.stop - s.start for s in boxes[0]], case.dtype, order="F")
    with _dask_threads():
        for sl in boxes:
            vol[sl] = _compute_box(src, sl, buf)
    return {"writes": len(boxes), "parallel": 1}


WRITE_FUNCTIONS = {
    "ours": _write_ours,
    "tensorstore": _write_tensorstore,
    "tensorstore-pipelined": _write_tensorstore_pipelined,
    "tensorstore-cluster": _write_tensorstore_cluster,
    "cloud-volume": _write_cloudvolume,
}


def _case_params(case: VolumeSpec) -> dict[str, Any]:
    return dataclasses.asdict(case)


def _case_from(d: dict[str, Any]) -> VolumeSpec:
    d = dict(d)
    for k in ("shape", "chunk", "resolution"):
        d[k] = tuple(d[k])
    return VolumeSpec(**d)


def _warmup_case(case: VolumeSpec) -> VolumeSpec:
    """A 256x128x128 volume written the same way: imports, thread pools and library set-up
    happen before the timed region (each writer still builds its own graph/plan when timed)."""
    shape = (256, 128, 128)
    return VolumeSpec(
        **{
            **_case_params(case),
            "name": "warmup",
            "shape": shape,
            "sharding": box_sharding(shape, case.chunk, 8, 8, case.sharding["data_encoding"]),
        }
    )


def worker(payload: dict[str, Any]) -> None:
    task = payload["task"]
    case = _case_from(payload["case"])
    if task == "generate":
        _worker_generate(case, payload)
    elif task == "verify":
        _worker_verify(payload["path"])
    else:
        _worker_write(case, payload)


def _warm_up(write, case: VolumeSpec, path: str, order: str, opts) -> None:
    """An untimed small write first: imports, thread pools, the writer's set-up."""
    wcase = _warmup_case(case)
    wpath = path + ".warmup"
    shutil.rmtree(wpath, ignore_errors=True)
    write(wcase, wpath, source_array(wcase, order), opts)
    shutil.rmtree(wpath, ignore_errors=True)


def _release_free_memory() -> None:
    """Give memory that was freed (generator tables' temporaries, the warm-up) back to the
    OS before the baseline is taken, so that reusing it cannot hide part of the peak."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _worker_write(case: VolumeSpec, payload: dict[str, Any]) -> None:
    import dask.array  # noqa: F401  (imported before the timed region, as by every writer)

    fn = WRITE_FUNCTIONS[payload["writer"]]
    if payload.get("scheduler") == "cluster" and payload["writer"] in ON_CLUSTER:
        _worker_write_cluster(case, payload, fn)
        return
    opts = payload.get("opts", {})
    path = payload["path"]
    order = payload.get("source_order", "F")
    input_chunk = tuple(payload.get("input_chunk", INPUT_CHUNK))
    src = source_array(case, order, input_chunk)
    source_tables(tuple(case.shape), case.seed, order)  # the generator's tables: not billed
    if payload.get("warmup", True):
        _warm_up(fn, case, path, order, opts)
    _release_free_memory()
    with PeakMemory() as mem:
        c0, t0 = cpu_seconds(), time.perf_counter()
        extra = fn(case, path, src, opts)
        t1, c1 = time.perf_counter(), cpu_seconds()
    emit_result(
        {
            "seconds": t1 - t0,
            "cpu_seconds": c1 - c0,
            "peak_extra_bytes": mem.extra,
            "baseline_rss_bytes": mem.baseline,
            "peak_method": mem.method,
            **extra,
        }
    )


# -- --scheduler cluster: ours on a LocalCluster ------------------------------------------------------
#
# These run in the cluster's worker processes (``client.run``). The functions of this script
# are pickled by value (it is ``__main__``); the spawned workers import it as ``__mp_main__``,
# so ``source_tables`` and its cache are that module's, shared by the prepare call and the
# write tasks (``tables_built`` checks it).


def _cluster_prepare(shape, seed, order) -> dict[str, Any]:
    """Build the generator's tables for ``shape`` in this worker (untimed, not billed)."""
    source_tables(tuple(shape), seed, order)
    info = source_tables.cache_info()
    return {"tables_built": info.misses, "tables_used": info.hits}


def _cluster_reset() -> dict[str, Any]:
    """Free what can be freed, reset this process's VmHWM, return the baseline RSS."""
    import psutil

    _release_free_memory()
    method = "ru_maxrss"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM reset"
    except OSError:
        pass
    return {
        "pid": os.getpid(),
        "baseline": psutil.Process().memory_info().rss,
        "cpu": cpu_seconds(),
        "method": method,
    }


def _cluster_peak() -> dict[str, Any]:
    """This process's peak RSS since :func:`_cluster_reset`, and its CPU time so far."""
    import resource

    import psutil

    hwm = _vm_hwm_bytes()
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak": max(hwm, psutil.Process().memory_info().rss),
        "cpu": cpu_seconds(),
        "tables_built": source_tables.cache_info().misses,
        "tables_used": source_tables.cache_info().hits,
    }


def _worker_write_cluster(case: VolumeSpec, payload: dict[str, Any], write) -> None:
    """``write`` (ours, or tensorstore's loop) on a 2-process LocalCluster started here (untimed): the warm-up write runs on
    the same cluster, the generator's tables are built in each worker, then every worker's
    high-water mark is reset and the write is timed. Peak per worker = its VmHWM over its
    own baseline; this process (client, scheduler, nannies) is measured as the driver."""
    import dask
    from distributed import Client, LocalCluster

    path = payload["path"]
    order = payload.get("source_order", "F")
    input_chunk = tuple(payload.get("input_chunk", INPUT_CHUNK))
    opts = {**payload.get("opts", {}), "scheduler": "cluster", "source_order": order,
            "input_chunk": input_chunk}  # fmt: skip
    with (
        LocalCluster(
            n_workers=CLUSTER_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        scheduler = dask.base.get_scheduler()
        if getattr(scheduler, "__self__", None) is not client:
            raise RuntimeError(f"dask would not compute on the cluster: {scheduler!r}")
        src = source_array(case, order, input_chunk)
        if payload.get("warmup", True):
            _warm_up(write, case, path, order, {**opts, "input_chunk": INPUT_CHUNK})
        prepared = client.run(_cluster_prepare, tuple(case.shape), case.seed, order)
        _release_free_memory()
        base = client.run(_cluster_reset)
        with PeakMemory() as mem:
            c0, t0 = cpu_seconds(), time.perf_counter()
            extra = write(case, path, src, opts)
            t1, c1 = time.perf_counter(), cpu_seconds()
        after = client.run(_cluster_peak)
    addrs = sorted(base)
    worker_extra = [after[a]["peak"] - base[a]["baseline"] for a in addrs]
    worker_cpu = [after[a]["cpu"] - base[a]["cpu"] for a in addrs]
    emit_result(
        {
            "seconds": t1 - t0,
            "cpu_seconds": (c1 - c0) + sum(worker_cpu),
            # the per-worker peak: what the target bounds
            "peak_extra_bytes": max(worker_extra),
            "baseline_rss_bytes": max(base[a]["baseline"] for a in addrs),
            "peak_method": base[addrs[0]]["method"],
            "scheduler": "cluster",
            "worker_peak_extra_bytes": worker_extra,
            "worker_baseline_rss_bytes": [base[a]["baseline"] for a in addrs],
            "worker_cpu_seconds": [round(c, 3) for c in worker_cpu],
            "worker_pids": [base[a]["pid"] for a in addrs],
            # generator tables built during the timed write (0: all built beforehand)
            "worker_tables_built_during_write": [
                after[a]["tables_built"] - prepared[a]["tables_built"] for a in addrs
            ],
            # blocks generated from the prebuilt tables (cache hits): > 0 on a worker that
            # generated any, so the write tasks use the tables prepared above
            "worker_tables_used_during_write": [
                after[a]["tables_used"] - prepared[a]["tables_used"] for a in addrs
            ],
            "driver_peak_extra_bytes": mem.extra,
            "driver_baseline_rss_bytes": mem.baseline,
            "driver_cpu_seconds": round(c1 - c0, 3),
            **extra,
        }
    )


def _worker_generate(case: VolumeSpec, payload: dict[str, Any]) -> None:
    """Time the data generation alone (into a null sink), then the reference checksum."""
    import dask.array as da

    order = payload.get("source_order", "F")
    input_chunk = tuple(payload.get("input_chunk", INPUT_CHUNK))
    src = source_array(case, order, input_chunk)
    source_tables(tuple(case.shape), case.seed, order)
    runs = []
    for _ in range(payload.get("repeat", 2)):
        sink = _NullSink()
        with _dask_threads():
            c0, t0 = cpu_seconds(), time.perf_counter()
            da.store(src, sink, lock=False)
            t1, c1 = time.perf_counter(), cpu_seconds()
        runs.append((t1 - t0, c1 - c0))
    # per shard box into a Fortran buffer, as the tensorstore and cloud-volume writers do
    boxes = shard_slices(case)
    buf = np.empty([s.stop - s.start for s in boxes[0]], case.dtype, order="F")
    with _dask_threads():
        c0, t0 = cpu_seconds(), time.perf_counter()
        for sl in boxes:
            _compute_box(src, sl, buf)
        t1, c1 = time.perf_counter(), cpu_seconds()
    full = np.empty(case.shape, case.dtype, order="F")
    with _dask_threads():
        da.store(src, full, lock=False)
    raw = full[:64, :64, :64].tobytes(order="F")
    import zlib

    best = min(runs)
    emit_result(
        {
            "seconds": best[0],
            "cpu_seconds": best[1],
            "seconds_all": [r[0] for r in runs],
            "by_box_seconds": t1 - t0,
            "by_box_cpu_seconds": c1 - c0,
            "blocks": sink.blocks,
            "checksum": checksum(full.reshape((*case.shape, 1), order="F")),
            "gzip_ratio_first_chunk": len(raw) / len(zlib.compress(raw, 6)),
            "mean": float(full.mean(dtype=np.float64)),
        }
    )


def _worker_verify(path: str) -> None:
    import tensorstore as ts

    store = ts.open(tensorstore_spec(path), read=True).result()
    a = store.read(order="F").result()
    emit_result({"checksum": checksum(a)})


# -- driver ------------------------------------------------------------------------------------------


def _dir_stats(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _info_scale(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((path / "info").read_text())
        return info["scales"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _same_layout(scale: dict[str, Any] | None, case: VolumeSpec) -> bool:
    """The writer produced the requested scale: size, chunk, encoding, sharding, offset."""
    if scale is None:
        return False
    want = case.scale_metadata()
    got_sharding = {k: v for k, v in scale.get("sharding", {}).items()}
    return (
        list(scale.get("size", [])) == want["size"]
        and [list(c) for c in scale.get("chunk_sizes", [])] == [want["chunk_size"]]
        and scale.get("encoding") == want["encoding"]
        and list(scale.get("voxel_offset", [])) == want["voxel_offset"]
        and got_sharding == want["sharding"]
    )


def summarize(runs: list[dict[str, Any]], nbytes: int, shard: int) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1].get("error", "no runs") if runs else "no runs", "runs": runs}
    best = min(good, key=lambda r: r["seconds"])
    peaks = [r["peak_extra_bytes"] for r in good]
    peak = statistics.median(peaks)
    return {
        "best_seconds": round(best["seconds"], 4),
        "cpu_seconds": round(best["cpu_seconds"], 3),
        "mb_per_s": round(nbytes / best["seconds"] / 1e6, 1),
        "peak_extra_mib": round(peak / MiB, 1),
        "peak_extra_mib_max": round(max(peaks) / MiB, 1),
        "peak_per_shard": round(peak / shard, 3),
        "others_cores": best.get("others_cores"),
        "seconds_all": [round(r["seconds"], 4) for r in good],
        "seconds_by_round": [None if "error" in r else r["seconds"] for r in runs],
        "cpu_seconds_all": [round(r["cpu_seconds"], 3) for r in good],
        "peak_extra_mib_all": [round(p / MiB, 1) for p in peaks],
        "others_cores_all": [r.get("others_cores") for r in good],
        "baseline_rss_mib": round(best["baseline_rss_bytes"] / MiB, 1),
        "files": best.get("files"),
        "bytes_on_disk": best.get("bytes_on_disk"),
        "checksums": sorted({r.get("checksum") for r in good}),
        "correct_all": all(r.get("correct") for r in good),
        "errors": [r["error"] for r in runs if "error" in r],
        **{
            k: best[k]
            for k in ("writes", "outstanding_writes", "parallel", "objects_written")
            if k in best
        },  # fmt: skip
        **_summarize_cluster(good, shard),
    }


def _summarize_cluster(good: list[dict[str, Any]], shard: int) -> dict[str, Any]:
    """``--scheduler cluster`` runs: every worker's peak and the driver's (medians, runs)."""
    if not all(r.get("scheduler") == "cluster" for r in good):
        return {}
    best = min(good, key=lambda r: r["seconds"])
    driver = [r["driver_peak_extra_bytes"] for r in good]
    return {
        "scheduler": "cluster",
        "peak_is": "max over worker processes of (VmHWM - that worker's baseline)",
        "worker_peak_extra_mib_all": [
            [round(b / MiB, 1) for b in r["worker_peak_extra_bytes"]] for r in good
        ],
        "worker_peak_per_shard_all": [
            [round(b / shard, 3) for b in r["worker_peak_extra_bytes"]] for r in good
        ],
        "worker_baseline_rss_mib": [round(b / MiB, 1) for b in best["worker_baseline_rss_bytes"]],
        "worker_cpu_seconds": best["worker_cpu_seconds"],
        "worker_tables_built_during_write_all": [
            r["worker_tables_built_during_write"] for r in good
        ],
        "worker_tables_used_during_write_all": [r["worker_tables_used_during_write"] for r in good],
        "driver_peak_extra_mib": round(statistics.median(driver) / MiB, 1),
        "driver_peak_per_shard": round(statistics.median(driver) / shard, 3),
        "driver_peak_extra_mib_all": [round(b / MiB, 1) for b in driver],
        "driver_baseline_rss_mib": round(best["driver_baseline_rss_bytes"] / MiB, 1),
        "driver_cpu_seconds": best["driver_cpu_seconds"],
    }


def _block_bytes(case: VolumeSpec, input_chunk: tuple[int, ...]) -> int:
    """Bytes of the largest input block."""
    n = np.prod([min(c, s) for c, s in zip(input_chunk, case.shape)])
    return int(n) * np.dtype(case.dtype).itemsize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(
        p,
        data_dir_help=f"where volumes are written (under write/; default {DEFAULT_DATA_DIR})",
        quick_help="64 MiB volume: a smoke test",
        repeat_help="runs per (writer, case); best time",
    )
    p.add_argument(
        "--writers",
        nargs="+",
        choices=WRITERS,
        default=list(WRITERS),
        help="writers to run (default: all)",
    )
    p.add_argument(
        "--cases",
        nargs="+",
        choices=("raw", "gzip"),
        default=["raw", "gzip"],
        help="shard data_encoding cases to run (default: raw gzip)",
    )
    add_run_arguments(p, warmup_help="skip the untimed small write")
    p.add_argument(
        "--source-order",
        choices=("F", "C"),
        default="F",
        help="memory order of the source's Dask blocks (default F, x-fastest as read from "
        "precomputed volumes; C as from zarr/TIFF/most NumPy code)",
    )
    p.add_argument(
        "--input-chunks",
        default=",".join(map(str, INPUT_CHUNK)),
        help="the source's Dask chunks, x,y,z (default %(default)s); e.g. 512,256,256 aligned "
        "with the shards, 100,700,50 or 192,192,192 misaligned, 1024,512,512 larger",
    )
    p.add_argument(
        "--ts-outstanding",
        type=int,
        default=1,
        help="writes in flight for tensorstore-pipelined (default 1)",
    )
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="threads",
        help=f"where ours computes: threads (the threaded scheduler, {THREADS} threads; "
        f"default) or cluster (a distributed.LocalCluster of {CLUSTER_WORKERS} processes x 1 "
        "thread, peak memory per worker process; results write-cluster-*.json), where "
        "tensorstore-cluster runs tensorstore's loop too. The other writers always use threads",
    )
    p.add_argument("--keep", action="store_true", help="keep the written volumes")
    add_output_arguments(
        p,
        output_help="results JSON (default benchmarks/results/write-latest.json; "
        "write-quick.json with --quick; write-cluster-latest.json / write-cluster-quick.json "
        "with --scheduler cluster)",
    )
    args = p.parse_args(argv)

    if args.worker:
        worker(json.loads(args.worker))
        return 0

    script = Path(__file__).resolve()
    cases = [c for c in write_cases(args.quick) if c.sharding["data_encoding"] in args.cases]
    cluster = args.scheduler == "cluster"
    writers = [w for w in WRITERS if w in args.writers]
    if not cluster:
        if "tensorstore-cluster" in args.writers and args.writers != list(WRITERS):
            p.error("tensorstore-cluster needs --scheduler cluster")
        writers = [w for w in writers if w != "tensorstore-cluster"]
    suffix = "" if args.source_order == "F" else "-c-order"
    input_chunk = tuple(int(v) for v in args.input_chunks.split(","))
    if input_chunk != INPUT_CHUNK:
        suffix += "-input-" + "x".join(map(str, input_chunk))
    stem = "write-cluster" if cluster else "write"
    output = args.output or RESULTS_DIR / (
        f"{stem}-quick{suffix}.json" if args.quick else f"{stem}-latest{suffix}.json"
    )
    out_root = Path(args.data_dir) / "write"
    out_root.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(format_machine(machine), flush=True)
    print(f"data dir: {out_root}  repeat: {args.repeat}  quick: {args.quick}  "
          f"dask threads: {THREADS}", flush=True)  # fmt: skip
    if cluster:
        print(f"on a distributed.LocalCluster of {CLUSTER_WORKERS} worker processes x 1 thread: "
              f"{', '.join(ON_CLUSTER)} (other writers: threads)", flush=True)  # fmt: skip
    print(flush=True)

    # The data generation, alone: every writer pays it (once per voxel).
    first = cases[0]
    wait_for_quiet(args.max_wait)
    gen = run_worker(script, {"task": "generate", "case": _case_params(first), "repeat": 3,
                              "source_order": args.source_order,
                              "input_chunk": list(input_chunk)})  # fmt: skip
    if "error" in gen:
        print(f"generating the source failed: {gen['error']}")
        return 1
    reference = gen["checksum"]
    print(
        f"source: {first.nbytes / MiB:.0f} MiB uint8, dask chunks {input_chunk} "
        f"({args.source_order}-ordered blocks), "
        f"{gen['blocks']} blocks; generation alone {gen['seconds']:.2f} s "
        f"({first.nbytes / gen['seconds'] / 1e6:.0f} MB/s, cpu {gen['cpu_seconds']:.2f} s), "
        f"box by box into a Fortran buffer {gen['by_box_seconds']:.2f} s "
        f"(cpu {gen['by_box_cpu_seconds']:.2f} s); gzip ratio of a chunk "
        f"{gen['gzip_ratio_first_chunk']:.2f}; checksum {reference}",
        flush=True,
    )

    results: dict[str, dict[str, Any]] = {}
    for case in cases:
        nbytes, shard = case.nbytes, shard_bytes(case)
        print(f"\n{case.name} ({nbytes / MiB:.0f} MiB, shard box {shard_box(case)} chunks = "
              f"{shard / MiB:.0f} MiB, {len(shard_slices(case))} shards)", flush=True)  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {w: [] for w in writers}
        for rep in range(args.repeat):
            for w in writers:  # interleaved, so a noisy neighbour affects all writers alike
                path = out_root / f"{case.name}-{w}"
                for d in (path, Path(str(path) + ".warmup")):
                    shutil.rmtree(d, ignore_errors=True)
                os.sync()  # no dirty pages of an earlier run are flushed during this one
                load = wait_for_quiet(args.max_wait)
                payload = {"task": "write", "writer": w, "path": str(path),
                           "case": _case_params(case), "warmup": not args.no_warmup,
                           "opts": {"ts_outstanding": args.ts_outstanding},
                           "source_order": args.source_order,
                           "input_chunk": list(input_chunk),
                           "scheduler": args.scheduler}  # fmt: skip
                r = run_worker(script, payload)
                r["load_before"] = round(load, 2)
                if "error" not in r:
                    v = run_worker(script, {"task": "verify", "path": str(path),
                                            "case": _case_params(case)})  # fmt: skip
                    r["checksum"] = v.get("checksum", v.get("error"))
                    r["files"], r["bytes_on_disk"] = _dir_stats(path)
                    r["layout_ok"] = _same_layout(_info_scale(path), case)
                    r["correct"] = r["checksum"] == reference and r["layout_ok"]
                runs[w].append(r)
                if "error" in r:
                    print(f"  [{rep + 1}] {w:22s} ERROR {r['error']}", flush=True)
                else:
                    print(
                        f"  [{rep + 1}] {w:22s} {nbytes / r['seconds'] / 1e6:7.0f} MB/s "
                        f"{r['seconds']:7.3f} s  cpu {r['cpu_seconds']:6.2f} s  "
                        f"peak +{r['peak_extra_bytes'] / MiB:5.0f} MiB "
                        f"({r['peak_extra_bytes'] / shard:4.2f} shards)  "
                        f"others {r['others_cores']:.2f} cores  "
                        f"{'ok' if r['correct'] else 'WRONG: ' + str(r['checksum'])}",
                        flush=True,
                    )
                    if r.get("scheduler") == "cluster":
                        per = ", ".join(f"{b / MiB:.0f} MiB ({b / shard:.2f})"
                                        for b in r["worker_peak_extra_bytes"])  # fmt: skip
                        d = r["driver_peak_extra_bytes"]
                        print(f"      per worker: {per}; driver +{d / MiB:.0f} MiB "
                              f"({d / shard:.2f}); worker cpu {r['worker_cpu_seconds']} s, "
                              f"driver cpu {r['driver_cpu_seconds']:.2f} s", flush=True)  # fmt: skip
                if not args.keep:
                    shutil.rmtree(path, ignore_errors=True)
        results[case.name] = {w: summarize(runs[w], nbytes, shard) for w in writers}

    rows, targets, failures = [], [], []
    peak_targets = {}
    for case in cases:
        blocks = TARGET_WORKER_BLOCKS * _block_bytes(case, input_chunk) / shard_bytes(case)
        peak_targets[case.name] = (
            round(TARGET_WORKER_SHARDS + blocks, 3),
            f"peak memory{' per worker' if cluster else ''} <= {TARGET_WORKER_SHARDS:g} shards "
            f"+ {TARGET_WORKER_BLOCKS} input blocks = {TARGET_WORKER_SHARDS + blocks:.3g}",
        )
    cluster_notes: list[str] = []
    for case in cases:
        r = results[case.name]
        peak_target, peak_what = peak_targets[case.name]
        ts_rows = [(w, s) for w, s in r.items() if w in TENSORSTORE and "mb_per_s" in s]
        ts_best = max(ts_rows, key=lambda ws: ws[1]["mb_per_s"], default=(None, None))
        # per repeat round, the faster tensorstore mode
        ts_rounds = [
            min((t for t in ts if t), default=None)
            for ts in zip(*(s["seconds_by_round"] for _, s in ts_rows))
        ]
        for w, s in r.items():
            if "error" in s:
                rows.append([case.name, w, "ERROR"] + [""] * (11 if cluster else 10) + ["no"])
                failures.append(f"{case.name} / {w}: {s['error']}")
                continue
            if not s["correct_all"] or s["errors"]:
                failures.append(f"{case.name} / {w}: checksums {s['checksums']} (want "
                                f"{reference}), errors {s['errors']}")  # fmt: skip
            vs_ts = p_ts = None
            if w not in TENSORSTORE and ts_best[1] is not None:
                vs_ts = ratio(s["mb_per_s"], ts_best[1]["mb_per_s"])
                p_ts = paired_median(ts_rounds, s["seconds_by_round"])
            s["ratios"] = {
                "throughput_vs_best_tensorstore": None if vs_ts is None else round(vs_ts, 3),
                "throughput_vs_best_tensorstore_paired_median": None
                if p_ts is None
                else round(p_ts, 3),
                "best_tensorstore_mode": ts_best[0],
            }
            ts_cluster = r.get("tensorstore-cluster", {})
            if w == OURS and cluster and "mb_per_s" in ts_cluster:
                # both on the cluster: the same scheduler, the same workers' allocator
                same = ratio(s["mb_per_s"], ts_cluster["mb_per_s"])
                same_p = paired_median(ts_cluster["seconds_by_round"], s["seconds_by_round"])
                s["ratios"]["throughput_vs_tensorstore_cluster"] = round(same, 3)
                s["ratios"]["throughput_vs_tensorstore_cluster_paired_median"] = round(same_p, 3)
                cluster_notes.append(f"{case.name}: ours-cluster / tensorstore-cluster "
                                     f"{same:.2f} (paired {same_p:.2f})")  # fmt: skip
            if w == OURS:
                for what, val, tgt, hib in (
                    (f"throughput >= {TARGET_VS_TS}x tensorstore", vs_ts, TARGET_VS_TS, True),
                    (peak_what, s["peak_per_shard"], peak_target, False),
                ):  # fmt: skip
                    if val is not None:
                        met = val >= tgt if hib else val <= tgt
                        targets.append({"case": case.name, "writer": w, "target": what,
                                        "value": round(val, 3), "met": met})  # fmt: skip
            is_ours = w == OURS
            driver = []
            if cluster:
                d = s.get("driver_peak_extra_mib")
                driver = ["-" if d is None else f"{d:.0f}"]
            rows.append([
                case.name, w + ("-cluster" if cluster and is_ours else ""),
                f"{s['mb_per_s']:.0f}", f"{s['best_seconds']:.3f}",
                f"{s['cpu_seconds']:.2f}", f"{s['peak_extra_mib']:.0f}",
                fmt_ratio(s["peak_per_shard"], peak_target if is_ours else None, False),
                *driver,
                f"{s['others_cores']:.2f}",
                fmt_ratio(vs_ts, TARGET_VS_TS if is_ours else None),
                fmt_ratio(p_ts, TARGET_VS_TS if is_ours else None),
                f"{s['bytes_on_disk'] / MiB:.0f}", str(s["files"]),
                "yes" if s["correct_all"] and not s["errors"] else "NO",
            ])  # fmt: skip

    print("\n" + format_machine(machine))
    print(
        f"\nsource data generation alone (dask, {THREADS} threads, null sink): "
        f"{gen['seconds']:.2f} s = {first.nbytes / gen['seconds'] / 1e6:.0f} MB/s, "
        f"cpu {gen['cpu_seconds']:.2f} s; box by box into a Fortran buffer (as the "
        f"tensorstore/cloud-volume writers do): {gen['by_box_seconds']:.2f} s. "
        "Included in every writer's time.\n"
        f"MB/s: uncompressed bytes (1e6) / wall time of the whole write (info, data "
        f"generation, encoding, files in the page cache), best of {args.repeat}; cpu s: CPU "
        "time of that run;\npeak MiB: extra resident memory over the pre-write baseline "
        f"(median of runs); /shard: that over one uncompressed shard ({shard_bytes(first) / MiB:.0f}"
        " MiB);\nothers: cores used by other processes during the run; thr/TS: MB/s over "
        "the faster tensorstore mode; ~paired: median over rounds of the same ratio\n"
        "between runs made side by side; '!' marks a missed target (ours only); ok: "
        "tensorstore reads back the source checksum and the info has the requested layout."
    )
    if cluster:
        print(
            f"ours-cluster: on a LocalCluster of {CLUSTER_WORKERS} worker processes x 1 "
            "thread; cpu s: this process plus the workers; peak MiB and /shard: the largest "
            "worker's\nVmHWM over its own baseline (target per worker: "
            f"{TARGET_WORKER_SHARDS:g} shards + {TARGET_WORKER_BLOCKS} input blocks of "
            f"{input_chunk} = "
            + ", ".join(f"{t[0]:g}" for t in peak_targets.values())
            + " shards); driver MiB: the client process (client, scheduler, nannies)."
        )
    print(format_table(
        ["case", "writer", "MB/s", "best s", "cpu s", "peak MiB", "/shard",
         *(["driver MiB"] if cluster else []), "others",
         "thr/TS", "~paired", "disk MiB", "files", "ok"],
        rows,
    ))  # fmt: skip
    for note in cluster_notes:
        print(note)
    report = {
        "benchmark": "write",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_write.py", *(argv or sys.argv[1:])]),
        "repeat": args.repeat,
        "quick": args.quick,
        "dask_threads": THREADS,
        "scheduler": args.scheduler,
        **(
            {
                "cluster": {
                    "n_workers": CLUSTER_WORKERS,
                    "threads_per_worker": 1,
                    "processes": True,
                    "used_by": [w for w in writers if w in ON_CLUSTER],
                    "peak_target_shards": {k: v[0] for k, v in peak_targets.items()},
                }
            }
            if cluster
            else {}
        ),  # fmt: skip
        "machine": machine,
        "source": {
            "generator": "bench_write.source_block (EM-like, per-block, deterministic)",
            "shape": list(first.shape),
            "dtype": first.dtype,
            "dask_chunks": list(input_chunk),
            "value_tiles": list(INPUT_CHUNK),
            "block_order": args.source_order,
            "seed": first.seed,
            "checksum": reference,
            **{
                k: gen[k]
                for k in (
                    "seconds",
                    "cpu_seconds",
                    "seconds_all",
                    "by_box_seconds",
                    "by_box_cpu_seconds",
                    "blocks",
                    "gzip_ratio_first_chunk",
                    "mean",
                )
            },  # fmt: skip
        },
        "cases": [
            {
                "name": c.name,
                "description": c.description,
                "scale_metadata": c.scale_metadata(),
                "shard_box_chunks": shard_box(c),
                "shard_bytes": shard_bytes(c),
                "shards": len(shard_slices(c)),
                "uncompressed_bytes": c.nbytes,
            }
            for c in cases
        ],
        "results": results,
        "targets": targets,
        "correctness_failures": failures,
    }
    return finish(output, report, targets, failures, args.check_targets, ("case", "writer"))


if __name__ == "__main__":
    sys.exit(main())
