"""``xp.to_precomputed``: API, layouts, modes, task structure, memory, region writes,
failure recovery and input validation.

Peers (tensorstore) are used to check that what is written is a valid volume; the full
peer matrix lives in ``test_writer_peers.py``.  Shard files are parsed here with a small
independent parser written from the format spec (``parse_shard``), not with the package.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import gzip
import hashlib
import itertools
import json
import math
import os
import threading
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.delayed import Delayed
from hypothesis import given, settings
from hypothesis import strategies as st

import xarray_precomputed as xp
from xarray_precomputed.chunk_grid import shard_box_chunks as pkg_shard_box_chunks
from xarray_precomputed.errors import StorageError, VolumeExistsError, WriteError
from xarray_precomputed.metadata import Scale
from xarray_precomputed.storage import Store

from . import peers
from .helpers import DIMS, GZIP_MAGIC, make_array, rand, sharding_dict

# -- helpers -------------------------------------------------------------------------


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


# -- encodings and sharding layouts ----------------------------------------------------------

ENCODING_CASES = [
    ("raw", "float32", 2, None),
    ("png", "uint8", 4, None),
    ("png", "uint16", 1, None),
    ("compressed_segmentation", "uint32", 2, (4, 4, 2)),
    ("compressed_segmentation", "uint64", 1, (8, 8, 8)),
    ("compresso", "uint64", 1, None),
    ("compresso", "uint8", 1, None),
]
SHARD_ENCODINGS = [None, ("gzip", "gzip"), ("raw", "raw"), ("gzip", "raw"), ("raw", "gzip")]


@pytest.mark.parametrize("shard_enc", SHARD_ENCODINGS, ids=lambda s: "-".join(s or ["unsharded"]))
@pytest.mark.parametrize("encoding,dtype,nc,block", ENCODING_CASES, ids=lambda v: str(v))
def test_lossless_encoding_identity(tmp_path, encoding, dtype, nc, block, shard_enc):
    size, chunk, offset = (23, 19, 9), (8, 8, 4), (-3, 5, -1)
    case = peers.Case("xp", encoding, dtype, nc, size, chunk, offset, None, block)
    data = peers.make_data(case)
    spec = (
        None
        if shard_enc is None
        else sharding_dict(1, 2, 2, mi_enc=shard_enc[0], data_enc=shard_enc[1])
    )
    url = str(tmp_path / "v")
    xp.to_precomputed(
        make_array(data, offset),
        url,
        chunk_size=chunk,
        encoding=encoding,
        compressed_segmentation_block_size=block,
        sharding=spec,
    )
    scale = read_info(url)["scales"][0]
    assert scale["encoding"] == encoding
    assert scale.get("compressed_segmentation_block_size") == (list(block) if block else None)
    assert scale.get("sharding") == spec
    np.testing.assert_array_equal(ours(url), data)
    grid, cells = chunk_cells(size, chunk)
    nonzero = {c for c in cells if data[cell_slices(c, chunk)].any()}
    keydir = os.path.join(url, "4_4_40")
    if spec is None:
        assert len(os.listdir(keydir)) == len(nonzero)
        return
    # every shard parses with the independent parser; each chunk is in the shard its id
    # hashes to, encoded per data_encoding, and decodes to the data
    from xarray_precomputed.codecs import get_codec

    codec = get_codec(encoding, np.dtype(dtype), nc, **({"block_size": block} if block else {}))
    found = {}
    for name in os.listdir(keydir):
        with open(os.path.join(keydir, name), "rb") as f:
            for cid, blob in parse_shard(f.read(), spec).items():
                assert peers.shard_filename(spec, peers.shard_number(spec, cid)) == name
                found[cid] = blob
    by_id = {peers.compressed_morton_code(c, grid): c for c in cells}
    assert {by_id[i] for i in found} == nonzero
    for cid, blob in found.items():
        cell = by_id[cid]
        assert (blob[:2] == GZIP_MAGIC) == (spec["data_encoding"] == "gzip")
        if spec["data_encoding"] == "gzip":
            blob = gzip.decompress(blob)
        want = data[cell_slices(cell, chunk)]
        np.testing.assert_array_equal(codec.decode(blob, want.shape[:3], "test"), want)
    if encoding != "compresso":
        np.testing.assert_array_equal(peers.tensorstore_read(url), data)


@pytest.mark.parametrize(
    "spec",
    [
        sharding_dict(1, 2, 2, hash="murmurhash3_x86_128"),
        sharding_dict(1, 1, 1),  # identity, but too few bits: boxes alias into one shard
    ],
    ids=["murmurhash", "aliasing"],
)
def test_scattering_sharding_refused_before_writing(tmp_path, spec):
    url = tmp_path / "v"
    arr = make_array(rand((40, 40, 16, 1)))
    with pytest.raises(WriteError) as e:
        xp.to_precomputed(arr, str(url), chunk_size=(8, 8, 4), sharding=spec)
    msg = str(e.value)
    assert "box" in msg and "memory" in msg  # why
    assert "sharding='auto'" in msg and "sharding=None" in msg  # what to use instead
    if spec["hash"] != "identity":
        assert "murmurhash" in msg
    assert all_files(url) == []


def test_jpeg_quality_and_png_level_are_used_and_recorded(tmp_path):
    case = peers.Case("xp", "jpeg", "uint8", 1, (32, 32, 8), (16, 16, 8), (0, 0, 0), None)
    data = peers.make_data(case)
    errors, sizes = {}, {}
    for q in (30, 95):
        url = str(tmp_path / f"q{q}")
        xp.to_precomputed(
            make_array(data), url, chunk_size=(16, 16, 8), encoding="jpeg", jpeg_quality=q
        )
        assert read_info(url)["scales"][0]["jpeg_quality"] == q
        errors[q] = np.abs(peers.tensorstore_read(url).astype(int) - data).mean()
    assert errors[95] < errors[30] / 2, errors
    for level in (0, 9):
        url = str(tmp_path / f"png{level}")
        xp.to_precomputed(
            make_array(data),
            url,
            chunk_size=(16, 16, 8),
            encoding="png",
            png_level=level,
            sharding=None,
        )
        scale = read_info(url)["scales"][0]
        assert scale["png_level"] == level and "jpeg_quality" not in scale
        sizes[level] = sum(
            os.path.getsize(os.path.join(url, "4_4_40", n))
            for n in os.listdir(os.path.join(url, "4_4_40"))
        )
        np.testing.assert_array_equal(peers.tensorstore_read(url), data)
    assert sizes[9] < sizes[0] * 0.9, sizes  # level 0 = stored, uncompressed


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
    if total_bits > 64:
        return  # the writer refuses such grids (see test_morton_bits_over_64_refused)
    spec = xp.auto_sharding(scale, voxel_bytes, shard_bytes)
    chunk_bytes = math.prod(chunk) * voxel_bytes
    if spec is None:
        # unsharded only when a shard would hold a single chunk
        assert shard_bytes / chunk_bytes < math.sqrt(2) or total_bits == 0
        return
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
    tmp_path, size, chunk, dtype, nc, shard_bytes
):
    import tensorstore as ts

    arr = make_array(da.zeros((*size, nc), dtype=dtype, chunks=(*size, nc)))
    url = str(tmp_path / "v")
    delayed = xp.to_precomputed(
        arr, url, chunk_size=chunk, shard_bytes=shard_bytes, compute=False
    )  # never computed: lazy zeros
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


# -- modes ---------------------------------------------------------------------------------


def _base_volume(url, seed=0, **kwargs):
    data = rand((24, 20, 8, 1), seed=seed)
    kw = dict(chunk_size=(8, 8, 4), shard_bytes=8 * 8 * 4 * 4)
    kw.update(kwargs)
    xp.to_precomputed(make_array(data), url, **kw)
    return data


def test_mode_w_minus_refuses_existing_volume_without_touching_it(tmp_path):
    url = str(tmp_path / "v")
    _base_volume(url)
    before = file_hashes(url)
    other = make_array(rand((24, 20, 8, 1), seed=1))
    with pytest.raises(VolumeExistsError, match="mode='w'"):
        xp.to_precomputed(other, url, chunk_size=(8, 8, 4))
    with pytest.raises(FileExistsError):  # also a builtin FileExistsError
        xp.to_precomputed(other, url, mode="w-", chunk_size=(8, 8, 4))
    assert file_hashes(url) == before


def test_mode_w_replaces_everything(tmp_path):
    url = str(tmp_path / "v")
    _base_volume(url)
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
    data = _base_volume(url)
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
    data = _base_volume(url)
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
    data = _base_volume(url)
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


# -- memory of a write task ----------------------------------------------------------------

SHARD_SHAPE = (256, 256, 128)  # uint8: 8 MiB = 32 chunks of 64^3
SHARD_BYTES = math.prod(SHARD_SHAPE)


@pytest.mark.parametrize("encodings", [("raw", "raw"), ("gzip", "gzip")], ids="-".join)
def test_write_task_peak_memory_within_3x_shard(tmp_path, encodings):
    from xarray_precomputed.write_tasks import write_block

    spec = sharding_dict(
        5, 0, 3, mi_enc=encodings[0], data_enc=encodings[1]
    )  # boxes of 4x4x2 chunks = one 8 MiB block
    url = str(tmp_path / "v")
    size = (512, 512, 256)
    xp.to_precomputed(
        make_array(da.zeros((*size, 1), dtype="uint8", chunks=(*SHARD_SHAPE, 1))),
        url,
        chunk_size=(64, 64, 64),
        sharding=spec,
        compute=False,
    )
    store, info = xp.open_info(url)
    rng = np.random.default_rng(14)
    block = np.asfortranarray(rng.integers(0, 256, (*SHARD_SHAPE, 1), dtype=np.uint8))
    patch = np.asfortranarray(rng.integers(0, 256, (100, 200, 128, 1), dtype=np.uint8))
    # a shard that already exists elsewhere: merging reads it back in
    ratios = {}
    for what, arr, origin, merge in [
        ("whole shard", block, (0, 0, 0), False),
        ("region merge", patch, (30, 17, 0), True),
    ]:
        tracemalloc.start()
        try:
            write_block(store, info, 0, arr, origin, merge=merge)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        ratios[what] = peak / SHARD_BYTES
    print(f"\npeak/shard {encodings}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    assert all(r <= 3 for r in ratios.values()), ratios
    expected = block.copy()
    expected[30:130, 17:217] = patch
    assert os.listdir(os.path.join(url, info.scales[0].key)) == ["0.shard"]
    ds = xr.open_dataset(url, engine="precomputed")
    np.testing.assert_array_equal(ds.image[:256, :256, :128].values, expected)


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
    data = _base_volume(url, sharding=sharding_dict(2, 1, 3))
    ds = xr.open_dataset(url, engine="precomputed", chunks={})
    sub = ds.isel(x=slice(5, 19), y=slice(2, 20), z=slice(1, 6))
    sub = sub.copy(data={"image": (sub.image + 1).data})
    xp.to_precomputed(sub, url, mode="r+", region="auto")
    data[5:19, 2:20, 1:6] += 1
    np.testing.assert_array_equal(ours(url), data)


# -- failures and determinism ------------------------------------------------------------------


@contextlib.contextmanager
def own_thread_pool(workers=2):
    """Run dask's threaded scheduler on a pool that is joined on exit.

    When a task fails, ``compute`` raises at once while tasks already running carry on
    (they cannot be cancelled); joining the pool lets them finish before the test looks
    at the files.
    """
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        with dask.config.set(scheduler="threads", pool=pool):
            yield
    finally:
        pool.shutdown(wait=True)


def _no_temporaries(url):
    names = all_files(url)
    assert not [n for n in names if n.endswith(".tmp") or os.path.basename(n).startswith(".")]


@pytest.mark.parametrize("retry", ["w", "r+"])
def test_failed_put_then_retry_gives_a_correct_volume(tmp_path, monkeypatch, retry):
    size, chunk = (48, 40, 13), (8, 8, 4)
    spec = sharding_dict(3, 0, 5)
    data = rand((*size, 1), seed=18)
    arr = make_array(da.from_array(data, chunks=(16, 16, 8, 1)))
    url = str(tmp_path / "v")
    real = Store.put
    failed = []

    victim = "4_4_40/" + peers.shard_filename(spec, 5)

    def flaky(store, key, blob):
        if key == victim and not failed:
            failed.append(key)
            raise StorageError(f"injected failure writing {key}")
        return real(store, key, blob)

    monkeypatch.setattr(Store, "put", flaky)
    with pytest.raises(StorageError, match="injected"):
        with own_thread_pool():  # tasks in flight when the error arrives finish first
            xp.to_precomputed(arr, url, chunk_size=chunk, sharding=spec)
    assert failed == [victim] == ["4_4_40/05.shard"]
    assert not os.path.exists(os.path.join(url, victim))
    _no_temporaries(url)
    if retry == "w":
        xp.to_precomputed(arr, url, mode="w", chunk_size=chunk, sharding=spec)
    else:
        xp.to_precomputed(arr, url, mode="r+", region="auto")
    _no_temporaries(url)
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)
    np.testing.assert_array_equal(ours(url), data)


def test_failure_inside_the_atomic_put_leaves_no_temporary_file(tmp_path, monkeypatch):
    url = str(tmp_path / "v")
    data = _base_volume(url)  # an existing shard must survive a failed rewrite intact
    before = file_hashes(url)
    real_replace = os.replace

    def failing_replace(src, dst):
        if dst.endswith(".shard"):
            raise OSError(28, "No space left on device (injected)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    patch = rand((24, 20, 8, 1), seed=19)
    with pytest.raises(StorageError, match="No space"):
        with own_thread_pool():
            xp.to_precomputed(make_array(patch), url, mode="r+", region="auto")
    monkeypatch.setattr(os, "replace", real_replace)
    _no_temporaries(url)
    assert {k: v for k, v in file_hashes(url).items() if k != "info"} == {
        k: v for k, v in before.items() if k != "info"
    }
    np.testing.assert_array_equal(ours(url), data)
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation", "jpeg", "png"])
def test_same_data_twice_gives_identical_bytes(tmp_path, encoding):
    dtype, nc = ("uint8", 1) if encoding in ("jpeg", "png") else ("uint64", 2)
    data = rand((29, 23, 9, nc), dtype, seed=20)
    hashes = []
    for i, chunks in enumerate([(29, 23, 9, nc), (7, 5, 3, nc)]):
        url = str(tmp_path / f"v{i}")
        arr = make_array(da.from_array(data, chunks=chunks), offset=(-1, 2, 3))
        xp.to_precomputed(
            arr, url, chunk_size=(8, 8, 4), encoding=encoding, shard_bytes=8 * 8 * 4 * 4
        )
        hashes.append(file_hashes(url))
    xp.to_precomputed(
        make_array(data, offset=(-1, 2, 3)),
        str(tmp_path / "v0"),
        mode="w",
        chunk_size=(8, 8, 4),
        encoding=encoding,
        shard_bytes=8 * 8 * 4 * 4,
    )
    hashes.append(file_hashes(tmp_path / "v0"))
    assert len(hashes[0]) > 2
    assert hashes[0] == hashes[1] == hashes[2]


# -- bad input: refused before anything is written ------------------------------------------


def _arr(shape=(8, 8, 4, 1), dtype="uint8", **kw):
    return make_array(rand(shape, dtype), **kw)


def _nonuniform():
    a = _arr()
    return a.assign_coords(x=[2.0, 6.0, 10.0, 14.0, 18.0, 22.0, 26.0, 31.0])


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
        {"region": {"y": slice(16, 24)}},
        "outside|spans",
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
    data = _base_volume(url)
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
