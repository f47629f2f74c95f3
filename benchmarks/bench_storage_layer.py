"""Storage layer alone: this package's fsspec-based Store vs obstore, on loopback servers.

    python benchmarks/bench_storage_layer.py [--repeat 5] [--servers http s3 gcs]

Needs ``obstore`` (``pip install obstore``; not a dependency of the package). Uses the
raw sharded volume of ``bench_remote.py --quick`` (built if missing) and, each in a fresh
process:

* cold: import the storage library (fsspec's backend, or obstore), make the client, GET
  ``info`` and 3 ranged GETs of a shard (what a cold sharded cutout asks of storage); the
  package itself (numpy, xarray, dask) is imported before the clock starts; median ms;
* full: GET every shard object whole, in parallel; best MB/s.

The results informed the storage-layer decision in docs/design.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_remote import Remote, remote_volumes
from common import DEFAULT_DATA_DIR, REPO, RESULT_PREFIX, emit_result, ensure_volume, format_table


def _obstore(server: str, url: str, endpoint: str):
    from obstore.store import GCSStore, HTTPStore, S3Store

    opts = {"allow_http": True}
    if server == "http":
        return HTTPStore.from_url(url, client_options=opts), ""
    bucket, prefix = url.split("://", 1)[1].split("/", 1)
    if server == "s3":
        store = S3Store(bucket, endpoint=endpoint, access_key_id="testing", region="us-east-1",
                        secret_access_key="testing", client_options=opts)  # fmt: skip
    else:
        store = GCSStore(bucket, config={"base_url": endpoint}, skip_signature=True,
                         client_options=opts)  # fmt: skip
    return store, prefix + "/"


def worker(p: dict[str, Any]) -> None:
    if p["layer"] == "fsspec":
        import xarray_precomputed.storage  # noqa: F401  (imports numpy, xarray, dask: not timed)
    else:
        import numpy  # noqa: F401  (as above, for a like-for-like start)
    t0 = time.perf_counter()
    keys, nbytes = p["keys"], 0
    if p["layer"] == "obstore":
        import obstore as obs

        store, prefix = _obstore(p["server"], p["url"], p["endpoint"])
        if p["kind"] == "cold":
            obs.get(store, prefix + "info").bytes()
            for s, e in ((0, 16), (64, 200), (4096, 8192)):
                obs.get_range(store, prefix + keys[0], start=s, end=e)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(8) as pool:
                blobs = list(pool.map(lambda k: obs.get(store, prefix + k).bytes(), keys))
            nbytes = sum(len(b) for b in blobs)
    else:
        from xarray_precomputed.storage import Store

        store = Store(p["url"], p["options"])
        if p["kind"] == "cold":
            store.get("info")
            for s, e in ((0, 16), (64, 200), (4096, 8192)):
                store.get_range(keys[0], s, e)
        else:
            nbytes = sum(len(b) for b in store.get_many(keys))
    emit_result({"seconds": time.perf_counter() - t0, "bytes": nbytes})


def run(payload: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(payload)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--servers", nargs="+", default=["http", "s3", "gcs"])
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    vol = remote_volumes(True)[0]
    ensure_volume(vol, DEFAULT_DATA_DIR)
    directory = vol.directory(DEFAULT_DATA_DIR)
    keys = sorted(str(f.relative_to(directory)) for f in directory.rglob("*.shard"))
    rows = []
    for name in args.servers:
        remote = Remote(name, DEFAULT_DATA_DIR, [vol])
        try:
            url = remote.urls[vol.name]
            endpoint = getattr(remote.server, "upstream_url", remote.server.endpoint_url)
            opts = remote.direct_options()
            res: dict[tuple[str, str], list] = {}
            for _ in range(args.repeat):
                for layer in ("fsspec", "obstore"):
                    for kind in ("cold", "full"):
                        r = run({"layer": layer, "kind": kind, "server": name, "url": url,
                                 "endpoint": endpoint, "options": opts, "keys": keys})  # fmt: skip
                        if "error" in r:
                            print(name, layer, kind, "ERROR", r["error"], flush=True)
                            continue
                        res.setdefault((layer, kind), []).append(r)
            cold = {k: statistics.median(r["seconds"] for r in res.get((k, "cold"), [{"seconds": 0}]))
                    for k in ("fsspec", "obstore")}  # fmt: skip
            full = {k: max((r["bytes"] / r["seconds"] / 1e6 for r in res.get((k, "full"), [])),
                           default=0) for k in ("fsspec", "obstore")}  # fmt: skip
            rows.append([name, f"{cold['fsspec'] * 1e3:.0f}", f"{cold['obstore'] * 1e3:.0f}",
                         f"{full['fsspec']:.0f}", f"{full['obstore']:.0f}"])  # fmt: skip
            print(rows[-1], flush=True)
        finally:
            remote.stop()
    print(format_table(["server", "cold ms fsspec", "cold ms obstore", "full MB/s fsspec",
                        "full MB/s obstore"], rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    sys.exit(main())
