"""Helpers for the writer tests: reading back what was written, an independent shard
parser written from the format description, and spies on the store and the dask graph."""

from __future__ import annotations

import collections
import gzip
import hashlib
import itertools
import json
import os
import threading

import dask
import numpy as np
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.storage import Store
from xarray_precomputed.writer import INFO_TASK_PREFIX

from . import peers
from .helpers import DIMS, GZIP_MAGIC, make_array, rand


def file_hashes(root) -> dict[str, str]:
    """sha256 of every file (hidden ones included) below ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def all_files(root) -> list[str]:
    return sorted(file_hashes(root)) if os.path.exists(root) else []


def write_info_only(delayed) -> None:
    """Run only the info task of a ``compute=False`` write."""
    keys = [k for k in delayed.dask if isinstance(k, str) and k.startswith(INFO_TASK_PREFIX)]
    assert len(keys) == 1
    dask.get(dict(delayed.dask), keys)


def read_info(url) -> dict:
    with open(os.path.join(url, "info")) as f:
        return json.load(f)


def ours(url, scale=0, **kw) -> np.ndarray:
    ds = xr.open_dataset(url, engine="precomputed", scale=scale, **kw)
    name = list(ds.data_vars)[0]
    return ds[name].transpose(*DIMS).values


def parse_shard(blob: bytes, spec: dict) -> dict[int, bytes]:
    """Independent shard parser (spec section 4.4): chunk id -> stored chunk bytes.

    Checks the gzip magic of minishard indexes and chunk data against the spec's encodings.
    """
    n = 1 << spec["minishard_bits"]
    size = 16 * n
    index = np.frombuffer(blob[:size], "<u8").reshape(n, 2)
    out = {}
    for start, end in index.tolist():
        if start == end:
            continue
        raw = blob[size + start : size + end]
        if spec["minishard_index_encoding"] == "gzip":
            assert raw[:2] == GZIP_MAGIC
            raw = gzip.decompress(raw)
        else:
            assert raw[:2] != GZIP_MAGIC or len(raw) % 24 == 0
        assert len(raw) % 24 == 0
        table = np.frombuffer(raw, "<u8").reshape(3, -1).astype(np.int64)
        ids = np.cumsum(table[0])
        pos = size
        for cid, delta, nbytes in zip(ids.tolist(), table[1].tolist(), table[2].tolist()):
            start_c = pos + delta
            pos = start_c + nbytes
            assert pos <= len(blob)
            assert cid not in out
            out[cid] = blob[start_c:pos]
    return out


def chunk_cells(size, chunk):
    grid = tuple(-(-s // c) for s, c in zip(size, chunk))
    return grid, list(itertools.product(*(range(g) for g in grid)))


def cell_slices(cell, chunk):
    return tuple(slice(g * c, (g + 1) * c) for g, c in zip(cell, chunk))


def shards_touched(size, chunk, spec: dict, lo=(0, 0, 0), hi=None) -> set[str]:
    """Shard file names holding chunks that overlap the voxel box [lo, hi)."""
    hi = size if hi is None else hi
    grid = tuple(-(-s // c) for s, c in zip(size, chunk))
    names = set()
    for cell in itertools.product(
        *(range(lo[d] // chunk[d], -(-hi[d] // chunk[d])) for d in range(3))
    ):
        shard = peers.shard_number(spec, peers.compressed_morton_code(cell, grid))
        names.add(peers.shard_filename(spec, shard))
    return names


class PutSpy:
    """Wraps ``Store.put``: records every key put (thread-safe)."""

    def __init__(self, monkeypatch):
        self.keys: list[str] = []
        self._lock = threading.Lock()
        real = Store.put

        def put(store, key, data):
            with self._lock:
                self.keys.append(key)
            return real(store, key, data)

        monkeypatch.setattr(Store, "put", put)

    def counts(self):
        return collections.Counter(self.keys)


def write_tasks(delayed) -> list:
    graph = delayed.__dask_graph__()
    names = [k[0] if isinstance(k, tuple) else k for k in graph.keys()]
    return [k for k in names if str(k).startswith("to-precomputed-")]


def base_volume(url, seed=0, **kwargs):
    data = rand((24, 20, 8, 1), seed=seed)
    kw = dict(chunk_size=(8, 8, 4), shard_bytes=8 * 8 * 4 * 4)
    kw.update(kwargs)
    xp.to_precomputed(make_array(data), url, **kw)
    return data
