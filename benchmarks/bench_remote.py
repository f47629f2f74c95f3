"""Remote read benchmark: this package vs tensorstore over loopback HTTP, S3 and GCS.

    python benchmarks/bench_remote.py --quick       # ~4 min: 64 MiB volumes, 3 cutout repeats
    python benchmarks/bench_remote.py               # 256 MiB sharded / 128 MiB unsharded volumes
    python benchmarks/bench_remote.py --servers http s3 --repeat 3
    python benchmarks/bench_remote.py --with-fsspec --with-values --with-engine-class
        # also: the fsspec read path, chunks={} + .values, engine=<class> cold cutouts

Starts the servers itself, all on 127.0.0.1: nginx serving the volume directories with Range
(aiohttp's static server when nginx is not installed), moto S3 and fake-gcs-server (the
volumes are uploaded to both). For each server it measures, each run in a fresh process:

* full reads: MB/s of the whole volume, ``chunks=None`` (eager) and ``chunks={}`` +
  ``dask.array.store`` into a C-ordered buffer (the blocks' order), against tensorstore ``read(order="F")``;
* cold cutouts: a fresh process opens the volume and reads one 64^3 box, chunk-aligned and
  not; latency (and the part spent opening) and the HTTP requests the server received.

Imports of the reading library itself (``xarray_precomputed`` + ``xarray``, ``tensorstore``)
happen before the clock starts; everything after (fsspec backends, clients, credentials)
is billed. Full reads are best-of-``--repeat``; cutouts report medians. Ratios are ours /
tensorstore (throughput: higher is better; latency: lower is better). See README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_DATA_DIR,
    REPO,
    RESULT_PREFIX,
    RESULTS_DIR,
    VolumeSpec,
    add_hugepages_option,
    apply_hugepages_option,
    box_sharding,
    checksum,
    emit_result,
    ensure_volume,
    format_machine,
    format_table,
    machine_info,
    use_hugepages_option,
    wait_for_quiet,
    write_json,
)

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
sys.path.insert(0, str(REPO / "tests"))

SERVERS = ("http", "s3", "gcs")
FULL_READERS = ("tensorstore", "ours-eager", "ours-dask")
CUTOUT_READERS = ("tensorstore", "ours")
S3_REGION = "us-east-1"


def remote_volumes(quick: bool) -> list[VolumeSpec]:
    """Raw sharded, gzip sharded (16 MiB shards of 64 chunks) and raw unsharded volumes."""
    image = (512, 512, 256) if quick else (512, 512, 1024)
    flat = (256, 512, 256) if quick else (512, 512, 512)  # z: a multiple of 256 (builder)
    chunk = (64, 64, 64)
    common = dict(dtype="uint8", encoding="raw", generator="em_like", seed=1, chunk=chunk)
    return [
        VolumeSpec(
            name="r-raw-sharded",
            description="uint8 EM-like, raw, sharded (16 MiB shards, raw data encoding)",
            shape=image,
            sharding=box_sharding(image, chunk, 64, 8, "raw"),
            **common,
        ),
        VolumeSpec(
            name="r-gzip-sharded",
            description="uint8 EM-like, raw, sharded (16 MiB shards, gzip data encoding)",
            shape=image,
            sharding=box_sharding(image, chunk, 64, 8, "gzip"),
            **common,
        ),
        VolumeSpec(
            name="r-raw-unsharded",
            description="uint8 EM-like, raw, one object per 64^3 chunk",
            shape=flat,
            **common,
        ),
    ]


def cutout_boxes(shape: tuple[int, int, int]) -> dict[str, list[list[int]]]:
    """One 64^3 box on chunk boundaries (1 chunk) and one shifted by 32 (8 chunks)."""
    origin = [min(128, s - 96) // 64 * 64 for s in shape]
    return {
        "aligned": [[o, o + 64] for o in origin],
        "unaligned": [[o + 32, o + 96] for o in origin],
    }


# -- servers (parent process) --------------------------------------------------------------------


class NginxServer:
    """nginx serving ``root`` with Range on loopback; requests counted from its access log."""

    def __init__(self, root: Path, nopush: bool = True) -> None:
        import servers

        self._tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.log = self._tmp / "access.log"
        self.port = servers._free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        t = self._tmp
        conf = f"""
daemon off; {user} worker_processes 2; pid {t}/nginx.pid; error_log {t}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log {self.log}; default_type application/octet-stream;
  sendfile on; tcp_nopush {"on" if nopush else "off"}; keepalive_requests 1000000; keepalive_timeout 60;
  client_body_temp_path {t}/b; proxy_temp_path {t}/p; fastcgi_temp_path {t}/f;
  uwsgi_temp_path {t}/u; scgi_temp_path {t}/s;
  server {{ listen 127.0.0.1:{self.port}; root {Path(root).resolve()}; location / {{ }} }}
}}
"""
        (t / "nginx.conf").write_text(conf)
        self._proc = subprocess.Popen(
            [shutil.which("nginx") or "nginx", "-c", str(t / "nginx.conf"), "-p", str(t)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.storage_options: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(self.endpoint_url + "/", timeout=1).close()
                break
            except Exception as e:
                if getattr(e, "code", None):  # an HTTP error status: nginx is up
                    break
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    err = (t / "error.log").read_text()
                    raise RuntimeError(f"nginx did not start: {err}") from e
                time.sleep(0.05)

    def count(self) -> int:
        try:
            with open(self.log, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        shutil.rmtree(self._tmp, ignore_errors=True)


class Remote:
    """One started server with the volumes on it: URLs, options and tensorstore kvstores."""

    def __init__(
        self, name: str, data_dir: Path, volumes: list[VolumeSpec], nopush: bool = True
    ) -> None:
        import servers

        self.name = name
        self.urls: dict[str, str] = {}
        if name == "http":
            if shutil.which("nginx"):
                self.server: Any = NginxServer(data_dir, nopush)
                self.kind = f"nginx, tcp_nopush {'on' if nopush else 'off'}"
                for v in volumes:
                    self.urls[v.name] = f"{self.server.endpoint_url}/{v.directory(data_dir).name}"
            else:
                self.server = servers.HTTPServer()
                self.kind = "aiohttp"
                for v in volumes:
                    self.urls[v.name] = self.server.upload_dir(v.directory(data_dir), v.name)
        else:
            self.server = servers.S3Server() if name == "s3" else servers.GCSServer()
            self.kind = "moto" if name == "s3" else "fake-gcs-server"
            for v in volumes:
                self.urls[v.name] = self.server.upload_dir(v.directory(data_dir), v.name)
        self.storage_options = self.server.storage_options

    def direct_options(self) -> dict[str, Any]:
        """Options for full reads: GCS reads skip the (slow, Python) counting proxy."""
        if self.name == "gcs":
            return {**self.storage_options, "endpoint_url": self.server.upstream_url}
        return self.storage_options

    def ts_kvstore(self, volume: str, counted: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """tensorstore kvstore spec and the environment it needs."""
        url = self.urls[volume]
        if self.name == "http":
            return {"driver": "http", "base_url": url + "/"}, {}
        bucket, path = url.split("://", 1)[1].split("/", 1)
        if self.name == "s3":
            kv = {"driver": "s3", "bucket": bucket, "path": path + "/",
                  "endpoint": self.server.endpoint_url, "aws_region": S3_REGION}  # fmt: skip
            env = {
                "AWS_ACCESS_KEY_ID": self.server.key,
                "AWS_SECRET_ACCESS_KEY": self.server.secret,
            }
            return kv, env
        ep = self.server.endpoint_url if counted else self.server.upstream_url
        return {"driver": "gcs", "bucket": bucket, "path": path + "/"}, {
            "TENSORSTORE_GCS_HTTP_URL": ep
        }

    def count(self) -> int:
        return self.server.count()

    def stop(self) -> None:
        self.server.stop()


# -- worker side (a fresh process per measurement) -----------------------------------------------


def _open_ours(url: str, options: dict[str, Any], chunks: Any, engine: Any = "precomputed"):
    import xarray as xr

    return xr.open_dataset(url, engine=engine, chunks=chunks, storage_options=options)


def _read(payload: dict[str, Any], box: list[list[int]] | None) -> tuple[Any, float]:
    """Open and read ``box`` (None: everything); returns (array, seconds spent opening)."""
    import numpy as np

    reader, var = payload["reader"], payload["variable"]
    sel = None if box is None else tuple(slice(a, b) for a, b in box)
    t0 = time.perf_counter()
    if reader == "tensorstore":
        import tensorstore as ts

        spec = {"driver": "neuroglancer_precomputed", "kvstore": payload["kvstore"]}
        store = ts.open(spec, read=True).result()
        t_open = time.perf_counter() - t0
        if sel is not None:
            store = store[sel]
        return store.read(order="F").result(), t_open
    if reader == "ours-dask":
        import dask
        import dask.array as da

        ds = _open_ours(payload["url"], payload["options"], {})
        t_open = time.perf_counter() - t0
        arr = ds[var].data if sel is None else ds[var].data[sel]
        out = np.empty(arr.shape, arr.dtype)  # C order, as the blocks
        with dask.config.set(scheduler="threads"):
            da.store(arr, out, lock=False)
        return out, t_open
    if reader == "ours-values":  # chunks={} then .values: Dask's concatenation included
        import dask

        ds = _open_ours(payload["url"], payload["options"], {})
        t_open = time.perf_counter() - t0
        with dask.config.set(scheduler="threads"):
            return (ds[var] if sel is None else ds[var][sel]).values, t_open
    engine: Any = "precomputed"
    if payload.get("engine_class"):  # skips xarray's search of installed packages' entry points
        from xarray_precomputed import PrecomputedBackendEntrypoint as engine
    ds = _open_ours(payload["url"], payload["options"], None, engine)
    t_open = time.perf_counter() - t0
    v = ds[var] if sel is None else ds[var][sel]
    return v.values, t_open


def worker(payload: dict[str, Any]) -> None:
    os.environ.update(payload.get("env", {}))
    apply_hugepages_option()
    t_imports = time.perf_counter()
    import numpy as np

    if payload["reader"] == "tensorstore":
        import tensorstore  # noqa: F401
    else:
        import xarray  # noqa: F401

        import xarray_precomputed  # noqa: F401

        try:  # xarray imports it at its first Variable when installed: an import, not the open
            import dask.array  # noqa: F401
        except ImportError:
            pass
    t_imports = time.perf_counter() - t_imports
    if payload["kind"] == "full" and payload.get("warmup", True):
        _read(payload, [[0, 2], [0, 2], [0, 2]])  # imports, pools, clients: not timed
    t0 = time.perf_counter()
    arr, t_open = _read(payload, payload.get("box"))
    seconds = time.perf_counter() - t0
    a = np.asarray(arr)
    emit_result({"seconds": seconds, "open_seconds": t_open, "import_seconds": t_imports,
                 "checksum": checksum(a), "shape": list(a.shape)})  # fmt: skip


# -- driver side ---------------------------------------------------------------------------------


def run(payload: dict[str, Any], remote: Remote, timeout: float = 900) -> dict[str, Any]:
    """One fresh-process measurement; adds the requests the server received meanwhile."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(payload)]
    before = remote.count()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    requests = remote.count() - before
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            out = json.loads(line[len(RESULT_PREFIX) :])
            out["requests"] = requests
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"error": f"worker exited {proc.returncode}: " + " | ".join(tail)}


def _payload(remote: Remote, v: VolumeSpec, reader: str, kind: str, counted: bool) -> dict:
    kv, env = remote.ts_kvstore(v.name, counted)
    options = remote.storage_options if counted else remote.direct_options()
    if reader.endswith("/fsspec"):  # this package with storage_options={"reader": "fsspec"}
        reader, options = reader[: -len("/fsspec")], {**options, "reader": "fsspec"}
    engine_class = reader.endswith("/class")  # engine=PrecomputedBackendEntrypoint
    reader = reader.removesuffix("/class")
    return {"kind": kind, "reader": reader, "variable": v.variable, "url": remote.urls[v.name],
            "options": options, "kvstore": kv, "env": env,
            "engine_class": engine_class}  # fmt: skip


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--quick", action="store_true", help="64 MiB volumes, fewer repeats")
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="full reads per reader (best is kept); default 1 quick, 2 full",
    )
    p.add_argument(
        "--cutout-repeat",
        type=int,
        default=None,
        help="cold cutouts per reader and box (median); default 3 quick, 5 full",
    )
    p.add_argument("--skip-full", action="store_true", help="only the cold cutouts")
    p.add_argument(
        "--with-values",
        action="store_true",
        help="also time chunks={} + .values (full reads)",
    )
    p.add_argument(
        "--with-engine-class",
        action="store_true",
        help="also time cold cutouts opened with engine=PrecomputedBackendEntrypoint (no "
        "entry-point search by xarray)",
    )
    p.add_argument(
        "--with-fsspec",
        action="store_true",
        help="also measure this package with storage_options={'reader': 'fsspec'}",
    )
    p.add_argument("--skip-cutouts", action="store_true", help="only the full reads")
    p.add_argument(
        "--volumes",
        nargs="+",
        metavar="NAME",
        choices=[v.name for v in remote_volumes(True)],
        help="only these volumes (default all three)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=3.0,
        help="seconds to wait before each run for other processes to go quiet",
    )
    p.add_argument(
        "--nginx-nopush",
        choices=("on", "off"),
        default="on",
        help="nginx's tcp_nopush (TCP_CORK with sendfile); default on, as Debian's nginx.conf. "
        "With it on, loopback responses sometimes wait ~40 ms for a delayed ACK (docs/performance.md)",
    )
    p.add_argument("--output", type=Path, default=None)
    add_hugepages_option(p)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)  # fmt: skip
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    use_hugepages_option(args.numpy_hugepages)
    full_readers, cutout_readers = FULL_READERS, CUTOUT_READERS
    if args.with_fsspec:
        full_readers = (*FULL_READERS, "ours-eager/fsspec", "ours-dask/fsspec")
        cutout_readers = (*cutout_readers, "ours/fsspec")
    if args.with_values:
        full_readers = (*full_readers, "ours-values")
    if args.with_engine_class:
        cutout_readers = (*cutout_readers, "ours/class")
    repeat = args.repeat or (1 if args.quick else 2)
    cut_repeat = args.cutout_repeat or (3 if args.quick else 5)
    output = args.output or RESULTS_DIR / (
        "remote-quick.json" if args.quick else "remote-latest.json"
    )
    machine = machine_info()
    print(format_machine(machine), flush=True)
    volumes = [v for v in remote_volumes(args.quick) if not args.volumes or v.name in args.volumes]
    print("building volumes (skipped when already built)", flush=True)
    cache: dict = {}
    markers = {v.name: ensure_volume(v, args.data_dir, cache) for v in volumes}
    cache.clear()

    full_rows, cut_rows, failures = [], [], []
    results: dict[str, Any] = {"full": {}, "cutout": {}}
    for name in args.servers:
        t0 = time.perf_counter()
        remote = Remote(name, args.data_dir, volumes, args.nginx_nopush == "on")
        print(f"\n== {name} ({remote.kind}), ready in {time.perf_counter() - t0:.1f} s", flush=True)
        try:
            for v in [] if args.skip_full else volumes:
                best: dict[str, dict] = {}
                for rep in range(repeat):
                    # whichever reader runs first after a pause pays for it: alternate
                    for reader in full_readers[:: 1 if rep % 2 == 0 else -1]:
                        wait_for_quiet(args.max_wait)
                        r = run(_payload(remote, v, reader, "full", counted=False), remote)
                        if "error" in r:
                            print(f"  {v.name} {reader}: ERROR {r['error']}", flush=True)
                            failures.append(f"{name} {v.name} {reader}: {r['error']}")
                            continue
                        if r["checksum"] != markers[v.name]["checksum"]:
                            failures.append(f"{name} {v.name} {reader}: wrong data")
                        r["mb_per_s"] = v.nbytes / r["seconds"] / 1e6
                        print(f"  [{rep + 1}] {v.name:16s} {reader:12s} {r['mb_per_s']:7.0f} MB/s"
                              f"  {r['requests']:5d} requests", flush=True)  # fmt: skip
                        if reader not in best or r["seconds"] < best[reader]["seconds"]:
                            best[reader] = r
                results["full"][f"{name}/{v.name}"] = best
                mbs = {k: best.get(k, {}).get("mb_per_s") for k in full_readers}
                full_rows.append([
                    name, v.name, *(f"{mbs[k]:.0f}" if mbs[k] else "-" for k in full_readers),
                    _ratio(mbs["ours-eager"], mbs["tensorstore"]),
                    _ratio(mbs["ours-dask"], mbs["tensorstore"]),
                ])  # fmt: skip
            cut_volumes = [v for v in volumes if v.name != "r-gzip-sharded"]  # raw ones
            for v in [] if args.skip_cutouts else cut_volumes:
                for box_name, box in cutout_boxes(v.shape).items():
                    runs: dict[str, list[dict]] = {k: [] for k in cutout_readers}
                    for rep in range(cut_repeat):
                        for reader in cutout_readers[:: 1 if rep % 2 == 0 else -1]:
                            wait_for_quiet(args.max_wait)
                            pl = _payload(remote, v, reader, "cutout", counted=True)
                            r = run({**pl, "box": box}, remote)
                            if "error" in r:
                                failures.append(f"{name} {v.name} cutout {reader}: {r['error']}")
                                print(f"  cutout {reader}: ERROR {r['error']}", flush=True)
                                continue
                            runs[reader].append(r)
                    med = {
                        k: {
                            f: statistics.median(x[f] for x in rs)
                            for f in ("seconds", "open_seconds", "requests", "import_seconds")
                        }
                        for k, rs in runs.items()
                        if rs
                    }
                    sums = {x["checksum"] for rs in runs.values() for x in rs}
                    if len(sums) > 1:
                        failures.append(f"{name} {v.name} {box_name}: readers disagree")
                    results["cutout"][f"{name}/{v.name}/{box_name}"] = {"median": med, "runs": runs}
                    o, t = med.get("ours", {}), med.get("tensorstore", {})

                    def ms(d: dict) -> str:
                        if not d:
                            return "-"
                        return f"{d['seconds'] * 1e3:.0f} ({d['open_seconds'] * 1e3:.0f})"

                    def with_imports(d: dict) -> float | None:
                        return d["seconds"] + d["import_seconds"] if d else None

                    oi, ti = with_imports(o), with_imports(t)

                    cut_rows.append([
                        name, v.name, box_name, ms(o), ms(t),
                        _ratio(o.get("seconds"), t.get("seconds")),
                        o.get("requests", "-"), t.get("requests", "-"),
                        f"{oi * 1e3:.0f} / {ti * 1e3:.0f}" if oi and ti else "-", _ratio(oi, ti),
                        *([ms(med.get("ours/fsspec", {}))] if args.with_fsspec else []),
                        *([ms(med.get("ours/class", {}))] if args.with_engine_class else []),
                    ])  # fmt: skip
                    print(f"  cutout {v.name} {box_name}: ours {ms(o)} ms, tensorstore {ms(t)} ms,"
                          f" requests {o.get('requests')} / {t.get('requests')}", flush=True)  # fmt: skip
        finally:
            remote.stop()

    print()
    if full_rows:
        print(f"Full reads, MB/s (best of {repeat}; fresh process; open included)")
        print(format_table(["server", "volume", *full_readers,
                            "eager/ts", "chunks={}/ts"], full_rows))  # fmt: skip
        print()
    if cut_rows:
        print(
            f"Cold 64^3 cutouts, median of {cut_repeat}: ms total (open); requests; and with "
            "the imports (numpy + tensorstore, or numpy + xarray + this package)"
        )
        print(format_table(["server", "volume", "box", "ours ms", "tensorstore ms", "ours/ts",
                            "ours req", "ts req", "+imports ms ours / ts", "ratio",
                            *(["fsspec ms"] if args.with_fsspec else []),
                            *(["engine class ms"] if args.with_engine_class else [])],
                           cut_rows))  # fmt: skip
    write_json(output, {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "quick": args.quick, "volumes": markers, "results": results,
        "nginx_tcp_nopush": args.nginx_nopush, "failures": failures,
    })  # fmt: skip
    print(f"\nwrote {output}")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
