"""Concurrent region writes lose nothing: four processes write disjoint regions that
share chunks and shards (``mode="r+"``), repeatedly, on local disk, moto S3 and
fake-gcs-server; the volume must equal the union of the regions every time."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time

import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp

from .helpers import make_array, rand, sharding_dict

SIZE = (64, 64, 16)
CHUNK = (8, 8, 8)
# x ranges of the four writers: every boundary cuts a chunk, and each shard
# (boxes of 4 x 4 x 2 chunks) is shared by two or three writers
REGIONS = [(0, 13), (13, 29), (29, 45), (45, 64)]
LAYOUTS = {"sharded": sharding_dict(4, 1, 2), "unsharded": None}


def _region_data(x0: int, x1: int, seed: int) -> np.ndarray:
    return rand((x1 - x0, *SIZE[1:], 1), "uint16", seed=seed)


def write_region(url: str, so: dict | None, x0: int, x1: int, seed: int, start_at: float) -> int:
    """Runs in a worker process: wait for the common start, then write one region."""
    arr = make_array(_region_data(x0, x1, seed), offset=(x0, 0, 0))
    time.sleep(max(0.0, start_at - time.time()))
    return xp.to_precomputed(arr, url, mode="r+", region="auto", storage_options=so)


@pytest.fixture(scope="module")
def pool():
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(REGIONS), mp_context=ctx) as ex:
        # warm up: every worker imports the package once
        list(ex.map(time.sleep, [0.5] * len(REGIONS)))
        yield ex


def _rounds(pool, new_url, so, layout: str, rounds: int) -> None:
    for r in range(rounds):
        url = new_url(f"{layout}-{r}")
        empty = make_array(np.zeros((*SIZE, 1), "uint16"))
        xp.to_precomputed(
            empty, url, chunk_size=CHUNK, sharding=LAYOUTS[layout], storage_options=so
        )  # fmt: skip  (only the info: all chunks empty)
        start_at = time.time() + 0.3
        futures = [
            pool.submit(write_region, url, so, x0, x1, 100 * r + i, start_at)
            for i, (x0, x1) in enumerate(REGIONS)
        ]
        for f in futures:
            f.result()
        got = xr.open_dataset(url, engine="precomputed", storage_options=so).image.values
        for i, (x0, x1) in enumerate(REGIONS):
            expected = _region_data(x0, x1, 100 * r + i)
            lost = int((got[x0:x1] != expected).sum())
            assert lost == 0, f"round {r}: {lost} voxels of writer {i} lost"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_local_disk(tmp_path, pool, layout):
    _rounds(pool, lambda name: str(tmp_path / name), None, layout, rounds=4)
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".lock")]
    assert leftovers == []  # lock files are removed after use


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_s3(s3_server, pool, layout):
    _rounds(pool, s3_server.new_url, s3_server.storage_options, layout, rounds=2)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_gcs(gcs_server, pool, layout):
    _rounds(pool, gcs_server.new_url, gcs_server.storage_options, layout, rounds=2)
