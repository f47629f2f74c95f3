"""Read every peer-written volume (tensorstore, cloud-volume) with ``engine="precomputed"``.

Each volume is written by a reference implementation (``tests/peers.py``); the expected array
is what that peer reads back, so lossy encodings (jpeg, jxl) must match the peer's decode
exactly too.  Checked per case: the whole read (values, dtype, shape, variable name),
coordinates at voxel centres in nm, attributes, random outer-indexing cutouts against NumPy,
and (for a subset) the Dask path with ``chunks={}``.  Multiscale pyramids are checked through
``open_datatree`` and the ``scale=`` selector of ``open_dataset``.
"""

from __future__ import annotations

import itertools
import zlib

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from xarray_precomputed import open_info
from xarray_precomputed.chunk_grid import chunk_group

from . import peers
from .helpers import DIMS

TS_CASES = peers.cases_tensorstore()
CV_CASES = peers.cases_cloudvolume()
ALL_CASES = TS_CASES + CV_CASES


def _dask_subset(cases: list[peers.Case]) -> list[peers.Case]:
    """Every sharded case (their Dask chunking follows the shard layout) plus one unsharded
    case per (writer, encoding, compress) combination."""
    seen = set()
    out = []
    for c in cases:
        key = (c.writer, c.encoding, c.compress)
        if c.sharding is not None or key not in seen:
            out.append(c)
            if c.sharding is None:
                seen.add(key)
    return out


DASK_CASES = _dask_subset(ALL_CASES)


def _ids(cases):
    return [c.id for c in cases]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``written(case) -> (root, expected)``: each case is written once per module."""
    base = tmp_path_factory.mktemp("peer-volumes")
    cache: dict[str, tuple[str, np.ndarray]] = {}

    def get(case: peers.Case) -> tuple[str, np.ndarray]:
        if case.id not in cache:
            root = str(base / case.id)
            expected = peers.write_volume(case, root)
            assert expected.shape == (*case.size, case.num_channels)
            assert expected.dtype == np.dtype(case.dtype)
            cache[case.id] = (root, expected)
        return cache[case.id]

    return get


def _variable(ds: xr.Dataset, case: peers.Case) -> xr.DataArray:
    assert list(ds.data_vars) == [case.layer_type]
    return ds[case.layer_type]


def _check_coords(ds: xr.Dataset | xr.DataArray, size, voxel_offset, resolution, nc) -> None:
    for d, name in enumerate(DIMS[:3]):
        want = (voxel_offset[d] + np.arange(size[d]) + 0.5) * resolution[d]
        got = ds[name].values
        assert got.shape == (size[d],), name
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=name)
    np.testing.assert_array_equal(ds["channel"].values, np.arange(nc))


def _numpy_outer(arr: np.ndarray, sel: dict[str, object]) -> np.ndarray:
    """Outer (orthogonal) indexing with NumPy, one axis at a time; ints drop their axis.
    Axes are processed last to first so dropping one does not shift the others."""
    for d in reversed(range(4)):
        s = sel.get(DIMS[d], slice(None))
        if isinstance(s, list):
            s = np.asarray(s, dtype=np.int64)
        arr = arr[(slice(None),) * d + (s,)]
    return arr


def _random_axis_selection(rng: np.random.Generator, n: int):
    kind = rng.choice(["slice", "step", "negstep", "list", "int", "full"])
    if kind == "full" or n == 1 and kind in ("slice", "step", "negstep"):
        return slice(None)
    if kind == "slice":
        a = int(rng.integers(0, n))
        b = int(rng.integers(a + 1, n + 1))
        return slice(a, b)
    if kind == "step":
        a = int(rng.integers(0, n))
        return slice(a, None, int(rng.integers(2, 6)))
    if kind == "negstep":
        b = int(rng.integers(0, n - 1))
        return slice(None, b, -int(rng.integers(1, 4)))
    if kind == "list":  # unsorted, may repeat, may use negative positions
        k = int(rng.integers(1, 6))
        return [int(v) for v in rng.integers(-n, n, size=k)]
    return int(rng.integers(-n, n))


def _random_selections(case: peers.Case, count: int = 4) -> list[dict[str, object]]:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    shape = (*case.size, case.num_channels)
    out = [
        # a box straddling chunk boundaries, every channel
        {
            d: slice(max(0, c // 2), min(n, c + c // 2 + 1))
            for d, c, n in zip(DIMS, case.chunk_size, case.size)
        },
    ]
    for _ in range(count - 1):
        out.append({d: _random_axis_selection(rng, n) for d, n in zip(DIMS, shape)})
    return out


# ---------------------------------------------------------------------------------------------
# single-scale volumes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids(ALL_CASES))
def test_read_whole_volume(case: peers.Case, written):
    root, expected = written(case)
    ds = xr.open_dataset(root, engine="precomputed")
    var = _variable(ds, case)
    assert var.dims == DIMS
    assert var.shape == (*case.size, case.num_channels)
    assert var.dtype == np.dtype(case.dtype)
    values = var.values
    assert values.dtype == np.dtype(case.dtype)
    np.testing.assert_array_equal(values, expected, strict=True)
    _check_coords(ds, case.size, case.voxel_offset, peers.RESOLUTION, case.num_channels)
    assert ds.attrs["voxel_offset"] == list(case.voxel_offset)
    assert ds.attrs["size"] == list(case.size)
    assert ds.attrs["chunk_size"] == list(case.chunk_size)
    assert ds.attrs["resolution"] == list(peers.RESOLUTION)
    assert ds.attrs["encoding"] == case.encoding
    assert ds.attrs["scale_key"] == peers.SCALE_KEY
    assert ds.attrs["num_channels"] == case.num_channels
    assert ds.attrs.get("sharding") == case.sharding


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids(ALL_CASES))
def test_random_cutouts(case: peers.Case, written):
    root, expected = written(case)
    var = _variable(xr.open_dataset(root, engine="precomputed"), case)
    for sel in _random_selections(case):
        want = _numpy_outer(expected, sel)
        got = var.isel(sel).values
        assert got.shape == want.shape, sel
        np.testing.assert_array_equal(got, want, strict=True, err_msg=str(sel))


def _shard_box_by_enumeration(case: peers.Case) -> tuple[int, int, int] | None:
    """The box (in chunks) that every shard file covers, found by computing the shard of
    every grid cell; ``None`` unless the shards tile the grid with aligned boxes.  (Unlike
    ``peers.shard_box_chunks`` this also finds boxes in aliasing layouts that still tile,
    e.g. ``shard_bits = 0``: one shard holding the whole grid.)"""
    if case.sharding is None or case.sharding["hash"] != "identity":
        return None
    grid = case.grid_shape
    shard_of = {
        cell: peers.shard_number(case.sharding, peers.compressed_morton_code(cell, grid))
        for cell in itertools.product(*(range(g) for g in grid))
    }
    first = [c for c, s in shard_of.items() if s == shard_of[(0, 0, 0)]]
    box = tuple(max(c[d] for c in first) + 1 for d in range(3))
    tiles: dict[tuple[int, ...], set[int]] = {}
    for cell, s in shard_of.items():
        tiles.setdefault(tuple(c // b for c, b in zip(cell, box)), set()).add(s)
    if any(len(v) != 1 for v in tiles.values()):
        return None
    if len({min(v) for v in tiles.values()}) != len(tiles):
        return None
    conservative = peers.shard_box_chunks(case.sharding, grid)
    assert conservative is None or conservative == box, (conservative, box)
    return box  # type: ignore[return-value]


def _expected_dask_chunks(case: peers.Case, root) -> tuple[tuple[int, ...], ...]:
    """One Dask block per shard for box-shaped shards, else groups of whole chunks."""
    box = _shard_box_by_enumeration(case)
    if box is not None:
        block = [b * c for b, c in zip(box, case.chunk_size)]
    else:
        scale = open_info(root)[1].scales[0]
        block = list(chunk_group(scale, np.dtype(case.dtype).itemsize * case.num_channels))
        assert all(b % c == 0 or b == n for b, c, n in zip(block, case.chunk_size, case.size))
    out = []
    for n, b in zip(case.size, block):
        b = min(b, n)
        out.append(tuple(min(b, n - i) for i in range(0, n, b)))
    out.append((case.num_channels,))
    return tuple(out)


@pytest.mark.parametrize("case", DASK_CASES, ids=_ids(DASK_CASES))
def test_read_with_dask(case: peers.Case, written):
    root, expected = written(case)
    ds = xr.open_dataset(root, engine="precomputed", chunks={})
    var = _variable(ds, case)
    assert isinstance(var.data, da.Array)
    assert var.chunks == _expected_dask_chunks(case, root)
    np.testing.assert_array_equal(var.values, expected, strict=True)
    sel = _random_selections(case, count=2)[-1]
    np.testing.assert_array_equal(var.isel(sel).values, _numpy_outer(expected, sel), strict=True)


# ---------------------------------------------------------------------------------------------
# multiscale pyramids
# ---------------------------------------------------------------------------------------------

MULTISCALE_VARIANTS = {
    "plain": (peers.write_multiscale_tensorstore, {}),
    "offsets": (peers.write_multiscale_tensorstore_offsets, {}),
    "offsets-cseg-sharded": (
        peers.write_multiscale_tensorstore_offsets,
        {
            "dtype": "uint64",
            "encoding": "compressed_segmentation",
            "block_size": (8, 8, 8),
            "sharding": "box_gzip",
        },
    ),
}


@pytest.fixture(scope="module")
def multiscale(tmp_path_factory):
    base = tmp_path_factory.mktemp("peer-multiscale")
    cache: dict[str, tuple[str, list[np.ndarray]]] = {}

    def get(name: str) -> tuple[str, list[np.ndarray]]:
        if name not in cache:
            fn, kwargs = MULTISCALE_VARIANTS[name]
            root = str(base / name)
            cache[name] = (root, fn(root, **kwargs))
        return cache[name]

    return get


def _multiscale_var_name(name: str) -> str:
    return "segmentation" if MULTISCALE_VARIANTS[name][1].get("dtype") == "uint64" else "image"


@pytest.mark.parametrize("name", list(MULTISCALE_VARIANTS))
def test_open_datatree(name: str, multiscale):
    root, arrays = multiscale(name)
    offsets = peers.MULTISCALE_VOXEL_OFFSETS if name.startswith("offsets") else [(0, 0, 0)] * 3
    tree = xr.open_datatree(root, engine="precomputed", chunks={})
    assert list(tree.children) == list(peers.MULTISCALE_KEYS)
    assert [s["key"] for s in tree.attrs["scales"]] == list(peers.MULTISCALE_KEYS)
    var_name = _multiscale_var_name(name)
    for i, (key, want) in enumerate(zip(peers.MULTISCALE_KEYS, arrays)):
        ds = tree[key].to_dataset()
        assert list(ds.data_vars) == [var_name]
        var = ds[var_name]
        assert isinstance(var.data, da.Array)
        assert var.shape == want.shape
        assert var.dtype == want.dtype
        np.testing.assert_array_equal(var.values, want, strict=True)
        assert ds.attrs["scale_index"] == i
        assert ds.attrs["scale_key"] == key
        _check_coords(
            ds, want.shape[:3], offsets[i], peers.MULTISCALE_RESOLUTIONS[i], want.shape[3]
        )


@pytest.mark.parametrize("name", ["plain", "offsets"])
@pytest.mark.parametrize(
    "scale", [1, "8_8_40", (8, 8, 40), [8, 8, 40]], ids=["int", "key", "tuple", "list"]
)
def test_open_dataset_scale_selector(name: str, scale, multiscale):
    root, arrays = multiscale(name)
    ds = xr.open_dataset(root, engine="precomputed", scale=scale)
    assert ds.attrs["scale_index"] == 1
    assert ds.attrs["scale_key"] == "8_8_40"
    assert ds.attrs["resolution"] == [8, 8, 40]
    np.testing.assert_array_equal(ds["image"].values, arrays[1], strict=True)


@pytest.mark.parametrize("name", ["plain"])
def test_open_dataset_default_scale_is_first(name: str, multiscale):
    root, arrays = multiscale(name)
    ds = xr.open_dataset(root, engine="precomputed")
    assert ds.attrs["scale_index"] == 0
    np.testing.assert_array_equal(ds["image"].values, arrays[0], strict=True)
