"""``xp.to_precomputed``: every encoding and shard encoding stored as the format says,
checked with an independent shard parser; sharding layouts the writer refuses; jpeg
quality and png level."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import xarray_precomputed as xp

from . import peers
from .helpers import GZIP_MAGIC, make_array, sharding_dict
from .writer_helpers import cell_slices, chunk_cells, ours, parse_shard, read_info

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
