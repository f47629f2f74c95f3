"""``xp.downsample`` against a brute-force NumPy reference, and multiscale writes.

The reference bins voxels by *absolute* voxel coordinate: output voxel ``i`` along an axis
covers input voxels ``[f * i, f * (i + 1))`` (absolute), clipped to the volume, so
``voxel_offset' = floor(offset / f)``.  ``mean`` averages the voxels a bin holds (rounded
half-to-even for integers), ``mode`` takes the most frequent of them (ties: smallest value).
"""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.errors import WriteError

from . import helpers, peers
from .helpers import DIMS


def make_array(data, offset=(0, 0, 0), **kwargs):
    """As the reader makes it: with the ``channel`` coordinate."""
    return helpers.make_array(data, offset, channel_coord=True, **kwargs)


def reference(data: np.ndarray, offset, factors, method: str) -> tuple[np.ndarray, tuple]:
    """Brute force: loop over output voxels, gather the input voxels of each bin."""
    size = data.shape[:3]
    new_off = tuple(offset[d] // factors[d] for d in range(3))
    new_end = tuple(-(-(offset[d] + size[d]) // factors[d]) for d in range(3))
    new_size = tuple(new_end[d] - new_off[d] for d in range(3))
    out = np.zeros((*new_size, data.shape[3]), dtype=data.dtype)
    for idx in itertools.product(*(range(n) for n in new_size)):
        sl = []
        for d in range(3):
            lo = max((new_off[d] + idx[d]) * factors[d], offset[d]) - offset[d]
            hi = min((new_off[d] + idx[d] + 1) * factors[d], offset[d] + size[d]) - offset[d]
            assert hi > lo
            sl.append(slice(lo, hi))
        for c in range(data.shape[3]):
            vals = data[(*sl, c)].ravel()
            if method == "mean":
                m = vals.astype(np.float64).mean()
                out[(*idx, c)] = np.round(m) if data.dtype.kind in "iu" else m
            elif method == "mode":
                u, counts = np.unique(vals, return_counts=True)
                out[(*idx, c)] = u[np.argmax(counts)]  # first max = smallest value
            elif method == "min":
                out[(*idx, c)] = vals.min()
            elif method == "max":
                out[(*idx, c)] = vals.max()
            else:
                raise ValueError(method)
    return out, new_off


def labels(shape, n_labels, seed, dtype="uint32"):
    rng = np.random.default_rng(seed)
    palette = rng.choice(2**31, size=n_labels, replace=False).astype(dtype)
    return palette[rng.integers(0, n_labels, size=shape)]


GEOMETRIES = [
    # (size, voxel offset, factors)
    ((16, 12, 4), (0, 0, 0), (2, 2, 1)),
    ((17, 13, 5), (0, 0, 0), (2, 2, 1)),  # odd sizes: partial bins at the end
    ((17, 13, 5), (-5, 3, -1), (2, 2, 2)),  # negative/odd offsets: partial bins at the start
    ((11, 10, 7), (7, -7, 2), (3, 3, 1)),  # factor 3: bins with 1 or 2 real voxels
    ((9, 8, 6), (-1, 1, -3), (4, 1, 3)),
]


@pytest.mark.parametrize("method", ["mean", "mode", "min", "max"])
@pytest.mark.parametrize("size,offset,factors", GEOMETRIES)
def test_downsample_matches_bruteforce(size, offset, factors, method):
    if method == "mean":
        data = np.random.default_rng(1).integers(0, 256, (*size, 2)).astype(np.uint8)
    else:
        # few labels so that ties and majorities both occur; partial bins are where edge
        # padding would bias the vote
        data = labels((*size, 1), 3, seed=2)
    arr = make_array(data, offset, name="image" if method == "mean" else "segmentation")
    got = xp.downsample(arr, factors, method=method)
    want, new_off = reference(data, offset, factors, method)
    assert got.dims == DIMS
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got.values, want)
    res = (4 * factors[0], 4 * factors[1], 40 * factors[2])
    assert got.attrs["voxel_offset"] == list(new_off)
    assert got.attrs["size"] == list(want.shape[:3])
    assert got.attrs["resolution"] == list(res)
    for d, dim in enumerate(DIMS[:3]):
        # reader convention: nm at voxel centres
        expected = (new_off[d] + np.arange(want.shape[d]) + 0.5) * res[d]
        np.testing.assert_allclose(got[dim].values, expected, rtol=0, atol=1e-9)


def test_mode_partial_bin_is_not_biased_by_padding():
    # bins of 3 along x at offset 0 over 5 voxels: [1 5 5] and [2 9]; the second bin has a
    # tie between 2 and 9 -> the smaller value, not the edge voxel counted twice
    res = {"resolution": [4, 4, 40]}  # y and z have a single voxel
    data = np.array([1, 5, 5, 2, 9], dtype=np.uint32).reshape(5, 1, 1, 1)
    got = xp.downsample(make_array(data, name="segmentation", attrs=res), (3, 1, 1))
    assert got.values.ravel().tolist() == [5, 2]
    # and at the start: offset 2 with factor 3 -> first bin holds voxel 0 only, second [1 2 3]
    data = np.array([7, 3, 4, 4, 3], dtype=np.uint32).reshape(5, 1, 1, 1)
    arr = make_array(data, offset=(2, 0, 0), name="segmentation", attrs=res)
    got = xp.downsample(arr, (3, 1, 1))
    assert got.attrs["voxel_offset"] == [0, 0, 0]
    assert got.values.ravel().tolist() == [7, 4, 3]


def test_mean_float32_and_dask_chunks_misaligned_with_bins():
    rng = np.random.default_rng(3)
    size, offset, factors = (23, 14, 9), (-3, 1, 0), (2, 2, 2)
    data = rng.normal(size=(*size, 1)).astype(np.float32)
    lazy = da.from_array(data, chunks=(5, 7, 4, 1))  # odd chunks: bins straddle them
    got = xp.downsample(make_array(lazy, offset), factors)
    assert isinstance(got.data, da.Array)
    want, _ = reference(data, offset, factors, "mean")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.values, want, rtol=1e-6, atol=1e-6)


def test_integer_mean_rounds_and_does_not_overflow():
    data = np.full((4, 4, 1, 1), 255, np.uint8)
    data[0, 0] = 254  # bin (0,0): mean 254.75 -> 255; sums exceed the dtype range
    data[2:, 2:] = [[[[1]], [[2]]], [[[2]], [[2]]]]  # mean 1.75 -> 2
    res = {"resolution": [4, 4, 40]}
    got = xp.downsample(make_array(data, attrs=res), (2, 2, 1)).values[..., 0, 0]
    assert got.tolist() == [[255, 255], [255, 2]]
    signed = np.array([-128, -127, 127, 126], np.int8).reshape(4, 1, 1, 1)
    got = xp.downsample(make_array(signed, attrs=res), (2, 1, 1)).values.ravel()
    assert got.tolist() == [-128, 126]  # -127.5 and 126.5 round half to even


@pytest.mark.parametrize(
    "name,attrs,dtype,expected",
    [
        ("segmentation", {}, "uint64", "mode"),
        ("image", {}, "uint8", "mean"),
        ("data", {"type": "segmentation"}, "uint32", "mode"),
        ("data", {"type": "image"}, "uint16", "mean"),
    ],
)
def test_default_method_by_type(name, attrs, dtype, expected):
    # one 2x2x1 bin holding 10, 10, 10, 30: mean 15, mode 10
    data = np.array([10, 10, 10, 30], dtype=dtype).reshape(2, 2, 1, 1)
    attrs = {**attrs, "resolution": [4, 4, 40]}
    got = xp.downsample(make_array(data, name=name, attrs=attrs), (2, 2, 1))
    assert int(got.values.ravel()[0]) == {"mean": 15, "mode": 10}[expected]


def test_dataset_without_channel_and_accessor():
    data = labels((9, 6, 3), 4, seed=5, dtype="uint64")
    arr = make_array(data[..., None], offset=(1, 0, 0), name="segmentation")
    ds = arr.isel(channel=0, drop=True).to_dataset().assign_attrs(type="segmentation")
    small = ds.precomputed.downsample((2, 2, 1))
    assert isinstance(small, xr.Dataset)
    assert small.segmentation.dims == ("x", "y", "z")
    want, new_off = reference(data[..., None], (1, 0, 0), (2, 2, 1), "mode")
    np.testing.assert_array_equal(small.segmentation.values, want[..., 0])
    assert small.attrs["voxel_offset"] == list(new_off) == [0, 0, 0]
    assert small.attrs["scale_key"] == "8_8_40"


def test_bad_factors_and_method():
    arr = make_array(np.zeros((4, 4, 4, 1), np.uint8))
    with pytest.raises(WriteError, match="factors"):
        xp.downsample(arr, (2, 0, 1))
    with pytest.raises(WriteError, match="factors"):
        xp.downsample(arr, (2, 2))
    with pytest.raises(WriteError, match="method"):
        xp.downsample(arr, (2, 2, 1), method="median")


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
def test_datatree_of_downsampled_scales_writes_multiscale(ts, tmp_path, sharded):
    size, offset = (45, 38, 10), (-7, 5, 3)
    data = labels((*size, 1), 5, seed=7)
    s0 = make_array(da.from_array(data, chunks=(16, 16, 5, 1)), offset, name="segmentation")
    s0 = s0.to_dataset().assign_attrs(type="segmentation")
    s1 = xp.downsample(s0, (2, 2, 1))
    s2 = xp.downsample(s1, (2, 2, 1))
    tree = xr.DataTree.from_dict({"4_4_40": s0, "8_8_40": s1, "16_16_40": s2})
    url = str(tmp_path / "pyr")
    kwargs = dict(
        chunk_size=(8, 8, 4),
        encoding="compressed_segmentation",
        sharding="auto" if sharded else None,
        shard_bytes=8 * 8 * 4 * 4 * 8,  # 8 chunks per shard
    )
    tree.precomputed.to_precomputed(url, **kwargs)

    expected = [np.asarray(s.segmentation.values) for s in (s0, s1, s2)]
    want1, off1 = reference(data, offset, (2, 2, 1), "mode")
    np.testing.assert_array_equal(expected[1], want1)  # the pyramid itself is right
    offsets = [offset, off1, tuple(o // 2 for o in off1[:2]) + (off1[2],)]
    info = xp.open_info(url)[1]
    assert [s.key for s in info.scales] == ["4_4_40", "8_8_40", "16_16_40"]
    assert info.type == "segmentation"
    for i, scale in enumerate(info.scales):
        assert tuple(scale.resolution) == (4 * 2**i, 4 * 2**i, 40)
        assert tuple(scale.voxel_offset) == tuple(offsets[i])
        assert tuple(scale.size) == expected[i].shape[:3]
        assert (scale.sharding is not None) == sharded
        t = ts.open(peers.tensorstore_spec(url, i), open=True, read=True).result()
        assert list(t.domain.inclusive_min) == [*offsets[i], 0]
        assert list(t.domain.shape) == [*expected[i].shape]
        np.testing.assert_array_equal(t.read().result(), expected[i])
        ours = xr.open_dataset(url, engine="precomputed", scale=i)
        np.testing.assert_array_equal(ours.segmentation.values, expected[i])
        xr.testing.assert_allclose(ours.x, s0.x if i == 0 else (s1, s2)[i - 1].x)
