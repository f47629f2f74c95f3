"""``xp.to_precomputed``: ``sharding="auto"`` (properties, big volumes tensorstore accepts,
Morton bit limits) and the task structure: one task and one put per shard, or per chunk
when unsharded."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import xarray_precomputed as xp
from xarray_precomputed.chunk_grid import shard_box_chunks as pkg_shard_box_chunks
from xarray_precomputed.errors import WriteError
from xarray_precomputed.metadata import Scale

from . import peers
from .helpers import DIMS, make_array, rand, sharding_dict
from .writer_helpers import (
    PutSpy,
    all_files,
    ours,
    read_info,
    shards_touched,
    write_info_only,
    write_tasks,
)

# -- sharding="auto" -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    size=st.tuples(*[st.integers(1, 2**20)] * 3),
    chunk=st.tuples(*[st.sampled_from([1, 7, 16, 64, 128, 256])] * 3),
    voxel_bytes=st.sampled_from([1, 2, 3, 4, 8, 12]),
    shard_bytes=st.sampled_from([2**10, 2**20, 2**23, 2**28, 2**33, 2**50]),
)
def test_auto_sharding_properties(size, chunk, voxel_bytes, shard_bytes):
    scale = Scale(key="k", size=size, resolution=(1, 1, 1), chunk_sizes=(chunk,), encoding="raw")
    grid = scale.grid_shape
    total_bits = sum(peers.grid_bits(grid))
    # sizes below 2**20 keep every grid within 60 Morton bits: larger grids are refused
    # (test_morton_bits_over_64_refused), never given a sharding
    assert total_bits <= 60
    spec = xp.auto_sharding(scale, voxel_bytes, shard_bytes)
    chunk_bytes = math.prod(chunk) * voxel_bytes
    # unsharded exactly when a shard would hold a single chunk
    one_chunk = shard_bytes / chunk_bytes < math.sqrt(2) or total_bits == 0
    assert (spec is None) == one_chunk, (spec, shard_bytes / chunk_bytes, total_bits)
    assume(spec is not None)
    d = spec.to_json()
    assert d["hash"] == "identity"
    assert 0 <= d["minishard_bits"] <= 32
    assert d["preshift_bits"] + d["minishard_bits"] + d["shard_bits"] == total_bits <= 64
    box = peers.shard_box_chunks(d, grid)  # independent: TS's box rule
    assert box is not None
    assert pkg_shard_box_chunks(grid, spec) == box
    n_chunks = 2 ** (d["preshift_bits"] + d["minishard_bits"])  # chunks per (unclipped) box
    assert math.prod(min(b, g) for b, g in zip(box, grid)) <= n_chunks
    if d["shard_bits"] > 0:
        # ~shard_bytes: within the power-of-two rounding
        ratio = n_chunks * chunk_bytes / shard_bytes
        assert 1 / math.sqrt(2) - 1e-9 <= ratio <= math.sqrt(2) + 1e-9
    else:
        assert box == grid  # one shard holds everything
        assert n_chunks * chunk_bytes <= shard_bytes * math.sqrt(2) + 1e-9 or n_chunks == 1


@pytest.mark.parametrize(
    "size,chunk,dtype,nc,shard_bytes",
    [
        ((5000, 3000, 700), (64, 64, 64), "uint8", 1, 2**28),
        ((20000, 7, 9000), (128, 1, 64), "uint64", 1, 2**26),
        ((2**12, 2**11, 2**12), (4, 4, 4), "uint16", 3, 2**30),  # 29 Morton bits
    ],
)
def test_auto_sharding_big_volumes_valid_for_tensorstore(
    ts, tmp_path, size, chunk, dtype, nc, shard_bytes
):
    arr = make_array(da.zeros((*size, nc), dtype=dtype, chunks=(*size, nc)))
    url = str(tmp_path / "v")
    delayed = xp.to_precomputed(
        arr, url, chunk_size=chunk, shard_bytes=shard_bytes, compute=False
    )  # only its info task computed: lazy zeros
    write_info_only(delayed)
    del delayed
    scale = read_info(url)["scales"][0]
    spec = scale["sharding"]
    grid = tuple(-(-s // c) for s, c in zip(size, chunk))
    assert spec["minishard_bits"] <= 32
    assert spec["preshift_bits"] + spec["minishard_bits"] + spec["shard_bits"] == sum(
        peers.grid_bits(grid)
    )
    box = peers.shard_box_chunks(spec, grid)
    assert box is not None
    box_bytes = math.prod(box) * math.prod(chunk) * np.dtype(dtype).itemsize * nc
    assert shard_bytes / 2 <= box_bytes <= shard_bytes * 2
    # tensorstore accepts the metadata, and reads/writes through it agree with ours
    t = ts.open(peers.tensorstore_spec(url), open=True, read=True, write=True).result()
    patch = rand((3, 2, 2, nc), dtype, seed=8)
    lo = [s - 2 for s in size]
    t[lo[0] - 1 : lo[0] + 2, lo[1] : lo[1] + 2, lo[2] : lo[2] + 2].write(patch).result()
    ds = xr.open_dataset(url, engine="precomputed")
    got = ds[list(ds.data_vars)[0]].transpose(*DIMS)
    np.testing.assert_array_equal(
        got[lo[0] - 1 : lo[0] + 2, lo[1] : lo[1] + 2, lo[2] : lo[2] + 2].values, patch
    )


def test_morton_bits_over_64_refused(tmp_path):
    url = tmp_path / "v"
    arr = make_array(da.zeros((2**22, 2**22, 2**22, 1), dtype="uint8", chunks=(2**22,) * 3 + (1,)))
    with pytest.raises(WriteError, match="Morton"):
        xp.to_precomputed(arr, str(url), chunk_size=(1, 1, 1))
    assert all_files(url) == []


# -- one task per shard --------------------------------------------------------------------

DASK_CHUNKINGS = {
    "smaller": (5, 6, 3, 1),  # smaller than shards and misaligned
    "larger": (48, 40, 13, 1),  # larger than shards (the whole array)
    "misaligned": (19, 13, 7, 1),  # straddles shard boundaries
    "aligned": (16, 16, 8, 1),
}


@pytest.mark.parametrize("chunking", sorted(DASK_CHUNKINGS))
def test_one_task_and_one_put_per_shard(tmp_path, monkeypatch, chunking):
    size, chunk = (48, 40, 13), (8, 8, 4)
    spec = sharding_dict(3, 0, 5)  # boxes of 2x2x2 chunks = 16x16x8 voxels
    data = rand((*size, 1), seed=10)
    arr = make_array(da.from_array(data, chunks=DASK_CHUNKINGS[chunking]))
    url = str(tmp_path / "v")
    spy = PutSpy(monkeypatch)
    delayed = xp.to_precomputed(arr, url, chunk_size=chunk, sharding=spec, compute=False)
    expected = shards_touched(size, chunk, spec)
    assert len(expected) == 3 * 3 * 2
    assert len(write_tasks(delayed)) == len(expected)
    delayed.compute()
    counts = spy.counts()
    assert counts.pop("info") == 1
    assert set(counts) == {f"4_4_40/{n}" for n in expected}
    assert set(counts.values()) == {1}
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)

    # a region write that covers parts of shards: one task per shard it touches
    spy.keys.clear()
    lo, hi = (5, 3, 2), (37, 20, 11)
    patch = rand((*(h - low for low, h in zip(lo, hi)), 1), seed=11)
    delayed = xp.to_precomputed(
        make_array(da.from_array(patch, chunks=DASK_CHUNKINGS[chunking]), offset=lo),
        url,
        mode="r+",
        region="auto",
        compute=False,
    )
    touched = shards_touched(size, chunk, spec, lo, hi)
    assert 1 < len(touched) < len(expected)
    assert len(write_tasks(delayed)) == len(touched)
    delayed.compute()
    counts = spy.counts()
    assert counts.pop("info") == 1
    assert set(counts) == {f"4_4_40/{n}" for n in touched}
    assert set(counts.values()) == {1}
    data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = patch
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)


@pytest.mark.parametrize("chunking", ["smaller", "misaligned"])
def test_unsharded_each_chunk_put_once(tmp_path, monkeypatch, chunking):
    size, chunk = (48, 40, 13), (8, 8, 4)
    data = rand((*size, 1), seed=12)
    url = str(tmp_path / "v")
    spy = PutSpy(monkeypatch)
    arr = make_array(da.from_array(data, chunks=DASK_CHUNKINGS[chunking]))
    xp.to_precomputed(arr, url, chunk_size=chunk, sharding=None)
    counts = spy.counts()
    counts.pop("info")
    assert len(counts) == 6 * 5 * 4 and set(counts.values()) == {1}
    spy.keys.clear()
    lo, hi = (3, 9, 1), (45, 33, 13)
    patch = rand((*(h - low for low, h in zip(lo, hi)), 1), seed=13)
    xp.to_precomputed(
        make_array(da.from_array(patch, chunks=DASK_CHUNKINGS[chunking]), offset=lo), url, mode="r+"
    )
    counts = spy.counts()
    counts.pop("info")
    assert len(counts) == 6 * 4 * 4 and set(counts.values()) == {1}
    data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = patch
    np.testing.assert_array_equal(ours(url), data)


@pytest.mark.parametrize("data_enc", ["raw", "gzip"])
@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
def test_streamed_local_shards_equal_shards_assembled_in_memory(
    tmp_path, monkeypatch, data_enc, encoding
):
    """A local shard is written to its file chunk by chunk; an object store's is assembled
    in memory and put whole: the bytes are the same, empty chunks left out alike."""
    import uuid

    import fsspec

    from xarray_precomputed import shard_buffers

    streamed_files = []
    real_init = shard_buffers.ShardFileSink.__init__

    def init(self, f, isize):
        streamed_files.append(f.name)
        real_init(self, f, isize)

    monkeypatch.setattr(shard_buffers.ShardFileSink, "__init__", init)

    size, chunk = (48, 40, 13), (8, 8, 4)
    spec = sharding_dict(3, 0, 5, data_enc=data_enc)
    data = rand((*size, 1), "uint32", seed=12)
    data[:16, :16, :8] = 0  # a whole shard of empty chunks: no file
    data[16:24, :8, :4] = 0  # one empty chunk in a shard
    arr = make_array(da.from_array(data, chunks=(16, 16, 8, 1)))
    local = str(tmp_path / "v")
    memory = f"memory://{uuid.uuid4().hex}/v"
    for url in (local, memory):
        xp.to_precomputed(arr, url, chunk_size=chunk, sharding=spec, encoding=encoding)
    fs = fsspec.filesystem("memory")
    in_memory = {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in fs.find(memory + "/4_4_40")}
    streamed = {p.name: p.read_bytes() for p in (tmp_path / "v" / "4_4_40").iterdir()}
    assert streamed == in_memory and len(streamed) == 3 * 3 * 2 - 1
    assert len(streamed_files) == 3 * 3 * 2  # every local shard streamed, the empty one too
    np.testing.assert_array_equal(peers.tensorstore_read(local), data)
