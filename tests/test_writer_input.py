"""``xp.to_precomputed``: bad input is refused before anything is written, and bad region
writes change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.errors import WriteError

from .helpers import DIMS, make_array, rand, sharding_dict
from .writer_helpers import all_files, base_volume, file_hashes, ours

# -- bad input: refused before anything is written ------------------------------------------


def _arr(shape=(8, 8, 4, 1), dtype="uint8", **kw):
    return make_array(rand(shape, dtype), **kw)


def _nonuniform():
    a = _arr()
    return a.assign_coords(x=[2.0, 6.0, 10.0, 14.0, 18.0, 22.0, 26.0, 31.0])


def _unknown_sizes():
    """A Dask array after a boolean selection: its size along x is NaN until computed."""
    a = _arr((8, 8, 4, 1)).chunk({"x": 4})
    data = a.data[(a.data[:, 0, 0, 0] > 0)]  # NaN chunk sizes along x
    return xr.DataArray(data, dims=a.dims, name=a.name, attrs=a.attrs)


def _single_voxel_axis():
    return _arr((8, 8, 1, 1)).drop_vars("z").assign_coords(z=[20.0])


def _two_variables():
    a = _arr()
    return xr.Dataset({"a": a, "b": a})


def _tree_with_bad_second_child():
    good = _arr().to_dataset()
    bad = xp.downsample(_arr(), (2, 2, 1)).astype("float64").to_dataset()
    return xr.DataTree.from_dict({"s0": good, "s1": bad})


BAD_INPUTS = {
    "missing-z": (lambda: _arr((8, 8, 4), dims=("x", "y", "t")), {}, "missing"),
    "extra-dim": (lambda: _arr((8, 8, 4, 2), dims=("x", "y", "z", "t")), {}, "unexpected"),
    "nonuniform-coords": (_nonuniform, {}, "uniform"),
    "decreasing-coords": (lambda: _arr().isel(x=slice(None, None, -1)), {}, "uniform"),
    "off-centre-coords": (lambda: _arr().assign_coords(x=np.arange(8) * 4.0 + 1), {}, "centre"),
    "single-voxel-no-res": (_single_voxel_axis, {}, "single voxel"),
    "no-coords-no-res": (lambda: xr.DataArray(rand((8, 8, 4)), dims=DIMS[:3]), {}, "resolution"),
    "float64": (lambda: _arr(dtype="float64"), {}, "float32"),
    "int64": (lambda: _arr(dtype="int64"), {}, "int32"),
    "bool": (lambda: _arr().astype(bool), {}, "uint8"),
    "jpeg-uint16": (lambda: _arr(dtype="uint16"), {"encoding": "jpeg"}, "uint8"),
    "jpeg-2-channels": (lambda: _arr((8, 8, 4, 2)), {"encoding": "jpeg"}, "num_channels"),
    "png-int16": (lambda: _arr(dtype="int16"), {"encoding": "png"}, "data_type"),
    "cseg-uint8": (lambda: _arr(), {"encoding": "compressed_segmentation"}, "uint32"),
    "cseg-float32": (
        lambda: _arr(dtype="float32"),
        {"encoding": "compressed_segmentation"},
        "uint64",
    ),
    "compresso-2-channels": (
        lambda: _arr((8, 8, 4, 2), "uint32"),
        {"encoding": "compresso"},
        "num_channels",
    ),
    "unknown-encoding": (lambda: _arr(), {"encoding": "zstd"}, "encoding"),
    "gzip-as-encoding": (lambda: _arr(), {"encoding": "gzip"}, "data_encoding 'gzip'"),
    "chunk-zero": (lambda: _arr(), {"chunk_size": (0, 8, 8)}, "chunk_size"),
    "chunk-2d": (lambda: _arr(), {"chunk_size": (8, 8)}, "chunk_size"),
    "chunk-fraction": (lambda: _arr(), {"chunk_size": (8, 8.5, 8)}, "chunk_size"),
    "block-zero": (
        lambda: _arr(dtype="uint32"),
        {"encoding": "compressed_segmentation", "compressed_segmentation_block_size": (0, 8, 8)},
        "block_size",
    ),
    "jpeg-quality": (lambda: _arr(), {"encoding": "jpeg", "jpeg_quality": 101}, "jpeg_quality"),
    "png-level": (lambda: _arr(), {"encoding": "png", "png_level": 10}, "png_level"),
    "bad-sharding-value": (lambda: _arr(), {"sharding": "yes"}, "sharding"),
    "shard-bytes-negative": (lambda: _arr(), {"shard_bytes": -5}, "shard_bytes"),
    "shard-bytes-zero-unsharded": (
        lambda: _arr(),
        {"shard_bytes": 0, "sharding": None},
        "shard_bytes",
    ),  # fmt: skip
    "shard-bytes-text": (lambda: _arr(), {"shard_bytes": "32MiB"}, "shard_bytes"),
    "resolution-2-values": (lambda: _arr(), {"resolution": (4, 40)}, "resolution must be 3"),
    "resolution-nan": (lambda: _arr(), {"resolution": (4, 4, float("nan"))}, "resolution"),
    "voxel-offset-fraction": (lambda: _arr(), {"voxel_offset": (0.5, 0, 0)}, "voxel_offset"),
    "dask-unknown-sizes": (_unknown_sizes, {}, "compute_chunk_sizes"),
    "minishard-bits-33": (lambda: _arr(), {"sharding": sharding_dict(0, 33, 0)}, "minishard_bits"),
    "region-without-r+": (lambda: _arr(), {"region": "auto"}, "r\\+"),
    "two-variables": (_two_variables, {}, "variable"),
    "tree-bad-child": (_tree_with_bad_second_child, {}, "float64"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_refused_before_writing(tmp_path, name):
    build, kwargs, match = BAD_INPUTS[name]
    url = tmp_path / "v"
    with pytest.raises(WriteError, match=match):
        xp.to_precomputed(build(), str(url), **kwargs)
    assert all_files(url) == []


EXISTING_BAD = {
    "region-outside": (
        lambda: _arr((8, 8, 4, 1), offset=(20, 0, 0)),
        {"region": "auto"},
        "outside",
    ),
    "region-negative": (
        lambda: _arr((8, 8, 4, 1), offset=(-1, 0, 0)),
        {"region": "auto"},
        "outside",
    ),
    "region-dict-past-end": (
        lambda: _arr((8, 8, 4, 1)),
        {"region": {"x": slice(0, 8), "y": slice(16, 24), "z": slice(0, 4)}},
        "outside",
    ),
    "region-dict-before-start": (
        lambda: _arr((8, 8, 4, 1)),
        {"region": {"x": slice(0, 8), "y": slice(-40, -32), "z": slice(0, 4)}},
        "outside",
    ),
    "region-length-mismatch": (lambda: _arr((8, 8, 4, 1)), {"region": {"x": slice(0, 5)}}, "spans"),
    "region-step": (lambda: _arr((8, 8, 4, 1)), {"region": {"x": slice(0, 16, 2)}}, "step"),
    "r+-dtype": (lambda: _arr((8, 8, 4, 1), "uint16"), {"region": "auto"}, "uint8"),
    "r+-channels": (lambda: _arr((8, 8, 4, 3)), {"region": "auto"}, "channel"),
    "r+-unknown-resolution": (
        lambda: _arr((8, 8, 4, 1), res=(5, 5, 50)),
        {"region": "auto"},
        "scale",
    ),
}


@pytest.mark.parametrize("name", sorted(EXISTING_BAD))
def test_bad_region_writes_change_nothing(tmp_path, name):
    url = str(tmp_path / "v")
    data = base_volume(url)
    before = file_hashes(url)
    build, kwargs, match = EXISTING_BAD[name]
    with pytest.raises(Exception, match=match) as e:
        xp.to_precomputed(build(), url, mode="r+", **kwargs)
    assert isinstance(e.value, ValueError)  # WriteError / ScaleNotFoundError
    assert file_hashes(url) == before
    np.testing.assert_array_equal(ours(url), data)


def test_mode_w_refuses_to_delete_its_own_lazy_source(tmp_path):
    """mode='w' on the volume the data is lazily read from would delete the source
    before reading it: refused before anything changes."""
    url = str(tmp_path / "v")
    data = np.minimum(rand((40, 30, 10, 1)), 200).astype("uint8")  # room for + 1
    xp.to_precomputed(make_array(data), url, chunk_size=(16, 16, 8))
    before = file_hashes(url)
    lazy = xr.open_dataset(url, engine="precomputed", chunks={})
    with pytest.raises(WriteError, match="read lazily from"):
        xp.to_precomputed(lazy + 1, url, mode="w")
    assert file_hashes(url) == before
    # loaded data (no Dask) may replace its own source
    loaded = xr.open_dataset(url, engine="precomputed").load()
    loaded["image"] = loaded.image + 1
    xp.to_precomputed(loaded, url, mode="w")
    np.testing.assert_array_equal(xr.open_dataset(url, engine="precomputed").image.values, data + 1)


@pytest.mark.parametrize("url", ["", "precomputed://", "file://", "gs://"])
def test_empty_url_is_refused_not_the_working_directory(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(xp.StorageError, match="empty volume URL"):
        xp.to_precomputed(_arr(), url)
    with pytest.raises(xp.StorageError, match="empty volume URL"):
        xr.open_dataset(url, engine="precomputed")
    assert list(tmp_path.iterdir()) == []
