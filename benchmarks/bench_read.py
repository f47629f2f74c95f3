"""Whole-volume read benchmark: xarray_precomputed vs tensorstore vs cloud-volume.

    python benchmarks/bench_read.py              # full: 1 GiB image volumes, 256 MiB segmentation
    python benchmarks/bench_read.py --quick      # smoke test: 64 MiB volumes
    python benchmarks/bench_read.py --repeat 5 --data-dir /scratch/bench

Volumes are built once with tensorstore (skipped when a valid build with the same
parameter hash exists). Every (reader, volume, repeat) measurement runs in a fresh
subprocess with a warm page cache; see README.md in this directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    MiB,
    PeakMemory,
    VolumeSpec,
    box_sharding,
    checksum,
    cpu_seconds,
    emit_result,
    ensure_volume,
    format_machine,
    format_table,
    machine_info,
    package_source_hash,
    run_worker,
    shard_box,
    tensorstore_spec,
    wait_for_quiet,
    warm_page_cache,
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

READERS = ("tensorstore", "ours-eager", "ours-dask", "ours-dask-values", "cloud-volume")
# ours-dask-values (dask's own .values, a C-ordered concatenate) only runs when asked for.
DEFAULT_READERS = ("tensorstore", "ours-eager", "ours-dask", "cloud-volume")
OURS = ("ours-eager", "ours-dask")
REFERENCE = "tensorstore"
# Targets from the issue: ours/tensorstore throughput >= 1, ours/cloud-volume >= 4,
# ours/tensorstore peak memory <= 1.
TARGET_VS_TS, TARGET_VS_CV, TARGET_MEM_VS_TS = 1.0, 4.0, 1.0
# cloud-volume settings measured by default: parallel=1 (threads) and parallel=2 (processes);
# cloud-volume ignores `parallel` on sharded volumes (README.md). Ratios use the faster.
DEFAULT_CV_PARALLEL = (1, 2)


def read_volumes(quick: bool) -> list[VolumeSpec]:
    """The four benchmark volumes (a-d); ``quick`` shrinks each to 64 MiB."""
    image = (512, 512, 256) if quick else (1024, 1024, 1024)
    seg = (256, 256, 128) if quick else (512, 512, 128)
    chunk = (64, 64, 64)
    common = dict(dtype="uint8", encoding="raw", generator="em_like", seed=1, chunk=chunk)
    # 128 chunks of 256 KiB = 32 MiB per shard (an 8x4x4-chunk box), 8-chunk minishards.
    raw_shards = box_sharding(image, chunk, 128, 8, "raw")
    gzip_shards = box_sharding(image, chunk, 128, 8, "gzip")
    # 16 chunks of 2 MiB = 32 MiB (uncompressed) per shard.
    seg_shards = box_sharding(seg, chunk, 16, 8, "gzip")
    return [
        VolumeSpec(
            name="a-uint8-raw-sharded",
            description="uint8 EM-like, raw chunks, sharded (raw data encoding)",
            shape=image,
            sharding=raw_shards,
            **common,
        ),
        VolumeSpec(
            name="b-uint8-raw-unsharded",
            description="uint8 EM-like, raw chunks, one file per chunk",
            shape=image,
            **common,
        ),
        VolumeSpec(
            name="c-uint8-raw-sharded-gzip",
            description="uint8 EM-like, raw chunks, sharded with gzip data encoding",
            shape=image,
            sharding=gzip_shards,
            **common,
        ),
        VolumeSpec(
            name="d-uint64-cseg-sharded",
            description="uint64 labels, compressed_segmentation 8^3, sharded (gzip)",
            shape=seg,
            dtype="uint64",
            encoding="compressed_segmentation",
            cseg_block=(8, 8, 8),
            volume_type="segmentation",
            generator="blocky_labels",
            seed=2,
            chunk=chunk,
            sharding=seg_shards,
        ),
    ]


# -- worker side (runs in a fresh subprocess per measurement) ------------------------------------
#
# Each reader function opens the volume and reads ``sel`` (None: the whole volume, else a tuple
# of x, y, z slices), returning (array, time after open, extra facts). The worker first reads
# a tiny corner with the same function (untimed) so that lazy imports, thread pools and
# library initialisation are not billed to the whole-volume read; no reader caches data.

Sel = tuple[slice, slice, slice] | None


def _read_ours_eager(path: str, variable: str, opts: dict[str, Any], sel: Sel):
    import xarray as xr

    ds = xr.open_dataset(path, engine="precomputed", chunks=None)
    t_open = time.perf_counter()
    da = ds[variable] if sel is None else ds[variable][sel]
    return da.values, t_open, {}


def _read_ours_dask(path: str, variable: str, opts: dict[str, Any], sel: Sel):
    import dask
    import dask.array as da
    import numpy as np
    import xarray as xr

    ds = xr.open_dataset(path, engine="precomputed", chunks={})
    t_open = time.perf_counter()
    arr = ds[variable].data
    if sel is not None:
        arr = arr[sel]
    # Store into a C-ordered buffer, the blocks' own order: one straight copy per block.
    out = np.empty(arr.shape, arr.dtype)
    with dask.config.set(scheduler="threads"):
        da.store(arr, out, lock=False)
    return out, t_open, {"dask_blocks": int(np.prod(arr.numblocks)), "chunksize": arr.chunksize}


def _read_ours_dask_values(path: str, variable: str, opts: dict[str, Any], sel: Sel):
    import dask
    import xarray as xr

    ds = xr.open_dataset(path, engine="precomputed", chunks={})
    t_open = time.perf_counter()
    da = ds[variable] if sel is None else ds[variable][sel]
    with dask.config.set(scheduler="threads"):
        return da.values, t_open, {}


def _read_tensorstore(path: str, variable: str, opts: dict[str, Any], sel: Sel):
    import tensorstore as ts

    store = ts.open(tensorstore_spec(path), read=True).result()
    t_open = time.perf_counter()
    if sel is not None:
        store = store[sel]
    return store.read(order="F").result(), t_open, {}


def _read_cloudvolume(path: str, variable: str, opts: dict[str, Any], sel: Sel):
    from cloudvolume import CloudVolume

    parallel = opts.get("cv_parallel", 1)
    vol = CloudVolume(
        "file://" + str(Path(path).resolve()), fill_missing=True, progress=False, parallel=parallel
    )
    t_open = time.perf_counter()
    return vol[sel or (slice(None),) * 3], t_open, {"parallel": parallel}


READ_FUNCTIONS = {
    "ours-eager": _read_ours_eager,
    "ours-dask": _read_ours_dask,
    "ours-dask-values": _read_ours_dask_values,
    "tensorstore": _read_tensorstore,
    "cloud-volume": _read_cloudvolume,
}
WARMUP_SEL = (slice(0, 2), slice(0, 2), slice(0, 2))


def worker(payload: dict[str, Any]) -> None:
    reader, path, variable = payload["reader"], payload["path"], payload["variable"]
    opts = payload.get("opts", {})
    fn = READ_FUNCTIONS[reader]
    import numpy as np

    if payload.get("warmup", True):
        fn(path, variable, opts, WARMUP_SEL)
    with PeakMemory() as mem:
        c0, t0 = cpu_seconds(), time.perf_counter()
        arr, t_open, extra = fn(path, variable, opts, None)
        t1, c1 = time.perf_counter(), cpu_seconds()
    a = np.asarray(arr)
    emit_result(
        {
            "seconds": t1 - t0,
            "open_seconds": t_open - t0,
            "cpu_seconds": c1 - c0,
            "peak_extra_bytes": mem.extra,
            "baseline_rss_bytes": mem.baseline,
            "peak_method": mem.method,
            "f_contiguous": bool(a.flags.f_contiguous),
            "checksum": checksum(a),
            "package_source_sha256": package_source_hash(),
            **extra,
        }
    )


# -- driver side ---------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], nbytes: int) -> dict[str, Any]:
    """Best time (and that run's CPU time), median peak memory, all runs kept for the JSON."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1].get("error", "no runs"), "runs": runs}
    best = min(good, key=lambda r: r["seconds"])
    peaks = [r["peak_extra_bytes"] for r in good]
    return {
        "best_seconds": round(best["seconds"], 4),
        "open_seconds": round(best["open_seconds"], 4),
        "cpu_seconds": round(best["cpu_seconds"], 3),
        "mb_per_s": round(nbytes / best["seconds"] / 1e6, 1),
        "peak_extra_mib": round(statistics.median(peaks) / MiB, 1),
        "peak_extra_mib_max": round(max(peaks) / MiB, 1),
        "others_cores": best.get("others_cores"),
        "seconds_all": [round(r["seconds"], 4) for r in good],
        # per repeat round, None where the run failed: for ratios of runs made side by side
        "seconds_by_round": [None if "error" in r else r["seconds"] for r in runs],
        "cpu_by_round": [None if "error" in r else r["cpu_seconds"] for r in runs],
        "cpu_seconds_all": [round(r["cpu_seconds"], 3) for r in good],
        "peak_extra_mib_all": [round(p / MiB, 1) for p in peaks],
        "others_cores_all": [r.get("others_cores") for r in good],
        "checksum": best["checksum"],
        "checksums_agree": len({r["checksum"] for r in good}) == 1,
        "f_contiguous": best["f_contiguous"],
        "errors": [r["error"] for r in runs if "error" in r],
        **{k: best[k] for k in ("dask_blocks", "chunksize", "parallel") if k in best},
    }


def _reader_list(names: list[str], cv_parallel: list[int]) -> list[tuple[str, str, dict]]:
    """(label, reader function key, options) per configured reader, tensorstore first."""
    out = []
    for name in READERS:
        if name not in names and not (name == REFERENCE):
            continue
        if name == "cloud-volume":
            out += [(f"cloud-volume p={p}", name, {"cv_parallel": p}) for p in cv_parallel]
        else:
            out.append((name, name, {}))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(
        p,
        data_dir_help=f"where test volumes are built and kept (default {DEFAULT_DATA_DIR})",
        quick_help="64 MiB volumes: a smoke test",
        repeat_help="runs per (reader, volume); best time",
    )
    p.add_argument(
        "--readers",
        nargs="+",
        choices=READERS,
        default=list(DEFAULT_READERS),
        help="readers to run (tensorstore always runs: it is the reference); default: "
        + " ".join(DEFAULT_READERS),
    )
    p.add_argument(
        "--volumes",
        nargs="+",
        metavar="PREFIX",
        help="subset of volumes by name prefix, e.g. --volumes a d",
    )
    p.add_argument(
        "--cv-parallel",
        type=int,
        nargs="+",
        default=list(DEFAULT_CV_PARALLEL),
        help="cloud-volume 'parallel' settings to run; ratios use the fastest "
        f"(default {' '.join(map(str, DEFAULT_CV_PARALLEL))})",
    )
    add_run_arguments(
        p, warmup_help="skip the untimed tiny read each worker does before the timed read"
    )
    add_output_arguments(
        p,
        output_help="results JSON (default benchmarks/results/read-latest.json; "
        "read-quick.json with --quick)",
    )
    args = p.parse_args(argv)  # fmt: skip

    if args.worker:
        worker(json.loads(args.worker))
        return 0

    readers = _reader_list(args.readers, args.cv_parallel)
    volumes = read_volumes(args.quick)
    if args.volumes:
        volumes = [v for v in volumes if any(v.name.startswith(s) for s in args.volumes)]
    output = args.output or RESULTS_DIR / ("read-quick.json" if args.quick else "read-latest.json")
    machine = machine_info()
    print(format_machine(machine), flush=True)
    print(f"data dir: {args.data_dir}  repeat: {args.repeat}  quick: {args.quick}\n", flush=True)

    print("building volumes (skipped when already built)", flush=True)
    cache: dict = {}
    markers = {v.name: ensure_volume(v, args.data_dir, cache) for v in volumes}
    cache.clear()

    results: dict[str, dict[str, Any]] = {}
    all_runs: list[list[dict[str, Any]]] = []
    for v in volumes:
        path = str(v.directory(args.data_dir))
        warm_page_cache(Path(path))  # the untimed read: every run below hits the page cache
        print(f"\n{v.name} ({v.nbytes / MiB:.0f} MiB, {markers[v.name]['bytes'] / MiB:.1f} MiB "
              "on disk)", flush=True)  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in readers}
        # Interleave the readers so that a noisy neighbour affects all of them alike.
        for rep in range(args.repeat):
            for label, reader, opts in readers:
                load = wait_for_quiet(args.max_wait)
                payload = {"reader": reader, "path": path, "variable": v.variable, "opts": opts,
                           "warmup": not args.no_warmup}  # fmt: skip
                r = run_worker(Path(__file__).resolve(), payload)
                r["load_before"] = round(load, 2)
                runs[label].append(r)
                if "error" in r:
                    print(f"  [{rep + 1}] {label:18s} ERROR {r['error']}", flush=True)
                else:
                    print(
                        f"  [{rep + 1}] {label:18s} {v.nbytes / r['seconds'] / 1e6:7.0f} MB/s "
                        f"{r['seconds']:7.3f} s  cpu {r['cpu_seconds']:6.2f} s  "
                        f"peak +{r['peak_extra_bytes'] / MiB:5.0f} MiB  "
                        f"others {r['others_cores']:.2f} cores",
                        flush=True,
                    )
        results[v.name] = {label: summarize(runs[label], v.nbytes) for label, _, _ in readers}
        all_runs += [runs[label] for label, _, _ in readers if label.startswith("ours")]

    # the package may be edited while a long benchmark runs: say so if it was
    sources = sorted({r.get("package_source_sha256") for rr in all_runs for r in rr} - {None})

    # correctness: every reader's checksum equals tensorstore's and the build's reference
    failures = []
    for v in volumes:
        ref = markers[v.name]["checksum"]
        ts_sum = results[v.name][REFERENCE].get("checksum")
        for label, s in results[v.name].items():
            ok = "error" not in s and s["checksum"] == ts_sum == ref and s["checksums_agree"]
            s["correct"] = ok
            if not ok:
                failures.append(f"{v.name} / {label}: checksum {s.get('checksum')} != {ref}")

    rows = []
    targets = []
    for v in volumes:
        r = results[v.name]
        ts_r = r[REFERENCE]
        cvs = [s for label, s in r.items() if label.startswith("cloud-volume") and "mb_per_s" in s]
        cv_best = max((s["mb_per_s"] for s in cvs), default=None)
        # per round, the fastest cloud-volume setting
        cv_rounds = [
            min((t for t in times if t), default=None)
            for times in zip(*(s["seconds_by_round"] for s in cvs))
        ]
        for label, _, _ in readers:
            s = r[label]
            if "error" in s:
                rows.append([v.name, label, "ERROR"] + [""] * 11 + ["no"])
                continue
            vs_ts = vs_cv = mem_ts = p_ts = p_cv = p_cpu = None
            if label in OURS:
                vs_ts = ratio(s["mb_per_s"], ts_r.get("mb_per_s"))
                vs_cv = ratio(s["mb_per_s"], cv_best)
                mem_ts = ratio(
                    max(s["peak_extra_mib"], 1.0), max(ts_r.get("peak_extra_mib", 0), 1.0)
                )
                if "seconds_by_round" in ts_r:
                    p_ts = paired_median(ts_r["seconds_by_round"], s["seconds_by_round"])
                    p_cpu = paired_median(s["cpu_by_round"], ts_r["cpu_by_round"])
                p_cv = paired_median(cv_rounds, s["seconds_by_round"])
                s["ratios"] = {
                    k: None if x is None else round(x, 3)
                    for k, x in (
                        ("throughput_vs_tensorstore", vs_ts),
                        ("throughput_vs_best_cloudvolume", vs_cv),
                        ("peak_memory_vs_tensorstore", mem_ts),
                        ("throughput_vs_tensorstore_paired_median", p_ts),
                        ("throughput_vs_cloudvolume_paired_median", p_cv),
                        ("cpu_time_vs_tensorstore_paired_median", p_cpu),
                    )
                }
                for what, val, tgt, hib in (
                    ("throughput >= tensorstore", vs_ts, TARGET_VS_TS, True),
                    ("throughput >= 4x cloud-volume", vs_cv, TARGET_VS_CV, True),
                    ("peak memory <= tensorstore", mem_ts, TARGET_MEM_VS_TS, False),
                ):
                    if val is not None:
                        met = val >= tgt if hib else val <= tgt
                        targets.append({"volume": v.name, "reader": label, "target": what,
                                        "value": round(val, 3), "met": met})  # fmt: skip
            rows.append([
                v.name, label, f"{s['mb_per_s']:.0f}", f"{s['best_seconds']:.3f}",
                f"{s['cpu_seconds']:.2f}", f"{s['peak_extra_mib']:.0f}",
                f"{s['others_cores']:.2f}",
                fmt_ratio(vs_ts, TARGET_VS_TS), fmt_ratio(p_ts, TARGET_VS_TS),
                fmt_ratio(vs_cv, TARGET_VS_CV), fmt_ratio(p_cv, TARGET_VS_CV),
                "-" if p_cpu is None else f"{p_cpu:.2f}",
                fmt_ratio(mem_ts, TARGET_MEM_VS_TS, False),
                "yes" if s["correct"] else "NO",
            ])  # fmt: skip

    print("\n" + format_machine(machine))
    print(
        f"\nMB/s: uncompressed bytes (1e6) per second, best of {args.repeat} (wall time of "
        "open + whole-volume read, warm page cache); cpu s: CPU time of that run;\n"
        "peak MiB: extra resident memory over the pre-read baseline (median of runs), "
        "output array included;\nothers: CPU cores used by other processes during that run; "
        "thr/TS, mem/TS: ours / tensorstore;\nthr/CV: ours / fastest cloud-volume setting; "
        "~paired: median over repeat rounds of the same ratio between runs made side by side\n"
        "(robust to a neighbour's load changing); cpu/TS~: paired median of ours / tensorstore "
        "CPU time (lower is better);\n'!' marks a missed target; ok: checksum equals "
        "tensorstore's and the build's."
    )
    print(format_table(
        ["volume", "reader", "MB/s", "best s", "cpu s", "peak MiB", "others", "thr/TS",
         "~paired", "thr/CV", "~paired", "cpu/TS~", "mem/TS", "ok"],
        rows,
    ))  # fmt: skip
    notes = []
    if len(sources) > 1:
        notes.append(f"\nWARNING: the package source changed during the benchmark "
                     f"({', '.join(sources)}); results mix versions, rerun")  # fmt: skip

    report = {
        "benchmark": "read",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_read.py", *(argv or sys.argv[1:])]),
        "repeat": args.repeat,
        "quick": args.quick,
        "machine": machine,
        "volumes": [
            {
                "name": v.name,
                "description": v.description,
                "shape": list(v.shape),
                "dtype": v.dtype,
                "encoding": v.encoding,
                "chunk": list(v.chunk),
                "sharding": v.sharding,
                "shard_box_chunks": shard_box(v),
                "uncompressed_bytes": v.nbytes,
                "bytes_on_disk": markers[v.name]["bytes"],
                "files": markers[v.name]["files"],
                "param_hash": v.param_hash(),
                "checksum": markers[v.name]["checksum"],
            }
            for v in volumes
        ],
        "results": results,
        "targets": targets,
        "correctness_failures": failures,
        "package_sources_seen": sources,
    }
    return finish(
        output, report, targets, failures, args.check_targets, ("volume", "reader"), notes
    )


if __name__ == "__main__":
    sys.exit(main())
