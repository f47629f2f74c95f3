"""Volumes written by ``xp.to_precomputed`` and read back by the reference implementations.

tensorstore reads every encoding it supports (raw, jpeg, png, compressed_segmentation),
sharded and unsharded, odd sizes, negative offsets, several channels; cloud-volume reads raw,
compressed_segmentation, compresso, 1-channel jpeg and (if its codec is installed) 1-channel
png; our reader reads everything.  Lossless encodings must come back exactly; for jpeg our
reader must equal tensorstore's decode exactly and the error against the input is bounded.
"""

from __future__ import annotations

import os
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp

from . import peers
from .helpers import DIMS

RES = peers.RESOLUTION
# sharding layouts written as given here; the others (murmurhash, aliasing) go through the
# two-stage graph, tested against the peers in test_scattered_shards.py
EXPLICIT_LAYOUTS = ("box_raw", "box_gzip", "box_gzip_raw", "box_raw_gzip", "mini0", "one")


def _sharding(kind, size, chunk):
    if kind in EXPLICIT_LAYOUTS:
        return peers.sharding_layout(kind, size, chunk)
    return "auto"


def _cases(base, writer):
    out = []
    for i, (enc, dt, nc, size, chunk, off, block, kind) in enumerate(base):
        for sharded in (False, True):
            sh = _sharding(kind, size, chunk) if sharded else None
            case = peers.Case(
                writer, enc, dt, nc, size, chunk, off, sh if isinstance(sh, dict) else None, block
            )
            out.append(pytest.param(case, sh, (i + sharded) % 2 == 1, id=_id(case, sh)))
    return out


def _id(case, sh):
    label = "auto" if sh == "auto" else peers.sharding_label(sh)
    return f"{case.encoding}-{case.dtype}-c{case.num_channels}-o{'_'.join(map(str, case.voxel_offset))}-{label}"


def write(case: peers.Case, sharding, lazy: bool, root: str, **kwargs) -> np.ndarray:
    """Write ``make_data(case)`` with our writer; returns the input array."""
    data = peers.make_data(case)
    values = da.from_array(data, chunks=(13, 11, 5, case.num_channels)) if lazy else data
    coords = {
        dim: (case.voxel_offset[d] + np.arange(case.size[d]) + 0.5) * RES[d]
        for d, dim in enumerate(DIMS[:3])
    }
    name = "segmentation" if case.is_label else "image"
    arr = xr.DataArray(values, dims=DIMS, coords=coords, name=name)
    if case.num_channels == 1 and lazy:
        arr = arr.isel(channel=0)  # also without a channel dim
    xp.to_precomputed(
        arr,
        root,
        chunk_size=case.chunk_size,
        encoding=case.encoding,
        compressed_segmentation_block_size=case.block_size,
        sharding=sharding,
        shard_bytes=4 * np.prod(case.chunk_size) * data.itemsize * case.num_channels,
        **kwargs,
    )
    info = xp.open_info(root)[1]
    scale = info.scales[0]
    assert (scale.sharding is None) == (sharding is None)
    assert tuple(scale.voxel_offset) == case.voxel_offset and tuple(scale.size) == case.size
    return data


def ours(root, **kw) -> np.ndarray:
    ds = xr.open_dataset(root, engine="precomputed", **kw)
    return ds[list(ds.data_vars)[0]].transpose(*DIMS).values


# -- tensorstore ------------------------------------------------------------------------------

TS_CASES = _cases(peers._TS_BASE, "xp")


@pytest.mark.parametrize("case,sharding,lazy", TS_CASES)
def test_tensorstore_reads_what_we_write(ts, tmp_path, case, sharding, lazy):

    root = str(tmp_path / "v")
    kwargs = {"jpeg_quality": 75} if case.encoding == "jpeg" else {}
    data = write(case, sharding, lazy, root, **kwargs)
    t = ts.open(peers.tensorstore_spec(root, 0), open=True, read=True).result()
    assert list(t.domain.inclusive_min) == [*case.voxel_offset, 0]
    assert list(t.domain.shape) == [*case.size, case.num_channels]
    assert t.dtype.numpy_dtype == data.dtype
    theirs = np.asarray(t.read(order="F").result())
    mine = ours(root, chunks={} if lazy else None)
    if case.encoding == "jpeg":
        np.testing.assert_array_equal(mine, theirs)  # same bytes -> same decode
        err = np.abs(theirs.astype(np.int16) - data.astype(np.int16)).mean()
        # as close to the input as tensorstore's own jpeg writer at the same quality (75)
        ts_root = str(tmp_path / "ts")
        peers._tensorstore_create(
            ts_root,
            data_type="uint8",
            num_channels=case.num_channels,
            layer_type="image",
            resolution=RES,
            size=case.size,
            chunk_size=case.chunk_size,
            voxel_offset=case.voxel_offset,
            encoding="jpeg",
        ).write(data).result()
        ts_err = np.abs(peers.tensorstore_read(ts_root).astype(np.int16) - data).mean()
        assert err <= 1.05 * ts_err + 0.05, (err, ts_err)
        assert err < (4.5 if case.num_channels == 1 else 8.0)
        assert not np.array_equal(theirs, data)  # it really is lossy
    else:
        np.testing.assert_array_equal(theirs, data)
        np.testing.assert_array_equal(mine, data)
    if sharding is not None:
        names = os.listdir(os.path.join(root, "4_4_40"))
        assert names and all(n.endswith(".shard") for n in names)


def test_tensorstore_reads_multiscale_written_in_one_call(ts, tmp_path):

    case = peers.Case("xp", "raw", "uint16", 2, (37, 29, 11), (8, 8, 4), (-5, 3, -2), None)
    data = peers.make_data(case)
    coords = {
        d: (o + np.arange(n) + 0.5) * r
        for d, o, n, r in zip("xyz", case.voxel_offset, case.size, RES)
    }
    s0 = xr.Dataset({"image": (DIMS, data)}, coords=coords)
    s1 = xp.downsample(s0, (2, 2, 1))
    root = str(tmp_path / "v")
    xr.DataTree.from_dict({"a": s0, "b": s1}).precomputed.to_precomputed(
        root, chunk_size=(8, 8, 4), shard_bytes=8 * 8 * 4 * 4 * 8
    )
    for i, s in enumerate((s0, s1)):
        t = ts.open(peers.tensorstore_spec(root, i), open=True, read=True).result()
        assert list(t.domain.inclusive_min) == [*s.attrs.get("voxel_offset", case.voxel_offset), 0]
        np.testing.assert_array_equal(t.read().result(), s.image.values)


# -- cloud-volume -----------------------------------------------------------------------------

_CV_BASE = [
    ("raw", "uint8", 1, peers.SIZE_A, (16, 16, 8), (-5, 3, 0), None, "box_gzip"),
    ("raw", "uint16", 2, peers.SIZE_B, (8, 8, 8), (0, 0, 0), None, "box_raw"),
    ("raw", "uint64", 1, peers.SIZE_A, (32, 16, 4), (-7, -3, -1), None, "mini0"),
    ("raw", "float32", 1, peers.SIZE_C, (8, 8, 8), (2, 0, -4), None, "auto"),
    (
        "compressed_segmentation",
        "uint32",
        1,
        peers.SIZE_A,
        (16, 16, 8),
        (0, 0, 0),
        (8, 8, 8),
        "box_raw",
    ),
    (
        "compressed_segmentation",
        "uint64",
        1,
        peers.SIZE_B,
        (8, 8, 8),
        (-5, -5, 0),
        (3, 5, 2),
        "mini0",
    ),
    ("compresso", "uint8", 1, peers.SIZE_A, (16, 16, 8), (0, 0, 0), None, "box_gzip_raw"),
    ("compresso", "uint16", 1, peers.SIZE_C, (8, 8, 8), (-3, 0, 0), None, "auto"),
    ("compresso", "uint32", 1, peers.SIZE_A, (32, 16, 4), (0, 0, 0), None, "box_raw_gzip"),
    ("compresso", "uint64", 1, peers.SIZE_B, (16, 16, 8), (-8, 0, -8), None, "box_gzip"),
    ("jpeg", "uint8", 1, peers.SIZE_B, (16, 16, 8), (0, 0, 0), None, "box_raw"),
    ("png", "uint8", 1, peers.SIZE_A, (16, 16, 8), (0, -4, 0), None, "box_gzip"),
]
CV_CASES = _cases(_CV_BASE, "xp")


def _cv_read(root) -> np.ndarray:
    CloudVolume = peers.cloudvolume().CloudVolume
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = CloudVolume("file://" + root, fill_missing=True, progress=False, parallel=1)
        return np.asarray(cv[cv.bounds])


@pytest.mark.parametrize("case,sharding,lazy", CV_CASES)
def test_cloudvolume_reads_what_we_write(tmp_path, case, sharding, lazy):
    if not peers.cloudvolume_can_write(case.encoding):
        pytest.skip(f"cloud-volume's {case.encoding} codec is not installed")
    root = str(tmp_path / "v")
    data = write(case, sharding, lazy, root)
    theirs = _cv_read(root)
    assert theirs.shape == data.shape
    mine = ours(root)
    if case.encoding == "jpeg":
        err = np.abs(theirs.astype(np.int16) - data.astype(np.int16))
        assert err.mean() < 5.0 and err.max() < 80, (err.mean(), err.max())
        # a different jpeg decoder may round differently, but only slightly
        assert np.abs(theirs.astype(np.int16) - mine.astype(np.int16)).max() <= 3
    else:
        np.testing.assert_array_equal(theirs, data)
        np.testing.assert_array_equal(mine, data)
