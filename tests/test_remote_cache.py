"""Warm reads: the per-volume shard index cache and coalesced ranges, counted on a server.

Volume: 64^3 uint8 in 16^3 chunks (a 4x4x4 grid), one shard of 8 minishards, each a 2x2x2
block of chunks (identity hash, preshift 3), written by tensorstore. A cold cutout inside
one chunk costs 3 ranged GETs (shard index entry, minishard index, chunk data).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xarray_precomputed import clear_index_caches
from xarray_precomputed.shard_index import IndexCache, coalesce

from . import peers

SHARDING = {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": 3,
            "minishard_bits": 3, "shard_bits": 0, "minishard_index_encoding": "gzip",
            "data_encoding": "raw"}  # fmt: skip


def _write(root, seed: int) -> np.ndarray:
    ts = peers.tensorstore()
    data = np.random.default_rng(seed).integers(0, 255, (64, 64, 64, 1), dtype=np.uint8)
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(root)},
         "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
         "scale_metadata": {"size": [64, 64, 64], "encoding": "raw", "chunk_size": [16, 16, 16],
                            "resolution": [1, 1, 1], "sharding": SHARDING}},
        create=True, delete_existing=True,
    ).result()  # fmt: skip
    store[...].write(data).result()
    return data


@pytest.fixture(scope="module")
def served(http_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-volume")
    data = _write(root, 1)
    return http_server.upload_dir(root, "cache"), data


def _cost(server, fn) -> int:
    server.reset_counts()
    fn()
    return server.count()


CHUNK0 = (slice(0, 16), slice(0, 16), slice(0, 16))
CHUNK1 = (slice(16, 32), slice(0, 16), slice(0, 16))  # same minishard as CHUNK0
FAR = (slice(48, 64), slice(48, 64), slice(48, 64))  # the last minishard


def test_second_cutout_in_a_touched_minishard_costs_only_its_chunk(http_server, served):
    url, data = served
    ds = xr.open_dataset(url, engine="precomputed")
    img = ds.image
    assert _cost(http_server, lambda: img[CHUNK0].values) == 3
    assert _cost(http_server, lambda: img[CHUNK1].values) == 1
    assert _cost(http_server, lambda: img[CHUNK0].values) == 1
    # Another minishard: its index entry and minishard index, then the chunk.
    assert _cost(http_server, lambda: img[FAR].values) == 3
    np.testing.assert_array_equal(img[FAR].values, data[48:, 48:, 48:])
    clear_index_caches()
    assert _cost(http_server, lambda: img[CHUNK1].values) == 3


def test_cache_can_be_disabled(http_server, served):
    url, data = served
    img = xr.open_dataset(url, engine="precomputed", storage_options={"index_cache": 0}).image
    assert _cost(http_server, lambda: img[CHUNK0].values) == 3
    assert _cost(http_server, lambda: img[CHUNK1].values) == 3
    np.testing.assert_array_equal(img[CHUNK1].values, data[16:32, :16, :16])


def test_dask_tasks_share_the_cache(http_server, served):
    url, data = served
    img = xr.open_dataset(url, engine="precomputed", chunks={}).image
    np.testing.assert_array_equal(img[CHUNK0].values, data[:16, :16, :16])
    assert _cost(http_server, lambda: img[CHUNK1].values) == 1


def test_coalescing_limits(http_server, served):
    url, data = served
    box = (slice(0, 32), slice(0, 32), slice(0, 32))  # the 8 chunks of minishard 0
    img = xr.open_dataset(url, engine="precomputed", storage_options={"index_cache": 0}).image
    assert _cost(http_server, lambda: img[box].values) == 3  # 8 adjacent chunks: one GET
    opts = {"index_cache": 0, "coalesce": {"max_size": 0}}
    img = xr.open_dataset(url, engine="precomputed", storage_options=opts).image
    assert _cost(http_server, lambda: img[box].values) == 2 + 8
    np.testing.assert_array_equal(img[box].values, data[:32, :32, :32])
    with pytest.raises(ValueError, match="coalesce"):
        xr.open_dataset(url, engine="precomputed", storage_options={"coalesce": {"gaps": 1}})


def test_rewritten_shard_is_read_anew_after_clearing(http_server, tmp_path):
    root = tmp_path / "vol"
    _write(root, 2)
    url = http_server.upload_dir(root, "rewrite")
    img = xr.open_dataset(url, engine="precomputed").image
    img[CHUNK0].values
    served_root = http_server.root / url.rsplit("/", 1)[1]
    new = _write(served_root, 3)  # same layout, new data, rewritten in place
    clear_index_caches()
    np.testing.assert_array_equal(img[CHUNK1].values, new[16:32, :16, :16])


def test_cache_stays_within_its_bound():
    cache = IndexCache(1000)
    for i in range(100):
        cache.put(("mini", "p", i), i, 64)
    assert cache.nbytes <= 1000 and cache.get(("mini", "p", 99)) == 99
    assert cache.get(("mini", "p", 0)) is None
    cache.discard("p")
    assert cache.nbytes == 0
    with pytest.raises(ValueError):
        IndexCache(-1)


def test_coalesce_groups_adjacent_ranges_within_limits():
    assert coalesce([(0, 4), (4, 8), (8, 12)], gap=0, max_size=8) == [
        (0, 8, [0, 1]),
        (8, 12, [2]),
    ]
    assert coalesce([(100, 200)], gap=0, max_size=10) == [(100, 200, [0])]
