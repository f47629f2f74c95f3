"""Every failure mode raises the right PrecomputedError subclass, naming the volume, the
scale and the object involved."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import xarray as xr

from xarray_precomputed import open_info
from xarray_precomputed.chunk_grid import morton_encode
from xarray_precomputed.errors import (
    ChunkNotFoundError,
    CorruptDataError,
    InfoError,
    InfoNotFoundError,
    PrecomputedError,
    ScaleNotFoundError,
)
from xarray_precomputed.metadata import ShardingSpec
from xarray_precomputed.sharding import encode_shard
from xarray_precomputed.testing import write_tensorstore_volume

from . import peers
from .helpers import sharding_dict

KEY = "4_4_40"


def sharding(mi_enc="raw", data_enc="raw"):
    # grid (4, 4, 2) of (4, 4, 3) chunks: box shards of 2 x 2 x 2 chunks, 2 minishards each.
    return sharding_dict(2, 1, 2, mi_enc=mi_enc, data_enc=data_enc)


def volume(
    path,
    encoding="raw",
    sharded=False,
    dtype="uint8",
    nc=1,
    mi_enc="raw",
    data_enc="raw",
    block_size=None,
):
    """A 16 x 16 x 6 volume written by tensorstore (tests calling this skip without it)."""
    peers.tensorstore()
    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, (16, 16, 6, nc)).astype(dtype)
    write_tensorstore_volume(
        path,
        data,
        chunk_size=(4, 4, 3),
        encoding=encoding,
        sharding=sharding(mi_enc, data_enc) if sharded else None,
        block_size=block_size,
        volume_type="segmentation" if encoding == "compressed_segmentation" else "image",
    )
    return data


def open_image(path, **kwargs):
    ds = xr.open_dataset(path, engine="precomputed", **kwargs)
    return next(iter(ds.data_vars.values()))


def check_message(excinfo, path, obj):
    message = str(excinfo.value)
    assert str(path) in message, message
    assert KEY in message, message
    assert obj in message, message


# -- info ----------------------------------------------------------------------------


def test_missing_info(tmp_path):
    with pytest.raises(InfoNotFoundError) as excinfo:
        xr.open_dataset(tmp_path / "nothing", engine="precomputed")
    assert str(tmp_path / "nothing") in str(excinfo.value) and "info" in str(excinfo.value)
    with pytest.raises(FileNotFoundError):
        open_info(tmp_path)
    assert isinstance(excinfo.value, PrecomputedError)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"", b"[1, 2"])
def test_invalid_json(tmp_path, content):
    (tmp_path / "info").write_bytes(content)
    with pytest.raises(InfoError, match="JSON") as excinfo:
        xr.open_dataset(tmp_path, engine="precomputed")
    assert str(tmp_path) in str(excinfo.value)


def test_invalid_info_names_url(tmp_path):
    (tmp_path / "info").write_text(json.dumps({"type": "image", "data_type": "uint8"}))
    with pytest.raises(InfoError, match="num_channels") as excinfo:
        xr.open_dataset(tmp_path, engine="precomputed")
    assert str(tmp_path) in str(excinfo.value)


def test_unknown_scale(tmp_path):
    volume(tmp_path)
    for selector in ("8_8_40", 3, (8, 8, 40)):
        with pytest.raises(ScaleNotFoundError) as excinfo:
            xr.open_dataset(tmp_path, engine="precomputed", scale=selector)
        assert KEY in str(excinfo.value) and str(tmp_path) in str(excinfo.value)


# -- shards --------------------------------------------------------------------------


def shard_path(path, name="0.shard"):
    return path / KEY / name


def test_truncated_shard_index(tmp_path):
    volume(tmp_path, sharded=True)
    f = shard_path(tmp_path)
    f.write_bytes(f.read_bytes()[:20])  # the index is 32 bytes
    # A partial read fetches part of the index; a whole-shard read fetches the file.
    for sel in [(slice(0, 2), slice(0, 2), slice(0, 1)), (slice(0, 8), slice(0, 8), slice(0, 6))]:
        with pytest.raises(CorruptDataError) as excinfo:
            open_image(tmp_path)[sel].values
        check_message(excinfo, tmp_path, "0.shard")


def test_empty_shard_file(tmp_path):
    volume(tmp_path, sharded=True)
    shard_path(tmp_path).write_bytes(b"")
    with pytest.raises(CorruptDataError) as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0.shard")


def _index(f, minishard):
    return struct.unpack_from("<QQ", f.read_bytes(), 16 * minishard)


def test_truncated_minishard_index(tmp_path):
    volume(tmp_path, sharded=True)
    f = shard_path(tmp_path)
    data = f.read_bytes()
    start, end = _index(f, 1)
    assert 32 + end == len(data)  # tensorstore writes minishard 1's index last
    f.write_bytes(data[: 32 + end - 10])
    # Chunk (0, 0, 1) is in minishard 1 (z bit) of shard 0.
    with pytest.raises(CorruptDataError) as excinfo:
        open_image(tmp_path)[0:2, 0:2, 3:4].values
    check_message(excinfo, tmp_path, "0.shard")
    assert "minishard index" in str(excinfo.value)
    with pytest.raises(CorruptDataError) as excinfo:  # whole-shard path
        open_image(tmp_path)[0:8, 0:8, 0:6].values
    check_message(excinfo, tmp_path, "0.shard")


def test_corrupt_minishard_index_length(tmp_path):
    volume(tmp_path, sharded=True)
    f = shard_path(tmp_path)
    data = bytearray(f.read_bytes())
    start, end = _index(f, 0)
    struct.pack_into("<QQ", data, 0, start, end - 1)
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="multiple of 24") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0.shard")


def test_gzip_minishard_index_corrupt(tmp_path):
    volume(tmp_path, sharded=True, mi_enc="gzip")
    f = shard_path(tmp_path)
    data = bytearray(f.read_bytes())
    start, end = _index(f, 0)
    data[32 + start + 12 : 32 + start + 20] = b"\xde\xad\xbe\xef" * 2  # inside the deflate data
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0.shard")


def test_chunk_data_beyond_shard_end(tmp_path):
    volume(tmp_path, sharded=True)
    f = shard_path(tmp_path)
    data = bytearray(f.read_bytes())
    start, end = _index(f, 0)
    n = (end - start) // 24
    # Row 2 of the minishard index holds the chunk sizes: make the first one huge.
    struct.pack_into("<Q", data, 32 + start + 16 * n, 10**6)
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="beyond") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0.shard")
    with pytest.raises(CorruptDataError, match="beyond") as excinfo:  # whole-shard path
        open_image(tmp_path)[0:8, 0:8, 0:6].values
    check_message(excinfo, tmp_path, "0.shard")


def test_sharded_chunk_wrong_size(tmp_path):
    volume(tmp_path, sharded=True)
    spec = ShardingSpec.from_json(sharding())
    shard_path(tmp_path).write_bytes(encode_shard({0: b"\x01" * 47}, spec))  # needs 48
    with pytest.raises(CorruptDataError, match="47 bytes") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0.shard")


def test_sharded_gzip_bomb(tmp_path):
    volume(tmp_path, sharded=True, data_enc="gzip")
    spec = ShardingSpec.from_json(sharding(data_enc="gzip"))
    shard_path(tmp_path).write_bytes(encode_shard({0: bytes(10**6)}, spec))
    with pytest.raises(CorruptDataError, match="expands beyond") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0.shard")


# -- unsharded chunks ------------------------------------------------------------------


def chunk_file(path, name="0-4_0-4_0-3"):
    f = path / KEY / name
    assert f.exists()
    return f


@pytest.mark.parametrize("size", [0, 47, 49, 4800])
def test_raw_chunk_wrong_size(tmp_path, size):
    volume(tmp_path)
    chunk_file(tmp_path).write_bytes(b"\x07" * size)
    with pytest.raises(CorruptDataError, match=f"{size} bytes") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0-4_0-4_0-3")


def test_edge_chunk_padded_to_full_size(ts, tmp_path):
    """Edge chunks are clipped; a full-size edge chunk is an error (docs/format.md §2.1)."""
    rng = np.random.default_rng(1)
    write_tensorstore_volume(
        tmp_path, rng.integers(1, 9, (6, 4, 3, 1)).astype(np.uint8), chunk_size=(4, 4, 3)
    )
    chunk_file(tmp_path, "4-6_0-4_0-3").write_bytes(bytes(48))
    with pytest.raises(CorruptDataError, match="48 bytes") as excinfo:
        open_image(tmp_path)[5, 0, 0].values
    check_message(excinfo, tmp_path, "4-6_0-4_0-3")


@pytest.mark.parametrize(
    "encoding, dtype, nc, block",
    [
        ("jpeg", "uint8", 1, None),
        ("jpeg", "uint8", 3, None),
        ("png", "uint16", 2, None),
        ("compressed_segmentation", "uint64", 1, (2, 2, 2)),
    ],
)
@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_encoded_chunk(tmp_path, encoding, dtype, nc, block, damage):
    volume(tmp_path, encoding, dtype=dtype, nc=nc, block_size=block)
    f = chunk_file(tmp_path)
    good = f.read_bytes()
    if damage == "garbage":
        bad = bytes(np.random.default_rng(2).integers(0, 256, len(good), dtype=np.uint8))
    elif damage == "truncate":
        bad = good[: len(good) * 2 // 3]
    else:
        bad = b""
    f.write_bytes(bad)
    with pytest.raises(CorruptDataError) as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0-4_0-4_0-3")


def test_unsharded_gzip_bomb(tmp_path):
    volume(tmp_path)
    chunk_file(tmp_path).write_bytes(gzip.compress(bytes(10**6)))
    with pytest.raises(CorruptDataError, match="expands beyond") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0-4_0-4_0-3")


def test_gzip_encoded_chunk_is_read(tmp_path):
    """Chunks stored gzip-compressed (cloud-files Content-Encoding) decode as usual."""
    data = volume(tmp_path)
    f = chunk_file(tmp_path)
    f.write_bytes(gzip.compress(f.read_bytes()))
    np.testing.assert_array_equal(open_image(tmp_path)[0:4, 0:4, 0:3].values, data[:4, :4, :3])


def test_cloudfiles_gz_suffix_is_read(tmp_path):
    """cloud-files stores compressed local chunks as ``<name>.gz`` (docs/format.md §2.4)."""
    data = volume(tmp_path)
    f = chunk_file(tmp_path)
    f.with_name(f.name + ".gz").write_bytes(gzip.compress(f.read_bytes()))
    f.unlink()
    np.testing.assert_array_equal(open_image(tmp_path)[0:4, 0:4, 0:3].values, data[:4, :4, :3])
    # A corrupt .gz file is an error naming it, not a missing chunk.
    f.with_name(f.name + ".gz").write_bytes(b"\x1f\x8b\x08 broken")
    with pytest.raises(CorruptDataError) as excinfo:
        open_image(tmp_path)[0:4, 0:4, 0:3].values
    check_message(excinfo, tmp_path, "0-4_0-4_0-3.gz")


@pytest.mark.parametrize("suffix", [".gz", ".br"])
def test_cloudfiles_suffix_bomb(tmp_path, suffix):
    """A suffixed chunk that inflates far past the chunk's size is refused, not expanded."""
    import brotli

    volume(tmp_path)
    f = chunk_file(tmp_path)
    payload = bytes(10**7)
    packed = gzip.compress(payload) if suffix == ".gz" else brotli.compress(payload)
    f.with_name(f.name + suffix).write_bytes(packed)
    f.unlink()
    with pytest.raises(CorruptDataError, match="expands beyond") as excinfo:
        open_image(tmp_path)[0:2, 0:2, 0:1].values
    check_message(excinfo, tmp_path, "0-4_0-4_0-3" + suffix)


# -- missing chunks -------------------------------------------------------------------


def test_missing_unsharded_chunk(tmp_path):
    data = volume(tmp_path)
    chunk_file(tmp_path, "4-8_0-4_0-3").unlink()
    np.testing.assert_array_equal(open_image(tmp_path)[4:8, 0:4, 0:3].values, 0)
    np.testing.assert_array_equal(open_image(tmp_path)[0:4, 0:4, 0:3].values, data[:4, :4, :3])
    strict = open_image(tmp_path, fill_missing=False)
    np.testing.assert_array_equal(strict[0:4, 0:4, 0:3].values, data[:4, :4, :3])
    with pytest.raises(ChunkNotFoundError) as excinfo:
        strict[5, 1, 1].values
    check_message(excinfo, tmp_path, "4-8_0-4_0-3")
    assert isinstance(excinfo.value, FileNotFoundError)
    with pytest.raises(ChunkNotFoundError):  # through dask too
        open_image(tmp_path, fill_missing=False, chunks={}).values


@pytest.mark.parametrize(
    "sel", [(slice(0, 2), slice(0, 2), slice(0, 1)), (slice(0, 8), slice(0, 8), slice(0, 6))]
)
def test_missing_shard(tmp_path, sel):
    volume(tmp_path, sharded=True)
    shard_path(tmp_path, "1.shard").unlink()  # x in [8, 16)
    shifted = (slice(sel[0].start + 8, sel[0].stop + 8), *sel[1:])
    np.testing.assert_array_equal(open_image(tmp_path)[shifted].values, 0)
    with pytest.raises(ChunkNotFoundError) as excinfo:
        open_image(tmp_path, fill_missing=False)[shifted].values
    check_message(excinfo, tmp_path, "1.shard")
    assert isinstance(excinfo.value, FileNotFoundError)


def test_missing_chunk_in_existing_shard(tmp_path):
    data = volume(tmp_path, sharded=True)
    data[0:4, 4:8, 0:3] = 0  # chunk (0, 1, 0): tensorstore drops zero chunks
    write_tensorstore_volume(tmp_path, data, chunk_size=(4, 4, 3), sharding=sharding())
    chunk_id = int(morton_encode(np.array([[0, 1, 0]]), (4, 4, 2))[0])
    np.testing.assert_array_equal(open_image(tmp_path)[0:8, 0:8, 0:3].values, data[:8, :8, :3])
    with pytest.raises(ChunkNotFoundError) as excinfo:
        open_image(tmp_path, fill_missing=False)[0:2, 4:6, 0:1].values
    check_message(excinfo, tmp_path, f"0.shard chunk {chunk_id}")
    # Chunks next to it are there.
    strict = open_image(tmp_path, fill_missing=False)
    np.testing.assert_array_equal(strict[0:2, 0:2, 0:1].values, data[0:2, 0:2, 0:1])
