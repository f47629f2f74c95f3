"""Self-check of tests/peers.py: every peer-written volume reads back as expected."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil

import numpy as np
import pytest

from . import peers

ALL_CASES = peers.cases_tensorstore() + peers.cases_cloudvolume()


def test_case_ids_unique():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))


def test_matrix_coverage():
    ts_cases = peers.cases_tensorstore()
    assert {c.dtype for c in ts_cases if c.encoding == "raw"} == {
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "float32",
    }
    for enc in peers.TS_ENCODINGS:
        shardings = {c.sharding is None for c in ts_cases if c.encoding == enc}
        assert shardings == {True, False}, enc
    hashes = {c.sharding["hash"] for c in ts_cases if c.sharding}
    assert hashes == {"identity", "murmurhash3_x86_128"}
    assert any(c.sharding and c.sharding["minishard_bits"] == 0 for c in ts_cases)
    assert any(c.sharding and c.sharding["shard_bits"] == 0 for c in ts_cases)
    assert any(
        c.sharding and not peers.shard_box_chunks(c.sharding, c.grid_shape) for c in ts_cases
    )
    cv_cases = peers.cases_cloudvolume()
    assert {c.compress for c in cv_cases if c.sharding is None} == {True, False}
    assert all(c.num_channels == 1 for c in cv_cases if c.encoding != "raw")
    assert all(not (c.compress and c.sharding) for c in cv_cases)


def _gunzipped_copy(src: str, dst: str) -> str:
    """Copy a cloud-volume volume, replacing ``<chunk>.gz`` files by plain ``<chunk>`` files
    (what a gzip Content-Encoding aware HTTP client would see)."""
    shutil.copytree(src, dst)
    for dirpath, _, files in os.walk(dst):
        for f in files:
            if f.endswith(".gz"):
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    raw = gzip.decompress(fh.read())
                with open(p[:-3], "wb") as fh:
                    fh.write(raw)
                os.remove(p)
    return dst


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_peer_volume(case, tmp_path):
    data = peers.make_data(case)
    root = str(tmp_path / "vol")
    got = peers.write_volume(case, root, data)

    assert got.shape == (*case.size, case.num_channels)
    assert got.dtype == np.dtype(case.dtype)
    if case.is_lossless:
        np.testing.assert_array_equal(got, data)
    else:
        # lossy, but recognisably the same image; exact zeros stay zero
        err = np.abs(got.astype(np.int32) - data.astype(np.int32))
        assert err.mean() < 12, err.mean()

    # info as written by the peer
    with open(os.path.join(root, "info")) as f:
        info = json.load(f)
    assert info["data_type"] == case.dtype
    assert info["num_channels"] == case.num_channels
    (scale,) = info["scales"]
    assert scale["key"] == peers.SCALE_KEY
    assert scale["encoding"] == case.encoding
    assert scale["size"] == list(case.size)
    assert scale["voxel_offset"] == list(case.voxel_offset)
    assert scale["chunk_sizes"] == [list(case.chunk_size)]
    assert scale.get("sharding") == case.sharding
    if case.encoding == "compressed_segmentation":
        assert scale["compressed_segmentation_block_size"] == list(case.block_size)
    else:
        assert "compressed_segmentation_block_size" not in scale

    # files on disk: exactly one per non-zero chunk / non-empty shard (zero chunks missing)
    files = set(os.listdir(os.path.join(root, peers.SCALE_KEY)))
    assert files == peers.expected_files(case, data)
    n_cells = int(np.prod(case.grid_shape))
    if case.sharding is None:
        assert len(files) < n_cells, "expected some missing (all-zero) chunks"

    # cross-check with tensorstore where it can decode the encoding
    if case.encoding in peers.TS_ENCODINGS:
        ts_root = root
        if case.compress:
            # tensorstore does not know the .gz suffix convention: sees only missing chunks
            assert not np.any(peers.tensorstore_read(root))
            ts_root = _gunzipped_copy(root, str(tmp_path / "plain"))
        np.testing.assert_array_equal(peers.tensorstore_read(ts_root), got)


def test_make_data_properties():
    cases = {c.id: c for c in ALL_CASES}
    for case in cases.values():
        a = peers.make_data(case)
        np.testing.assert_array_equal(a, peers.make_data(case))
        assert a.shape == (*case.size, case.num_channels) and a.dtype == np.dtype(case.dtype)
        assert np.any(a)
        zero = peers.zero_cells(case)
        assert zero
        for g in zero:
            sl = tuple(slice(i * c, (i + 1) * c) for i, c in zip(g, case.chunk_size))
            assert not np.any(a[sl])
        if case.dtype == "uint64":
            assert a.max() > 2**32
        if case.dtype in ("int8", "int16", "int32"):
            assert a.min() < 0
        if case.dtype == "float32":
            assert a.min() < 0 and np.any(a != np.round(a))
        if case.is_label:
            counts = []
            for bx, by, bz in itertools.product(*(range(0, s, 8) for s in case.size)):
                for c in range(case.num_channels):
                    counts.append(len(np.unique(a[bx : bx + 8, by : by + 8, bz : bz + 8, c])))
            assert max(counts) <= 18
            assert min(counts) == 1


@pytest.mark.parametrize("offsets", [False, True], ids=["default-offset", "offsets"])
def test_multiscale(tmp_path, offsets):
    root = str(tmp_path / "ms")
    if offsets:
        arrays = peers.write_multiscale_tensorstore_offsets(root)
        expected_offsets = peers.MULTISCALE_VOXEL_OFFSETS
    else:
        arrays = peers.write_multiscale_tensorstore(root)
        expected_offsets = [(0, 0, 0)] * 3
    with open(os.path.join(root, "info")) as f:
        info = json.load(f)
    assert [s["key"] for s in info["scales"]] == list(peers.MULTISCALE_KEYS)
    assert [s["resolution"] for s in info["scales"]] == [
        list(r) for r in peers.MULTISCALE_RESOLUTIONS
    ]
    assert [s["voxel_offset"] for s in info["scales"]] == [list(o) for o in expected_offsets]
    assert len(arrays) == 3
    for i, (a, s) in enumerate(zip(arrays, info["scales"])):
        assert list(a.shape[:3]) == s["size"]
        np.testing.assert_array_equal(a, arrays[0][:: 2**i, :: 2**i])
        np.testing.assert_array_equal(peers.tensorstore_read(root, i), a)
    assert arrays[1].shape[:2] == tuple(-(-n // 2) for n in arrays[0].shape[:2])


def test_multiscale_sharded_cseg(tmp_path):
    arrays = peers.write_multiscale_tensorstore(
        str(tmp_path / "ms"),
        dtype="uint64",
        encoding="compressed_segmentation",
        block_size=(8, 8, 8),
        sharding="box_gzip",
    )
    assert [a.shape[:3] for a in arrays] == [(37, 29, 11), (19, 15, 11), (10, 8, 11)]
    assert arrays[0].max() > 2**32
