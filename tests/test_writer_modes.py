"""``xp.to_precomputed``: modes ``w-``, ``w``, ``a`` and ``r+``, and region writes into
existing volumes (untouched data bit for bit, empty objects removed)."""

from __future__ import annotations

import json
import os

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.errors import VolumeExistsError, WriteError

from . import peers
from .helpers import make_array, rand, sharding_dict
from .writer_helpers import (
    all_files,
    base_volume,
    chunk_cells,
    file_hashes,
    ours,
    parse_shard,
    read_info,
    shards_touched,
)

# -- modes ---------------------------------------------------------------------------------


def test_mode_w_minus_refuses_existing_volume_without_touching_it(tmp_path):
    url = str(tmp_path / "v")
    base_volume(url)
    before = file_hashes(url)
    other = make_array(rand((24, 20, 8, 1), seed=1))
    with pytest.raises(VolumeExistsError, match="mode='w'"):
        xp.to_precomputed(other, url, chunk_size=(8, 8, 4))
    with pytest.raises(FileExistsError):  # also a builtin FileExistsError
        xp.to_precomputed(other, url, mode="w-", chunk_size=(8, 8, 4))
    assert file_hashes(url) == before


def test_mode_w_replaces_everything(tmp_path):
    url = str(tmp_path / "v")
    base_volume(url)
    xp.to_precomputed(
        xp.downsample(make_array(rand((24, 20, 8, 1))), (2, 2, 1)),
        url,
        mode="a",
        chunk_size=(8, 8, 4),
    )  # a second scale
    assert sorted(os.listdir(url)) == ["4_4_40", "8_8_40", "info"]
    new = rand((24, 20, 8, 1), seed=5)
    new[:8] = 0  # old chunks there must not survive as stale data
    xp.to_precomputed(
        make_array(new, res=(4, 4, 40)), url, mode="w", chunk_size=(8, 8, 4), sharding=None
    )
    info = read_info(url)
    assert [s["key"] for s in info["scales"]] == ["4_4_40"]
    assert "sharding" not in info["scales"][0]
    assert sorted(os.listdir(url)) == ["4_4_40", "info"]
    assert not any(n.endswith(".shard") for n in os.listdir(os.path.join(url, "4_4_40")))
    np.testing.assert_array_equal(ours(url), new)
    np.testing.assert_array_equal(peers.tensorstore_read(url), new)


def _add_unknown_members(url):
    info = read_info(url)
    info["my_extension"] = {"nested": [1, 2, 3]}
    info["mesh"] = "mesh"
    info["scales"][0]["hidden"] = False
    info["scales"][0]["locked"] = True
    with open(os.path.join(url, "info"), "w") as f:
        json.dump(info, f)
    return info


def test_mode_a_adds_a_scale_keeping_everything_else(tmp_path):
    url = str(tmp_path / "v")
    data = base_volume(url)
    original = _add_unknown_members(url)
    scale0_files = {k: v for k, v in file_hashes(url).items() if k.startswith("4_4_40")}
    small = xp.downsample(make_array(data), (2, 2, 1))
    xp.to_precomputed(small, url, mode="a", chunk_size=(4, 4, 4), encoding="png")
    info = read_info(url)
    assert info["my_extension"] == {"nested": [1, 2, 3]} and info["mesh"] == "mesh"
    assert info["scales"][0] == original["scales"][0]
    assert [s["key"] for s in info["scales"]] == ["4_4_40", "8_8_40"]
    s1 = info["scales"][1]
    assert (s1["size"], s1["resolution"], s1["encoding"]) == ([12, 10, 8], [8, 8, 40], "png")
    assert {k: v for k, v in file_hashes(url).items() if k.startswith("4_4_40")} == scale0_files
    np.testing.assert_array_equal(peers.tensorstore_read(url, 1), small.values)
    np.testing.assert_array_equal(ours(url, 1), small.values)
    np.testing.assert_array_equal(ours(url, 0), data)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.astype("uint16"), "uint8"),
        (lambda a: xr.concat([a, a], "channel"), "channel"),
        (lambda a: a, "already exists"),  # same resolution -> duplicate key
    ],
    ids=["dtype", "channels", "duplicate-key"],
)
def test_mode_a_mismatches_refused_without_changes(tmp_path, change, match):
    url = str(tmp_path / "v")
    data = base_volume(url)
    before = file_hashes(url)
    with pytest.raises(WriteError, match=match):
        xp.to_precomputed(change(make_array(data)), url, mode="a", chunk_size=(8, 8, 4))
    assert file_hashes(url) == before


def test_modes_needing_a_volume_and_bad_mode(tmp_path):
    arr = make_array(rand((8, 8, 4, 1)))
    for mode in ("a", "r+"):
        with pytest.raises(WriteError, match="existing volume"):
            xp.to_precomputed(arr, str(tmp_path / mode), mode=mode)
        assert all_files(tmp_path / mode) == []
    with pytest.raises(WriteError, match="mode"):
        xp.to_precomputed(arr, str(tmp_path / "x"), mode="rw")
    assert all_files(tmp_path / "x") == []


def test_mode_r_plus_keeps_info_members(tmp_path):
    url = str(tmp_path / "v")
    data = base_volume(url)
    original = _add_unknown_members(url)
    patch = rand((5, 6, 3, 1), seed=9)
    xp.to_precomputed(
        make_array(patch),
        url,
        mode="r+",
        region={"x": slice(3, 8), "y": slice(14, 20), "z": slice(5, 8)},
    )
    assert read_info(url) == original
    data[3:8, 14:20, 5:8] = patch
    np.testing.assert_array_equal(ours(url), data)


# -- region writes -----------------------------------------------------------------------------


def _stored_chunks(url, key, spec, size, chunk, offset=(0, 0, 0)) -> dict[tuple, bytes]:
    """cell -> stored bytes of every chunk in the scale (unsharded files or shard entries)."""
    grid, cells = chunk_cells(size, chunk)
    keydir = os.path.join(url, key)
    out = {}
    if spec is None:
        for cell in cells:
            p = os.path.join(
                keydir,
                peers.chunk_filename(
                    peers.Case("xp", "raw", "uint8", 1, size, chunk, offset, None), cell
                ),
            )
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out[cell] = f.read()
        return out
    by_id = {peers.compressed_morton_code(c, grid): c for c in cells}
    for name in os.listdir(keydir):
        with open(os.path.join(keydir, name), "rb") as f:
            for cid, blob in parse_shard(f.read(), spec).items():
                out[by_id[cid]] = blob
    return out


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
def test_region_write_keeps_untouched_data_bit_for_bit(tmp_path, sharded, encoding):
    size, chunk = (40, 30, 13), (8, 8, 4)  # edge chunks: y 30 = 3*8 + 6, z 13 = 3*4 + 1
    spec = sharding_dict(3, 0, 4) if sharded else None
    data = rand((*size, 1), "uint32", seed=15)
    url = str(tmp_path / "v")
    xp.to_precomputed(make_array(data), url, chunk_size=chunk, sharding=spec, encoding=encoding)
    before_files = file_hashes(url)
    before_chunks = _stored_chunks(url, "4_4_40", spec, size, chunk)
    lo, hi = (5, 10, 3), (21, 30, 13)  # partial chunks and shards, incl. the y/z edge chunks
    patch = rand((16, 20, 10, 1), "uint32", seed=16)
    xp.to_precomputed(
        make_array(patch),
        url,
        mode="r+",
        region={"x": slice(5, 21), "y": slice(10, None), "z": slice(3, 13)},
    )
    expected = data.copy()
    expected[5:21, 10:30, 3:13] = patch
    np.testing.assert_array_equal(ours(url), expected)
    np.testing.assert_array_equal(peers.tensorstore_read(url), expected)
    after_chunks = _stored_chunks(url, "4_4_40", spec, size, chunk)
    assert set(after_chunks) == set(before_chunks)
    _, cells = chunk_cells(size, chunk)
    for cell in cells:
        hit = all(c * k < h and (c + 1) * k > low for c, k, low, h in zip(cell, chunk, lo, hi))
        assert (after_chunks[cell] != before_chunks[cell]) == hit, cell
    after_files = file_hashes(url)
    changed = {k for k in after_files if after_files[k] != before_files.get(k)}
    if sharded:
        assert changed == {f"4_4_40/{n}" for n in shards_touched(size, chunk, spec, lo, hi)}
    else:
        assert len(changed) == 3 * 3 * 4  # chunk files hit by the region


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
def test_region_write_into_empty_volume_starts_from_zero(tmp_path, sharded):
    size, chunk = (40, 30, 13), (8, 8, 4)
    spec = sharding_dict(3, 0, 4) if sharded else None
    url = str(tmp_path / "v")
    lazy = da.zeros((*size, 2), dtype="int16", chunks=(16, 16, 8, 2))
    xp.to_precomputed(make_array(lazy, offset=(-9, 0, 4)), url, chunk_size=chunk, sharding=spec)
    assert not os.path.exists(os.path.join(url, "4_4_40"))  # all-zero chunks are not stored
    patch = rand((11, 9, 4, 2), "int16", seed=17)
    # region="auto": position from the coordinates (voxels [-2, 9) x [13, 22) x [6, 10))
    xp.to_precomputed(make_array(patch, offset=(-2, 13, 6)), url, mode="r+", region="auto")
    expected = np.zeros((*size, 2), "int16")
    expected[7:18, 13:22, 2:6] = patch
    np.testing.assert_array_equal(ours(url), expected)
    np.testing.assert_array_equal(peers.tensorstore_read(url), expected)
    stored = _stored_chunks(url, "4_4_40", spec, size, chunk, offset=(-9, 0, 4))
    assert set(stored) == {(x, y, 0) for x in (0, 1, 2) for y in (1, 2)} | {
        (x, y, 1) for x in (0, 1, 2) for y in (1, 2)
    }


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
def test_region_of_zeros_removes_objects_that_become_empty(tmp_path, sharded):
    size, chunk = (32, 32, 8), (8, 8, 4)
    spec = sharding_dict(3, 0, 4) if sharded else None  # shards of 16x16x8 voxels
    data = rand((*size, 1), seed=21)
    url = str(tmp_path / "v")
    xp.to_precomputed(make_array(data), url, chunk_size=chunk, sharding=spec)
    keydir = os.path.join(url, "4_4_40")
    n_before = len(os.listdir(keydir))
    zeros = np.zeros((16, 20, 8, 1), "uint8")  # one whole shard + part of the next
    xp.to_precomputed(make_array(zeros), url, mode="r+", region="auto")
    data[:16, :20] = 0
    np.testing.assert_array_equal(ours(url), data)
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)
    names = os.listdir(keydir)
    if sharded:
        assert len(names) == n_before - 1 == 3
        assert peers.shard_filename(spec, 0) not in names
    else:
        assert len(names) == n_before - 2 * 2 * 2 == 32 - 8  # whole chunks of zeros
        assert "0-8_0-8_0-4" not in names and "0-8_16-24_0-4" in names


def test_region_auto_from_an_opened_volume(tmp_path):
    url = str(tmp_path / "v")
    data = base_volume(url, sharding=sharding_dict(2, 1, 3))
    ds = xr.open_dataset(url, engine="precomputed", chunks={})
    sub = ds.isel(x=slice(5, 19), y=slice(2, 20), z=slice(1, 6))
    sub = sub.copy(data={"image": (sub.image + 1).data})
    xp.to_precomputed(sub, url, mode="r+", region="auto")
    data[5:19, 2:20, 1:6] += 1
    np.testing.assert_array_equal(ours(url), data)
