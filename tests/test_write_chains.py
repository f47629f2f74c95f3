"""Chains: the boxes of a line of shards written by one task that passes block parts on,
so that input computed whole is not computed once per shard it overlaps."""

from __future__ import annotations

import collections
import contextlib
import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xarray_precomputed as xp
from xarray_precomputed.block_reuse import HELD_BOXES, KeptParts, kept_parts
from xarray_precomputed.write_graph import CHAIN_PREFIX, TASK_PREFIX

# 16^3 chunks, 32^3 shards (2x2x2 chunks): a 2 x 4 x 2 grid of shard boxes
SHAPE = (64, 128, 64)
SHARDING = {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 3, "hash": "identity",
            "minishard_bits": 0, "shard_bits": 4, "minishard_index_encoding": "raw",
            "data_encoding": "raw"}  # fmt: skip
# blocks 88 voxels tall in y: each overlaps 3 or 4 of the 32-voxel shard boxes
CHUNKS = (32, 88, 32)


def _values(lo, shape):
    x, y, z = np.meshgrid(*(np.arange(lo[d], lo[d] + shape[d]) for d in range(3)),
                          indexing="ij")  # fmt: skip
    return ((x * 7 + y * 3 + z * 5) % 251).astype(np.uint8)[..., None]


def _computed_input(calls):
    """A (x, y, z, channel) input computed block by block, counting computations."""
    lock = threading.Lock()

    def block(block_info=None):
        info = block_info[None]
        with lock:
            calls[tuple(info["chunk-location"][:3])] += 1
        return _values([r[0] for r in info["array-location"][:3]], info["chunk-shape"][:3])

    chunks = da.core.normalize_chunks((*CHUNKS, 1), (*SHAPE, 1))
    arr = da.map_blocks(block, chunks=chunks, dtype=np.uint8, meta=np.empty((0,) * 4, np.uint8))
    return xr.DataArray(arr, dims=("x", "y", "z", "channel"), name="image")


def _write(a, path, **kw):
    return xp.to_precomputed(a, path, chunk_size=(16, 16, 16), sharding=SHARDING,
                             resolution=(8, 8, 8), **kw)  # fmt: skip


def test_one_thread_computes_each_block_once(tmp_path):
    """One chain at a time keeps up to two boxes of parts: enough here for every later box,
    so each block is computed once (without chains: once per shard box it overlaps, 2.5
    times on average), and the volume is right."""
    calls = collections.Counter()
    a = _computed_input(calls)
    with dask.config.set(scheduler="threads", num_workers=1):
        graph = _write(a, tmp_path / "v", compute=False)
        chains = [k for k in graph.dask if isinstance(k, tuple) and k[0].startswith(CHAIN_PREFIX)]
        shards = [k for k in graph.dask if isinstance(k, tuple) and k[0].startswith(TASK_PREFIX)]
        assert len(shards) == 16 and len(chains) == 4  # lines of 4 boxes along y
        assert graph.compute() == 16
    assert set(calls.values()) == {1}, calls
    assert len(calls) == 2 * 2 * 2
    got = xr.open_dataset(tmp_path / "v", engine="precomputed").image.values
    np.testing.assert_array_equal(got, _values((0, 0, 0), SHAPE))
    assert kept_parts().used == 0  # nothing left behind


def test_two_threads_share_the_budget(tmp_path):
    """Two chains at once share one box of parts: fewer computations than one per box a
    block overlaps, the same bytes as a write from aligned input."""
    calls = collections.Counter()
    a = _computed_input(calls)
    with dask.config.set(scheduler="threads", num_workers=2):
        _write(a, tmp_path / "v")
        _write(a.chunk({"x": 32, "y": 32, "z": 32}).persist(), tmp_path / "aligned")
    overlaps = 2 * 2 * (3 + 2)  # per (x, z) column: the y blocks overlap 3 and 2 boxes
    assert sum(calls.values()) - 8 < overlaps, calls  # (8: the aligned copy's computation)
    for f in sorted((tmp_path / "aligned").rglob("*.shard")):
        other = tmp_path / "v" / f.relative_to(tmp_path / "aligned")
        assert other.read_bytes() == f.read_bytes(), f


def test_input_read_in_parts_is_not_chained(tmp_path):
    """A lazily read volume reads just the part each box needs: nothing to pass on."""
    data = _values((0, 0, 0), SHAPE)
    xp.to_precomputed(xr.DataArray(data, dims=("x", "y", "z", "channel"), name="image"),
                      tmp_path / "a", chunk_size=(16, 16, 16), resolution=(8, 8, 8))  # fmt: skip
    lazy = xr.open_dataset(tmp_path / "a", engine="precomputed",
                           chunks=dict(zip("xyz", CHUNKS))).image  # fmt: skip
    graph = _write(lazy, tmp_path / "b", compute=False)
    assert not [k for k in graph.dask if isinstance(k, tuple) and k[0].startswith(CHAIN_PREFIX)]


def test_chains_on_a_process_cluster(tmp_path, process_client):
    """On worker processes each chain runs in one process, which takes the parts its
    earlier boxes kept; the volume equals the input."""
    process_client.run(lambda: setattr(kept_parts(), "taken", 0))
    rng = da.random.RandomState(5)  # blocks computed whole, the same each time
    arr = rng.randint(0, 255, size=(*SHAPE, 1), chunks=(*CHUNKS, 1), dtype=np.uint8)
    a = xr.DataArray(arr, dims=("x", "y", "z", "channel"), name="image")
    assert _write(a, str(tmp_path / "v")) == 16
    taken = process_client.run(lambda: kept_parts().taken)
    assert sum(taken.values()) > 0, taken
    got = xr.open_dataset(tmp_path / "v", engine="precomputed").image.values
    np.testing.assert_array_equal(got, arr.compute(scheduler="sync"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ot"), st.integers(0, 1), st.integers(0, 3),
                          st.integers(1, 4)), max_size=40),
       st.integers(1, 2))  # fmt: skip
def test_kept_parts_stay_within_budget(steps, chains):
    """Whatever is offered and taken: what is kept stays within the budget, is counted
    right, and a part taken is the part offered (or nothing)."""
    parts = KeptParts()
    box = 8
    offered = {}
    ids = [("w", c) for c in range(chains)]
    with parts.running(ids[0], box):
        with parts.running(ids[-1], box) if chains > 1 else contextlib.nullcontext():
            limit = box * max(1, HELD_BOXES - chains)
            for op, c, key, position in steps:
                chain = ids[c % chains]
                if op == "o":
                    # the same part each time it is offered: its size comes from where it is
                    value = np.full(2 * (1 + (key + position) % 4), key * 16 + position, np.uint8)
                    if parts.offer(chain, key, position, value):
                        offered.setdefault((chain, key, position), value)
                else:
                    got = parts.take(chain, key, position)
                    want = offered.pop((chain, key, position), None)
                    if got is not None:
                        np.testing.assert_array_equal(got, want)
                assert parts.used <= limit
                assert parts.used == sum(v.nbytes for v in parts._entries.values())
    assert parts.used == 0


def test_region_write_merges_partial_shards(tmp_path):
    """A chained write into part of an existing volume (boxes that cover shards in part)
    keeps the stored voxels outside the region and writes the region's."""
    base = np.full((*SHAPE, 1), 9, np.uint8)
    _write(xr.DataArray(base, dims=("x", "y", "z", "channel"), name="image"), tmp_path / "v")
    calls = collections.Counter()
    a = _computed_input(calls)[8:56, 20:120, 4:60]  # cuts shards on every side
    assert a.data.chunks[1] == (68, 32)  # still misaligned: chained along y
    with dask.config.set(scheduler="threads", num_workers=1):
        graph = xp.to_precomputed(a, tmp_path / "v", mode="r+",
                                  region={"x": slice(8, 56), "y": slice(20, 120),
                                          "z": slice(4, 60)}, resolution=(8, 8, 8),
                                  compute=False)  # fmt: skip
        assert [k for k in graph.dask if isinstance(k, tuple) and k[0].startswith(CHAIN_PREFIX)]
        graph.compute()
    expected = base.copy()
    expected[8:56, 20:120, 4:60] = _values((0, 0, 0), SHAPE)[8:56, 20:120, 4:60]
    got = xr.open_dataset(tmp_path / "v", engine="precomputed").image.values
    np.testing.assert_array_equal(got, expected)


def test_a_failing_block_fails_the_write_and_keeps_nothing(tmp_path):
    """An input block that raises stops its chain with the block's own error; the parts
    the chain kept are dropped and no shard of the failed box is stored."""

    def block(block_info=None):
        info = block_info[None]
        if tuple(info["chunk-location"][:3]) == (1, 1, 1):
            raise ValueError("bad block (1, 1, 1)")
        return _values([r[0] for r in info["array-location"][:3]], info["chunk-shape"][:3])

    chunks = da.core.normalize_chunks((*CHUNKS, 1), (*SHAPE, 1))
    arr = da.map_blocks(block, chunks=chunks, dtype=np.uint8, meta=np.empty((0,) * 4, np.uint8))
    a = xr.DataArray(arr, dims=("x", "y", "z", "channel"), name="image")
    with dask.config.set(scheduler="threads", num_workers=1):
        with pytest.raises(ValueError, match=r"bad block \(1, 1, 1\)"):
            _write(a, tmp_path / "v")
    assert kept_parts().used == 0
    # the boxes at x 32-64, z 32-64, y 64-96 and 96-128 need block (1, 1, 1): never stored
    shards = {p.name for p in (tmp_path / "v").rglob("*.shard")}
    assert len(shards) < 16
