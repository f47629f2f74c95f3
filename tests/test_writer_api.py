"""``xp.to_precomputed``: the basic API (defaults, dims, type and geometry, accessors,
``compute=False``) and exact round-trips of what the reader returns.

Peers (tensorstore) check that what is written is a valid volume; the full peer matrix
lives in ``test_writer_peers.py``."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.delayed import Delayed

import xarray_precomputed as xp

from . import peers
from .helpers import DIMS, make_array, rand, sharding_dict
from .writer_helpers import file_hashes, ours, read_info

# -- basic API -------------------------------------------------------------------------


def test_write_dataarray_defaults_and_info(tmp_path):
    data = rand((70, 50, 20), seed=1)
    arr = make_array(data, offset=(-5, 3, 2), dims=DIMS[:3])
    url = str(tmp_path / "v")
    n = xp.to_precomputed(arr, url, chunk_size=(32, 32, 8), sharding=None)
    info = read_info(url)
    assert info["@type"] == "neuroglancer_multiscale_volume"
    assert (info["type"], info["data_type"], info["num_channels"]) == ("image", "uint8", 1)
    (scale,) = info["scales"]
    assert scale["key"] == "4_4_40"
    assert scale["size"] == [70, 50, 20]
    assert scale["voxel_offset"] == [-5, 3, 2]
    assert scale["resolution"] == [4, 4, 40]
    assert scale["chunk_sizes"] == [[32, 32, 8]]
    assert scale["encoding"] == "raw"
    assert "sharding" not in scale
    # one object per chunk: 3 x 2 x 3 chunks, named by voxel ranges (negative offset)
    names = sorted(os.listdir(os.path.join(url, "4_4_40")))
    assert n == len(names) == 18
    assert "-5-27_3-35_2-10" in names and "59-65_35-53_18-22" in names
    np.testing.assert_array_equal(ours(url)[..., 0], data)
    np.testing.assert_array_equal(peers.tensorstore_read(url)[..., 0], data)
    # stored bytes are exactly the raw encoding: Fortran order, little endian
    with open(os.path.join(url, "4_4_40", "59-65_35-53_18-22"), "rb") as f:
        assert f.read() == data[64:, 32:, 16:].tobytes(order="F")


def test_default_chunk_size_and_auto_sharding(tmp_path):
    data = rand((130, 70, 65), seed=2)
    url = str(tmp_path / "v")
    xp.to_precomputed(make_array(data, dims=DIMS[:3]), url)
    (scale,) = read_info(url)["scales"]
    assert scale["chunk_sizes"] == [[64, 64, 64]]
    assert scale["encoding"] == "raw"
    # the whole volume (~0.6 MB) is far below the default shard size: one box shard
    sh = scale["sharding"]
    assert sh["hash"] == "identity" and sh["shard_bits"] == 0
    assert peers.shard_box_chunks(sh, (3, 2, 2)) == (3, 2, 2)
    assert os.listdir(os.path.join(url, "4_4_40")) == ["0.shard"]
    np.testing.assert_array_equal(peers.tensorstore_read(url)[..., 0], data)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_dims_in_any_order_are_transposed_by_name(tmp_path, lazy):
    data = rand((3, 7, 11, 13), dtype="uint16", seed=3)  # (channel, z, y, x)
    arr = make_array(
        da.from_array(data, chunks=(3, 4, 5, 6)) if lazy else data,
        offset=(1, 2, 3),
        dims=("channel", "z", "y", "x"),
    )
    url = str(tmp_path / "v")
    xp.to_precomputed(arr, url, chunk_size=(8, 8, 4))
    info = read_info(url)
    assert info["num_channels"] == 3
    assert info["scales"][0]["size"] == [13, 11, 7]
    assert info["scales"][0]["voxel_offset"] == [1, 2, 3]
    np.testing.assert_array_equal(ours(url), data.transpose(3, 2, 1, 0))
    np.testing.assert_array_equal(peers.tensorstore_read(url), data.transpose(3, 2, 1, 0))


@pytest.mark.parametrize(
    "name,dtype,kwargs,expected",
    [
        ("image", "uint32", {}, "image"),
        ("segmentation", "uint8", {}, "segmentation"),
        ("anything", "uint64", {}, "segmentation"),
        ("anything", "int16", {}, "image"),
        ("image", "uint64", {"type": "segmentation"}, "segmentation"),
    ],
)
def test_type_from_name_or_argument_and_data_type_from_dtype(
    tmp_path, name, dtype, kwargs, expected
):
    arr = make_array(rand((4, 4, 2, 1), dtype), name=name)
    url = str(tmp_path / "v")
    xp.to_precomputed(arr.to_dataset(), url, chunk_size=(4, 4, 2), **kwargs)
    info = read_info(url)
    assert info["type"] == expected
    assert info["data_type"] == dtype


def test_geometry_from_arguments_without_coordinates(tmp_path):
    data = rand((9, 8, 7, 2), "int8", seed=4)
    arr = xr.DataArray(data, dims=DIMS, name="image")
    url = str(tmp_path / "v")
    xp.to_precomputed(
        arr, url, resolution=(8, 6.5, 33), voxel_offset=(-3, 4, -5), chunk_size=(4, 4, 4)
    )
    scale = read_info(url)["scales"][0]
    assert scale["resolution"] == [8, 6.5, 33]
    assert scale["voxel_offset"] == [-3, 4, -5]
    assert scale["key"] == "8_6.5_33"
    np.testing.assert_array_equal(ours(url), data)
    # arguments win over coordinates
    url2 = str(tmp_path / "v2")
    xp.to_precomputed(
        make_array(data, offset=(100, 100, 100)),
        url2,
        resolution=(1, 2, 3),
        voxel_offset=(0, 0, 0),
        chunk_size=(4, 4, 4),
    )
    scale = read_info(url2)["scales"][0]
    assert scale["resolution"] == [1, 2, 3] and scale["voxel_offset"] == [0, 0, 0]
    # no coordinates and only a resolution: the volume starts at voxel 0
    url3 = str(tmp_path / "v3")
    xp.to_precomputed(arr, url3, resolution=(8, 8, 33), chunk_size=(4, 4, 4))
    scale = read_info(url3)["scales"][0]
    assert scale["resolution"] == [8, 8, 33] and scale["voxel_offset"] == [0, 0, 0]
    np.testing.assert_array_equal(ours(url3), data)


def test_accessors_and_input_not_modified(tmp_path):
    data = rand((8, 8, 4, 1), seed=5)
    ds = make_array(data).to_dataset().assign_attrs(note="keep me")
    before = dict(ds.image.attrs)
    url = str(tmp_path / "ds")
    ds.precomputed.to_precomputed(url, chunk_size=(4, 4, 4))
    assert ds.image.attrs == before  # the caller's Dataset is not modified
    np.testing.assert_array_equal(ours(url), data)
    url = str(tmp_path / "da")
    ds.image.precomputed.to_precomputed(url, chunk_size=(4, 4, 4), encoding="png")
    assert read_info(url)["scales"][0]["encoding"] == "png"
    np.testing.assert_array_equal(ours(url), data)


def test_compute_false_returns_delayed_that_writes(tmp_path):
    data = rand((16, 16, 8, 1), seed=6)
    url = str(tmp_path / "v")
    delayed = xp.to_precomputed(
        make_array(da.from_array(data, chunks=8)),
        url,
        chunk_size=(8, 8, 8),
        sharding=None,
        compute=False,
    )
    assert isinstance(delayed, Delayed)
    assert not os.path.exists(os.path.join(url, "4_4_40"))  # no chunk yet
    assert delayed.compute() == 4
    assert len(os.listdir(os.path.join(url, "4_4_40"))) == 4
    np.testing.assert_array_equal(ours(url), data)


def test_float32_nan_and_special_values_stored_exactly(tmp_path):
    data = np.random.default_rng(7).normal(size=(9, 7, 5, 1)).astype(np.float32)
    bits = data.view(np.uint32)
    bits[0, 0, 0] = 0x7FC00000  # quiet NaN
    bits[1, 2, 3] = 0x7FC12345  # NaN with a payload
    bits[2, 0, 0] = 0xFFC00001  # negative NaN
    data[3, 3, 3] = np.inf
    data[4, 4, 4] = -np.inf
    data[5, 5, 1] = -0.0
    data[6, 6, 2] = np.float32(1e-45)  # subnormal
    url = str(tmp_path / "v")
    xp.to_precomputed(make_array(da.from_array(data, chunks=4)), url, chunk_size=(4, 4, 4))
    np.testing.assert_array_equal(ours(url).view(np.uint32), bits)
    np.testing.assert_array_equal(peers.tensorstore_read(url).view(np.uint32), bits)


# -- the reader's attrs round-trip ---------------------------------------------------------

ROUNDTRIP_SOURCES = {
    # name: tensorstore creation arguments (everything the writer must reproduce from attrs)
    "raw-unsharded-customkey-fractional-res": dict(
        data_type="uint16",
        num_channels=2,
        layer_type="image",
        resolution=(3.3, 0.7, 41.1),
        size=(37, 29, 11),
        chunk_size=(16, 16, 8),
        voxel_offset=(-3, 5, 7),
        encoding="raw",
        key="s0",
    ),
    "cseg-sharded-box": dict(
        data_type="uint64",
        num_channels=1,
        layer_type="segmentation",
        resolution=(8, 8, 30),
        size=(40, 33, 18),
        chunk_size=(8, 8, 4),
        voxel_offset=(-20, 4, -3),
        encoding="compressed_segmentation",
        block_size=(3, 5, 2),
        sharding=sharding_dict(2, 1, 6, data_enc="raw"),
        key="seg/mip0",
    ),
    "raw-one-shard-minishards": dict(
        data_type="int32",
        num_channels=1,
        layer_type="image",
        resolution=(5, 5, 5),
        size=(23, 19, 13),
        chunk_size=(8, 8, 8),
        voxel_offset=(0, 0, 0),
        encoding="raw",
        sharding=sharding_dict(0, 3, 0, mi_enc="raw"),
    ),
    "jpeg-sharded": dict(
        data_type="uint8",
        num_channels=3,
        layer_type="image",
        resolution=(4, 4, 40),
        size=(37, 29, 11),
        chunk_size=(16, 16, 8),
        voxel_offset=(1, 2, 3),
        encoding="jpeg",
        sharding=sharding_dict(1, 2, 2, data_enc="raw"),
    ),
}


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("source", sorted(ROUNDTRIP_SOURCES))
def test_reader_attrs_roundtrip_exactly(tmp_path, source, lazy):
    args = ROUNDTRIP_SOURCES[source]
    url1, url2 = str(tmp_path / "a"), str(tmp_path / "b")
    case = peers.Case(
        "tensorstore",
        args["encoding"],
        args["data_type"],
        args["num_channels"],
        args["size"],
        args["chunk_size"],
        args["voxel_offset"],
        args.get("sharding"),
        args.get("block_size"),
    )
    t = peers._tensorstore_create(url1, **args)
    t.write(peers.make_data(case)).result()
    original = peers.tensorstore_read(url1)

    ds = xr.open_dataset(url1, engine="precomputed", chunks={} if lazy else None)
    xp.to_precomputed(ds, url2)  # no options at all

    info1, info2 = read_info(url1), read_info(url2)
    for k in ("type", "data_type", "num_channels"):
        assert info2[k] == info1[k]
    s1, s2 = info1["scales"][0], info2["scales"][0]
    for k in (
        "key",
        "size",
        "voxel_offset",
        "resolution",
        "chunk_sizes",
        "encoding",
        "compressed_segmentation_block_size",
        "sharding",
        "jpeg_quality",
    ):
        assert s2.get(k) == s1.get(k), k
    again = peers.tensorstore_read(url2)
    if args["encoding"] == "jpeg":
        # re-encoding a decoded jpeg is lossy; the layout is what must round-trip
        err = np.abs(again.astype(int) - original.astype(int))
        assert err.mean() < 3 and err.max() < 64
    else:
        np.testing.assert_array_equal(again, original)
        np.testing.assert_array_equal(ours(url2), original)


OWN_LAYOUTS = {
    "raw-auto": dict(encoding="raw", chunk_size=(8, 8, 4), shard_bytes=8 * 8 * 4 * 2 * 8),
    "raw-unsharded": dict(encoding="raw", chunk_size=(16, 8, 4), sharding=None),
    "cseg-auto": dict(
        encoding="compressed_segmentation",
        chunk_size=(8, 8, 4),
        compressed_segmentation_block_size=(4, 2, 2),
        shard_bytes=2048,
    ),
    "png-level": dict(encoding="png", chunk_size=(16, 16, 4), png_level=3, sharding=None),
    "compresso-gzip": dict(
        encoding="compresso", chunk_size=(8, 8, 8), sharding=sharding_dict(1, 1, 4, mi_enc="raw")
    ),
}


@pytest.mark.parametrize("layout", sorted(OWN_LAYOUTS))
def test_own_volume_rewritten_without_options_is_byte_identical(tmp_path, layout):
    kwargs = OWN_LAYOUTS[layout]
    dtype = "uint16" if kwargs["encoding"] in ("png",) else "uint32"
    data = peers.make_data(
        peers.Case("xp", "compresso", dtype, 1, (29, 21, 10), (8, 8, 4), (0, 0, 0), None)
    )  # blocky labels
    url1, url2 = str(tmp_path / "a"), str(tmp_path / "b")
    xp.to_precomputed(make_array(data, offset=(-7, 0, 3), name="segmentation"), url1, **kwargs)
    xp.to_precomputed(xr.open_dataset(url1, engine="precomputed"), url2)
    assert read_info(url2) == read_info(url1)
    assert file_hashes(url2) == file_hashes(url1)
    np.testing.assert_array_equal(ours(url2), data)
