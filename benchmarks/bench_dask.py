"""Reads through Dask: this package with ``chunks={}`` against Dask's own ceiling, sharded
Zarr v3 and tensorstore, measured side by side in one run.

    python benchmarks/bench_dask.py              # 1 GiB image volumes + 256 MiB labels
    python benchmarks/bench_dask.py --quick      # 64 MiB volumes (~2 min)
    python benchmarks/bench_dask.py --volumes a d --repeat 5

Each measurement runs in a fresh process (``common.run_worker``). Readers:

- ``tensorstore``: ``read(order="F")``, the reference for throughput;
- ``eager``: ``open_dataset(chunks=None)[var].values``;
- ``values`` / ``values-isel``: ``open_dataset(chunks={})`` then ``.values`` of the whole
  variable / of a selection cutting through several shards (threaded scheduler);
- ``store``: ``da.store`` of the Dask array into a preallocated ``np.empty`` array;
- ``sum``: ``ds[var].sum().compute()``;
- ``ceiling`` / ``ceiling-isel``: Dask computing the same block layout with C-ordered
  blocks made by ``np.ones``: what Dask itself reaches, concatenation included;
- ``zarr``: the same data as sharded Zarr v3 (same chunk and shard shapes), read by
  xarray with ``chunks={}`` and ``.values``;
- ``cluster-sum``, ``cluster-values``, ``cluster-ceiling``: the same on a 2-worker
  ``distributed.LocalCluster(processes=True)`` (cluster start-up not timed).
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

from bench_read import read_volumes
from common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    MiB,
    PeakMemory,
    add_hugepages_option,
    apply_hugepages_option,
    checksum,
    emit_result,
    ensure_volume,
    format_machine,
    format_table,
    machine_info,
    run_worker,
    shard_box,
    tensorstore_spec,
    use_hugepages_option,
    wait_for_quiet,
    warm_page_cache,
    write_json,
)

ISEL = {"x": slice(100, 900), "y": slice(50, 1000), "z": slice(30, 700)}
READERS = ["tensorstore", "eager", "values", "store", "sum", "ceiling", "zarr", "values-isel",
           "ceiling-isel", "cluster-sum", "cluster-values", "cluster-ceiling"]  # fmt: skip
# (reader, baseline, target): ratio of throughputs reader / baseline that the issue asks for
TARGETS = [
    ("eager", "tensorstore", 1.0),
    ("values", "ceiling", 0.8),
    ("values", "zarr", 1.0),
    ("values-isel", "ceiling-isel", 0.8),
    ("store", "tensorstore", 1.0),
    ("sum", "tensorstore", 1.0),
    ("cluster-values", "cluster-ceiling", 0.8),
    ("cluster-sum", "tensorstore", 1.0),
]


# -- worker side ---------------------------------------------------------------------------------


def _isel(shape):
    return tuple(slice(s.start, min(s.stop, n)) for s, n in zip(ISEL.values(), shape))


def _open(path: str, chunks):
    import xarray as xr

    return xr.open_dataset(path, engine="precomputed", chunks=chunks)


def _ones_like_layout(chunks, dtype):
    import dask.array as da
    import numpy as np

    def block(block_info=None):
        return np.ones(block_info[None]["chunk-shape"], dtype)

    return da.map_blocks(block, chunks=chunks, dtype=dtype, meta=np.empty((0,) * 4, dtype))


def _measure(reader: str, path: str, variable: str) -> tuple[Any, dict]:
    """Runs one reader; returns (result, facts). Everything here is timed."""
    import dask.array as da
    import numpy as np

    if reader == "tensorstore":
        import tensorstore as ts

        return ts.open(tensorstore_spec(path), read=True).result().read(order="F").result(), {}
    if reader == "eager":
        return _open(path, None)[variable].values, {}
    if reader == "zarr":
        import xarray as xr

        return xr.open_zarr(path + ".zarr", chunks={}, consolidated=False)[variable].values, {}
    var = _open(path, {})[variable]
    if reader.endswith("-isel"):
        var = var[_isel(var.shape)]
    if "ceiling" in reader:
        arr = _ones_like_layout(var.data.chunks, var.dtype)
        return arr.compute(), {"blocks": int(np.prod(arr.numblocks))}
    facts = {"blocks": int(np.prod(var.data.numblocks))}
    if reader.startswith("values") or reader == "cluster-values":
        return var.values, facts
    if reader == "store":
        out = np.empty(var.shape, var.dtype)
        da.store(var.data, out, lock=False)
        return out, facts
    if reader.endswith("sum"):
        return int(var.sum(dtype=np.uint64).compute()), facts
    raise ValueError(reader)


def _warm_process(path: str, variable: str) -> None:
    """A tiny eager read in this process (run on each cluster worker before timing)."""
    _ = _open(path, None)[variable][:2, :2, :2].values


def worker(payload: dict[str, Any]) -> None:
    apply_hugepages_option()
    import dask
    import numpy as np

    reader, path, variable = payload["reader"], payload["path"], payload["variable"]
    client = None
    if reader.startswith("cluster"):
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        # direct: results travel worker -> client; otherwise through the scheduler
        client = Client(cluster, direct_to_workers=payload.get("direct_to_workers"))
    ctx = dask.config.set(scheduler="threads") if client is None else dask.config.set({})
    with ctx:
        # untimed warm-up: imports, library set-up, thread pools, the cluster's first tasks
        if reader == "tensorstore":
            import tensorstore as ts

            ts.open(tensorstore_spec(path), read=True).result()[:2, :2, :2].read().result()
        elif reader == "zarr":
            import xarray as xr

            _ = xr.open_zarr(path + ".zarr", chunks={}, consolidated=False)[variable][
                :2, :2, :2
            ].values
        else:
            _ = _open(path, {} if client else None)[variable][:2, :2, :2].values
            if client is not None:  # every worker process: imports, decoder set-up
                client.run(_warm_process, path, variable)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            result, facts = _measure(reader, path, variable)
            seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"seconds": seconds, "peak_extra_bytes": mem.extra, **facts}
    if isinstance(result, int):
        out["sum"] = result
    else:
        a = np.asarray(result)
        out["c_contiguous"] = bool(a.flags.c_contiguous)
        out["nbytes"] = a.nbytes
        if "ceiling" not in reader and not reader.endswith("-isel"):
            out["checksum"] = checksum(a)
            out["sum"] = int(a.sum(dtype=np.uint64))
    if client is not None:
        client.close()
    emit_result(out)


# -- zarr copies ---------------------------------------------------------------------------------


def ensure_zarr(v, path: Path) -> None:
    """A sharded Zarr v3 copy of the volume with the same chunk and shard (or block) shape."""
    import tensorstore as ts

    target = Path(str(path) + ".zarr")
    if (target / ".complete").exists():
        return
    src = ts.open(tensorstore_spec(path), read=True).result()
    box = shard_box(v)
    shard = (
        [c * b for c, b in zip(v.chunk, box)]
        if box
        else [v.chunk[0] * 4, v.chunk[1] * 4, v.chunk[2] * 4]
    )
    shape = list(src.shape)
    inner_codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if v.encoding != "raw" or (v.sharding or {}).get("data_encoding") == "gzip":
        inner_codecs.append({"name": "gzip", "configuration": {"level": 1}})
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(target) + "/" + v.variable},
        "metadata": {
            "shape": shape,
            "data_type": v.dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [*shard, shape[3]]}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [*v.chunk, shape[3]], "codecs": inner_codecs,
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                 {"name": "crc32c"}]}}],
            "dimension_names": ["x", "y", "z", "channel"],
        },
        "create": True,
        "delete_existing": True,
    }  # fmt: skip
    dst = ts.open(spec).result()
    dst.write(src.read().result()).result()
    # xarray needs the group's zarr.json beside the array
    (target / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {}}))  # fmt: skip
    (target / ".complete").write_text("")


# -- driver side ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--quick", action="store_true", help="64 MiB volumes")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--readers", nargs="+", choices=READERS, default=READERS)
    p.add_argument("--volumes", nargs="+", metavar="PREFIX")
    p.add_argument("--max-wait", type=float, default=5.0)
    p.add_argument("--output", type=Path,
                   help="results JSON (default results/dask-latest.json, dask-quick.json "
                        "with --quick)")  # fmt: skip
    p.add_argument(
        "--direct-to-workers",
        action="store_true",
        help="cluster readers' Client(direct_to_workers=True): results gathered from the "
        "workers, not through the scheduler (distributed's default for a client)",
    )
    add_hugepages_option(p)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    use_hugepages_option(args.numpy_hugepages)  # cluster readers' own workers keep NumPy's

    volumes = read_volumes(args.quick)
    if args.volumes:
        volumes = [v for v in volumes if any(v.name.startswith(s) for s in args.volumes)]
    machine = machine_info()
    print(format_machine(machine), flush=True)
    markers = {v.name: ensure_volume(v, args.data_dir, {}) for v in volumes}
    results: dict[str, Any] = {}
    rows, missed, wrong = [], [], []
    for v in volumes:
        path = v.directory(args.data_dir)
        if "zarr" in args.readers:
            ensure_zarr(v, path)
        warm_page_cache(path)
        print(f"\n{v.name} ({v.nbytes / MiB:.0f} MiB)", flush=True)
        runs: dict[str, list[dict]] = {r: [] for r in args.readers}
        for rep in range(args.repeat):
            # interleaved, so a noisy neighbour hits all alike; the order reversed every
            # other round, so none is always first after a pause (memory the machine has
            # reclaimed in between costs more to touch)
            order = args.readers if rep % 2 == 0 else args.readers[::-1]
            for reader in order:
                wait_for_quiet(args.max_wait)
                r = run_worker(Path(__file__).resolve(),
                               {"reader": reader, "path": str(path), "variable": v.variable,
                                "direct_to_workers": args.direct_to_workers or None})  # fmt: skip
                runs[reader].append(r)
                nbytes = r.get("nbytes", v.nbytes)
                msg = r.get("error") or (f"{nbytes / r['seconds'] / 1e6:7.0f} MB/s "
                                         f"{r['seconds']:6.3f} s peak +{r['peak_extra_bytes'] / MiB:5.0f} MiB"
                                         f" others {r['others_cores']:.2f}")  # fmt: skip
                print(f"  [{rep + 1}] {reader:16s} {msg}", flush=True)
        ref = markers[v.name]["checksum"]
        ts_sum = next((r.get("sum") for r in runs.get("tensorstore", []) if "sum" in r), None)
        summary: dict[str, Any] = {}
        for reader, rr in runs.items():
            good = [r for r in rr if "error" not in r]
            if not good:
                summary[reader] = {"error": rr[-1].get("error")}
                continue
            nbytes = good[0].get("nbytes", v.nbytes)
            best = min(r["seconds"] for r in good)
            summary[reader] = {
                "mb_per_s": round(nbytes / best / 1e6, 1),
                "median_mb_per_s": round(nbytes / statistics.median(r["seconds"] for r in good) / 1e6, 1),
                "seconds_by_round": [r.get("seconds") for r in rr],
                "peak_extra_mib": round(statistics.median(r["peak_extra_bytes"] for r in good) / MiB, 1),
                "c_contiguous": good[0].get("c_contiguous"),
                "blocks": good[0].get("blocks"),
            }  # fmt: skip
            for r in good:
                bad = ("checksum" in r and r["checksum"] != ref) or (
                    ts_sum is not None and "sum" in r and r["sum"] != ts_sum
                )
                if bad:
                    wrong.append(f"{v.name} / {reader}")
                    break
        results[v.name] = summary
        for reader, base, target in TARGETS:
            a, b = summary.get(reader, {}), summary.get(base, {})
            if "seconds_by_round" not in a or "seconds_by_round" not in b:
                continue
            pairs = [y / x for x, y in zip(a["seconds_by_round"], b["seconds_by_round"]) if x and y]
            if not pairs:
                continue
            ratio = statistics.median(pairs)
            a.setdefault("ratios", {})[f"vs_{base}"] = round(ratio, 3)
            ok = ratio >= target
            if not ok:
                missed.append(f"{v.name}: {reader} / {base} = {ratio:.2f} < {target}")
            rows.append([v.name, reader, base, f"{a['median_mb_per_s']:.0f}",
                         f"{b['median_mb_per_s']:.0f}", f"{ratio:.2f}", f">= {target}",
                         "yes" if ok else "NO", f"{a['peak_extra_mib']:.0f}"])  # fmt: skip

    print("\n" + format_machine(machine))
    print("\nratio: median over repeat rounds of the side-by-side throughput ratio; MB/s: medians;"
          " peak: extra resident MiB of the reader's process")  # fmt: skip
    print(format_table(["volume", "reader", "vs", "MB/s", "vs MB/s", "ratio", "target", "met",
                        "peak MiB"], rows))  # fmt: skip
    for m in missed:
        print("  MISSED", m)
    for w in wrong:
        print("  WRONG RESULT", w)
    output = args.output or RESULTS_DIR / ("dask-quick.json" if args.quick else "dask-latest.json")
    write_json(output, {
        "benchmark": "dask", "quick": args.quick, "repeat": args.repeat, "machine": machine,
        "direct_to_workers": args.direct_to_workers,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": results, "missed": missed, "wrong": wrong,
    })  # fmt: skip
    print(f"\nwrote {output}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
