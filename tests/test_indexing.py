"""Selections through xarray on tensorstore-written volumes, dask chunking, and the
number of storage requests a read costs."""

from __future__ import annotations

import math
import threading
from collections import Counter

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xarray_precomputed import open_info
from xarray_precomputed.chunk_grid import chunk_group
from xarray_precomputed.metadata import Scale
from xarray_precomputed.sharding import shard_index_size
from xarray_precomputed.storage import Store
from xarray_precomputed.testing import strategies as pst
from xarray_precomputed.testing import write_tensorstore_volume

from .helpers import sharding_dict

VOLUMES = {
    # name: (dtype, channels, size, voxel_offset, chunk, sharding)
    "raw": ("uint16", 2, (21, 17, 9), (-3, 2, 5), (4, 5, 3), None),
    "identity": ("uint8", 1, (20, 17, 9), (5, -7, 0), (4, 4, 3), sharding_dict(2, 1, 5)),
    "murmur": (
        "uint32",
        1,
        (13, 11, 7),
        (0, 0, 100),
        (3, 4, 2),
        sharding_dict(1, 2, 2, hash="murmurhash3_x86_128", mi_enc="raw"),
    ),
}


def make_data(name, dtype, nc, size, chunk):
    rng = np.random.default_rng(len(name))
    info = np.iinfo(dtype)
    data = rng.integers(1, min(info.max, 2**20), (*size, nc), dtype=np.int64).astype(dtype)
    # Zero a few whole chunks: tensorstore does not store them, readers must fill 0.
    data[: chunk[0], : chunk[1], : chunk[2]] = 0
    data[-chunk[0] :, chunk[1] : 2 * chunk[1], :] = 0
    return data


def draw_selection(data, shape):
    sel = data.draw(pst.outer_selections(shape))
    # xarray's own slice decomposition fails on empty negative-step slices with
    # "IndexError: range object index out of range" (an xarray bug, any lazy backend).
    assume(
        not any(
            isinstance(s, slice) and (s.step or 1) < 0 and not len(range(*s.indices(n)))
            for s, n in zip(sel, shape)
        )
    )
    return sel


@pytest.fixture(scope="module")
def volumes(ts, tmp_path_factory):
    out = {}
    for name, (dtype, nc, size, offset, chunk, shard) in VOLUMES.items():
        path = tmp_path_factory.mktemp(name)
        data = make_data(name, dtype, nc, size, chunk)
        store = write_tensorstore_volume(
            path, data, chunk_size=chunk, voxel_offset=offset, sharding=shard
        )
        expected = store.read().result()  # tensorstore's view is the oracle
        np.testing.assert_array_equal(expected, data)
        out[name] = (str(path), expected, store)
    return out


HYPO = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("name", list(VOLUMES))
@HYPO
@given(data=pst.st.data())
def test_outer_selections_match_tensorstore(volumes, name, data):
    path, expected, _ = volumes[name]
    ds = xr.open_dataset(path, engine="precomputed")
    sel = draw_selection(data, expected.shape)
    got = ds.image[sel]
    np.testing.assert_array_equal(got.values, pst.outer_index(expected, sel))
    # Coordinates follow the selection.
    dims_kept = [d for d, s in zip(("x", "y", "z", "channel"), sel) if not isinstance(s, int)]
    assert got.dims == tuple(dims_kept)


@pytest.mark.parametrize("name", list(VOLUMES))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=pst.st.data())
def test_dask_selections_match_tensorstore(volumes, name, data):
    path, expected, _ = volumes[name]
    ds = xr.open_dataset(path, engine="precomputed", chunks={})
    sel = draw_selection(data, expected.shape)
    with dask.config.set(scheduler="threads"):
        got = ds.image[sel].compute()
    np.testing.assert_array_equal(got.values, pst.outer_index(expected, sel))


def test_isel_and_sel_by_nm(volumes):
    path, expected, _ = volumes["raw"]
    dtype, nc, size, offset, chunk, _ = VOLUMES["raw"]
    ds = xr.open_dataset(path, engine="precomputed")
    res = (4, 4, 40)
    # isel with negative and unsorted indices
    got = ds.image.isel(x=[-1, 0, 3], y=slice(2, None, 3), z=-2, channel=1)
    np.testing.assert_array_equal(got.values, expected[[-1, 0, 3], 2::3, -2, 1])
    # sel by physical position (nm of voxel centres)
    x_nm = (offset[0] + np.array([4, 0, 10]) + 0.5) * res[0]
    z_nm = (offset[2] + 3 + 0.5) * res[2]
    got = ds.image.sel(x=x_nm, z=z_nm, channel=0)
    np.testing.assert_array_equal(got.values, expected[[4, 0, 10], :, 3, 0])
    # slices by nm are inclusive of both ends
    y_lo, y_hi = (offset[1] + 2 + 0.5) * res[1], (offset[1] + 9 + 0.5) * res[1]
    got = ds.image.sel(y=slice(y_lo, y_hi))
    np.testing.assert_array_equal(got.values, expected[:, 2:10])
    # nearest lookups from arbitrary positions
    got = ds.image.sel(x=(offset[0] + 7.9) * res[0], method="nearest")
    np.testing.assert_array_equal(got.values, expected[7])


def _expected_dask_chunks(size, block):
    return tuple(tuple(min(b, n - i) for i in range(0, n, b)) for n, b in zip(size, block))


@pytest.mark.parametrize("name", list(VOLUMES))
def test_dask_chunks_follow_storage(volumes, name):
    path, expected, store = volumes[name]
    dtype, nc, size, offset, chunk, shard = VOLUMES[name]
    ds = xr.open_dataset(path, engine="precomputed", chunks={})
    if shard is not None and shard["hash"] == "identity":
        # One task per shard box: tensorstore reports the box as its write chunk.
        block = tuple(store.chunk_layout.write_chunk.shape[:3])
        assert block != tuple(chunk)
    else:
        # blocks of whole storage chunks (about 64 MiB; these volumes are smaller)
        scale = open_info(path)[1].scales[0]
        block = chunk_group(scale, np.dtype(dtype).itemsize * nc)
        assert all(b % c == 0 or b == n for b, c, n in zip(block, chunk, size))
    assert ds.image.data.chunks == (*_expected_dask_chunks(size, block), (nc,))
    assert ds.image.encoding["chunks"] == (*chunk, nc)
    pref = ds.image.encoding["preferred_chunks"]
    assert pref == {"x": block[0], "y": block[1], "z": block[2], "channel": nc}
    np.testing.assert_array_equal(ds.image.values, expected)


# -- storage request accounting -----------------------------------------------------------


class StoreSpy:
    """Counts the outermost Store.get / get_ranges / get_many calls and bytes returned."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, object, int]] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        for name in ("get", "get_reusing_buffer", "get_ranges", "get_many"):
            monkeypatch.setattr(Store, name, self._wrap(name, getattr(Store, name)))

    def _wrap(self, name, original):
        spy = self

        def wrapper(store, arg, *args, **kwargs):
            depth = getattr(spy._local, "depth", 0)
            spy._local.depth = depth + 1
            try:
                result = original(store, arg, *args, **kwargs)
            finally:
                spy._local.depth = depth
            if depth == 0:
                items = result if isinstance(result, list) else [result]
                nbytes = sum(len(r) for r in items if r is not None)
                with spy._lock:
                    # a whole-object read into a reused buffer is still one "get"
                    spy.calls.append((name.replace("_reusing_buffer", ""), arg, nbytes))
            return result

        return wrapper

    def reset(self):
        self.calls.clear()

    @property
    def bytes(self):
        return sum(n for _, _, n in self.calls)


@pytest.fixture
def spy(monkeypatch):
    return StoreSpy(monkeypatch)


def _shard_file(path, name):
    import pathlib

    files = sorted(pathlib.Path(path, "4_4_40").glob("*.shard"))
    return {f.name: f.stat().st_size for f in files}


def test_small_cutout_costs_three_requests(volumes, spy):
    path, expected, _ = volumes["identity"]
    ds = xr.open_dataset(path, engine="precomputed")
    spy.reset()
    # Voxels inside one chunk (4, 4, 3) of a multi-chunk shard, away from zeroed chunks.
    got = ds.image[5:7, 9:11, 4:5].values
    np.testing.assert_array_equal(got, expected[5:7, 9:11, 4:5])
    assert [c[0] for c in spy.calls] == ["get_ranges"] * 3, spy.calls
    index_req, minishard_req, data_req = (c[1] for c in spy.calls)
    assert len(index_req) == len(minishard_req) == len(data_req) == 1
    key, start, end = index_req[0]
    assert key.endswith(".shard") and end - start == 16  # one shard index entry
    assert minishard_req[0][0] == data_req[0][0] == key
    # The minishard index and chunk lie after the shard index.
    isize = shard_index_size_of("identity")
    assert minishard_req[0][1] >= isize and data_req[0][1] >= isize
    # Nothing more than those ranges was read.
    assert spy.bytes == 16 + (minishard_req[0][2] - minishard_req[0][1]) + (
        data_req[0][2] - data_req[0][1]
    )


def shard_index_size_of(name):
    from xarray_precomputed.metadata import ShardingSpec

    return shard_index_size(ShardingSpec.from_json(VOLUMES[name][5]))


def test_cutout_across_minishards_still_three_requests(volumes, spy):
    path, expected, _ = volumes["identity"]
    ds = xr.open_dataset(path, engine="precomputed")
    spy.reset()
    # Chunks are (4, 4, 3), minishard boxes 2 x 2 x 1 chunks, shard boxes 2 x 2 x 2:
    # take 2 x 1 x 2 chunks of one shard, which lie in two minishards.
    sel = (slice(1, 7), slice(9, 12), slice(1, 5))
    np.testing.assert_array_equal(ds.image[sel].values, expected[sel])
    assert [c[0] for c in spy.calls] == ["get_ranges"] * 3, spy.calls
    # Both minishard indexes come in one request (merged into one range).
    assert len(spy.calls[1][1]) == 1


def test_whole_shard_read_is_one_request(volumes, spy):
    path, expected, store = volumes["identity"]
    box = tuple(store.chunk_layout.write_chunk.shape[:3])
    ds = xr.open_dataset(path, engine="precomputed")
    spy.reset()
    sel = (slice(box[0], 2 * box[0]), slice(0, box[1]), slice(0, box[2]))
    np.testing.assert_array_equal(ds.image[sel].values, expected[sel])
    assert len(spy.calls) == 1 and spy.calls[0][0] == "get", spy.calls
    key = spy.calls[0][1]
    sizes = _shard_file(path, "identity")
    assert spy.bytes == sizes[key.split("/")[-1]]


def test_dask_tasks_read_each_shard_once(volumes, spy):
    path, expected, _ = volumes["identity"]
    ds = xr.open_dataset(path, engine="precomputed", chunks={})
    n_blocks = int(np.prod([len(c) for c in ds.image.data.chunks]))
    spy.reset()
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(ds.image.values, expected)
    # One whole-shard request per task (a missing shard is one request too).
    assert len(spy.calls) == n_blocks
    assert all(c[0] == "get" for c in spy.calls)
    assert len({c[1] for c in spy.calls}) == n_blocks
    assert spy.bytes == sum(_shard_file(path, "identity").values())


@pytest.mark.parametrize("name", ["murmur", "identity"])
def test_one_task_fetches_each_shard_index_once(volumes, spy, name):
    """A task spanning many shards fetches each shard's index once, not once per chunk."""
    path, expected, _ = volumes[name]
    ds = xr.open_dataset(path, engine="precomputed", chunks={"x": -1, "y": -1, "z": -1})
    assert ds.image.data.npartitions == 1
    spy.reset()
    # A strided selection touching many chunks, several per shard.
    sel = (slice(None, None, 8), slice(1, None, 7), slice(None, None, 5))
    with dask.config.set(scheduler="synchronous"):
        got = ds.image[sel].values
    np.testing.assert_array_equal(got, expected[sel])
    isize = shard_index_size_of(name)
    index_fetches = Counter()
    for method, arg, _ in spy.calls:
        if method == "get":  # a shard needed whole (an edge box) is read in one request
            index_fetches[arg] += 1
            continue
        assert method == "get_ranges"
        for key, start, end in arg:
            if start < isize:
                assert end <= isize
                index_fetches[key] += 1
    assert index_fetches, spy.calls
    assert set(index_fetches.values()) == {1}, index_fetches
    # At most three requests per shard: index, minishard indexes, chunk data.
    assert len(spy.calls) <= 3 * len(index_fetches)


def test_unsharded_reads_one_request_per_chunk(volumes, spy):
    path, expected, _ = volumes["raw"]
    chunk = VOLUMES["raw"][4]
    ds = xr.open_dataset(path, engine="precomputed")
    spy.reset()
    sel = (slice(0, 2 * chunk[0]), slice(chunk[1], 2 * chunk[1]), slice(0, 1))
    np.testing.assert_array_equal(ds.image[sel].values, expected[sel])
    # whole objects only (get_many: one GET per key), never ranges
    assert all(c[0] in ("get", "get_many") for c in spy.calls)
    keys = [k for c in spy.calls for k in ([c[1]] if c[0] == "get" else c[1])]
    assert sorted(keys) == sorted({f"4_4_40/{-3 + x0}-{-3 + x0 + 4}_7-12_5-8" for x0 in (0, 4)})


@settings(max_examples=200, deadline=None)
@given(
    grid=st.tuples(*[st.integers(1, 40)] * 3),
    chunk=st.tuples(*[st.integers(1, 64)] * 3),
    voxel_bytes=st.sampled_from([1, 2, 4, 8, 24]),
    target=st.integers(1, 2**24),
)
def test_chunk_group_is_whole_chunks_within_target(grid, chunk, voxel_bytes, target):
    """Unsharded/murmur Dask blocks: whole chunks, at most the target (or one chunk),
    and no axis could double without passing the target or the volume's end."""
    size = tuple(g * c for g, c in zip(grid, chunk))
    scale = Scale(key="k", size=size, resolution=(1, 1, 1), chunk_sizes=(chunk,), encoding="raw")
    block = chunk_group(scale, voxel_bytes, target)
    n = [b // c for b, c in zip(block, chunk)]
    assert all(b % c == 0 for b, c in zip(block, chunk))
    chunk_bytes = math.prod(chunk) * voxel_bytes
    assert math.prod(n) == 1 or math.prod(n) * chunk_bytes <= target
    for d in range(3):
        if n[d] < grid[d]:
            assert 2 * math.prod(n) * chunk_bytes > target
