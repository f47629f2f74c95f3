"""The xarray backend's dataset contract: variable, dims, dtype, coordinates, attributes,
URL forms, scale selection, DataTree, pickling."""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil

import cloudpickle
import dask
import numpy as np
import pytest
import xarray as xr

from xarray_precomputed import PrecomputedBackendEntrypoint
from xarray_precomputed.metadata import DATA_TYPES
from xarray_precomputed.testing import write_tensorstore_volume

from .helpers import sharding_dict

pytest.importorskip("tensorstore")

SIZE = (10, 7, 5)
OFFSET = (-3, 4, 100)
RES = (4, 6, 40)
SHARDING = sharding_dict(3, 0, 3)


def random_data(dtype, nc, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(size=(*size, nc)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (*size, nc), dtype=dtype, endpoint=True)


def edit_info(path, **members):
    f = pathlib.Path(path, "info")
    info = json.loads(f.read_text())
    info.update(members)
    f.write_text(json.dumps(info))
    return info


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image")
    data = random_data("uint16", 2)
    write_tensorstore_volume(
        path, data, chunk_size=(4, 4, 3), voxel_offset=OFFSET, resolution=RES, sharding=SHARDING
    )
    edit_info(
        path, mesh="mesh", skeletons="skeletons", segment_properties="props", custom={"a": [1, 2]}
    )
    return path, data


@pytest.fixture(scope="module")
def multiscale(tmp_path_factory):
    """Three scales, keys deliberately not in sorted order."""
    path = tmp_path_factory.mktemp("multi")
    base = random_data("uint8", 1, (16, 12, 4))
    scales = [
        ("s4", (4, 4, 40), base),
        ("a8", (8, 8, 40), base[::2, ::2]),
        ("m16", (16, 16, 40), base[::4, ::4]),
    ]
    for key, res, data in scales:
        write_tensorstore_volume(path, data, chunk_size=(4, 4, 2), resolution=res, key=key)
    return path, scales


# -- structure -------------------------------------------------------------------------


def test_dataset_structure(image):
    path, data = image
    ds = xr.open_dataset(path, engine="precomputed")
    assert list(ds.data_vars) == ["image"]
    da = ds.image
    assert da.dims == ("x", "y", "z", "channel")
    assert da.shape == (*SIZE, 2) and da.dtype == np.dtype("uint16")
    for d, name in enumerate("xyz"):
        expected = (OFFSET[d] + np.arange(SIZE[d]) + 0.5) * RES[d]
        np.testing.assert_allclose(ds[name].values, expected)
        assert ds[name].attrs["units"] == "nm"
        assert ds[name].dtype == np.float64
    np.testing.assert_array_equal(ds.channel.values, [0, 1])
    np.testing.assert_array_equal(da.values, data)
    assert set(ds.coords) == {"x", "y", "z", "channel"}


def test_attrs(image):
    path, _ = image
    attrs = xr.open_dataset(path, engine="precomputed").attrs
    assert attrs["url"] == str(path)
    assert attrs["scale_key"] == "4_6_40"
    assert attrs["type"] == "image"
    assert list(attrs["resolution"]) == list(RES)
    assert list(attrs["voxel_offset"]) == list(OFFSET)
    assert list(attrs["size"]) == list(SIZE)
    assert list(attrs["chunk_size"]) == [4, 4, 3]
    assert attrs["encoding"] == "raw"
    assert attrs["sharding"] == SHARDING
    assert "compressed_segmentation_block_size" not in attrs
    # Extra info members are passed through.
    assert attrs["mesh"] == "mesh"
    assert attrs["skeletons"] == "skeletons"
    assert attrs["segment_properties"] == "props"
    assert attrs["custom"] == {"a": [1, 2]}


def test_segmentation(tmp_path):
    data = random_data("uint64", 1) % 7
    write_tensorstore_volume(
        tmp_path,
        data,
        chunk_size=(4, 4, 3),
        encoding="compressed_segmentation",
        block_size=(2, 3, 2),
        volume_type="segmentation",
    )
    ds = xr.open_dataset(tmp_path, engine="precomputed")
    assert list(ds.data_vars) == ["segmentation"]
    assert ds.segmentation.dtype == np.uint64
    assert ds.attrs["encoding"] == "compressed_segmentation"
    assert list(ds.attrs["compressed_segmentation_block_size"]) == [2, 3, 2]
    assert "sharding" not in ds.attrs
    np.testing.assert_array_equal(ds.segmentation.values, data)


@pytest.mark.parametrize(
    "vtype, name",
    [
        ("unknown", "data"),
        ("mesh-volume", "data"),
        ("IMAGE", "image"),
        ("Segmentation", "segmentation"),
    ],
)
def test_variable_name_from_type(tmp_path, vtype, name):
    data = random_data("uint8", 1)
    write_tensorstore_volume(tmp_path, data, chunk_size=(8, 8, 8))
    edit_info(tmp_path, type=vtype)
    ds = xr.open_dataset(tmp_path, engine="precomputed")
    assert list(ds.data_vars) == [name]
    np.testing.assert_array_equal(ds[name].values, data)
    assert ds.attrs["type"] == vtype


@pytest.mark.parametrize("dtype", DATA_TYPES)
def test_every_dtype(tmp_path, dtype):
    data = random_data(dtype, 3)
    store = write_tensorstore_volume(tmp_path, data, chunk_size=(3, 4, 2))
    ds = xr.open_dataset(tmp_path, engine="precomputed")
    assert ds.image.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ds.image.values, store.read().result())


# -- URL forms --------------------------------------------------------------------------


def test_url_forms(image):
    path, data = image
    forms = [
        str(path),
        path,
        f"file://{path}",
        f"precomputed://{path}",
        f"precomputed://file://{path}",
        f"{path}/",
        f"precomputed://{path}/",
    ]
    for form in forms:
        ds = xr.open_dataset(form, engine="precomputed")
        assert ds.attrs["url"] == str(path), form
        np.testing.assert_array_equal(ds.image[:3, :3, :2].values, data[:3, :3, :2])


def test_engine_guessed_from_prefix(image):
    path, data = image
    entry = PrecomputedBackendEntrypoint()
    assert entry.guess_can_open(f"precomputed://{path}")
    assert not entry.guess_can_open(str(path))
    assert not entry.guess_can_open(42)
    ds = xr.open_dataset(f"precomputed://{path}")
    np.testing.assert_array_equal(ds.image.values, data)


def test_relative_path(image, monkeypatch):
    path, data = image
    monkeypatch.chdir(path.parent)
    ds = xr.open_dataset(path.name, engine="precomputed")
    assert ds.attrs["url"] == str(path)
    np.testing.assert_array_equal(ds.image.values, data)


def test_file_object_rejected(image):
    path, _ = image
    with open(path / "info", "rb") as f, pytest.raises(TypeError, match="URL"):
        xr.open_dataset(f, engine="precomputed")


def test_drop_variables(image):
    path, _ = image
    ds = xr.open_dataset(path, engine="precomputed", drop_variables="image")
    assert list(ds.data_vars) == []
    assert ds.sizes["x"] == SIZE[0]


# -- scales ----------------------------------------------------------------------------


def test_scale_selection(multiscale):
    path, scales = multiscale
    for i, (key, res, data) in enumerate(scales):
        for selector in (i, key, res, list(res), i - len(scales)):
            ds = xr.open_dataset(path, engine="precomputed", scale=selector)
            assert ds.attrs["scale_key"] == key and ds.attrs["scale_index"] == i
            np.testing.assert_array_equal(ds.image.values, data)
            np.testing.assert_allclose(ds.x.values, (np.arange(data.shape[0]) + 0.5) * res[0])


def test_datatree(multiscale):
    path, scales = multiscale
    edit_info(path, mesh="mesh")
    try:
        tree = xr.open_datatree(path, engine="precomputed")
    finally:
        info = json.loads((path / "info").read_text())
        del info["mesh"]
        (path / "info").write_text(json.dumps(info))
    assert list(tree.children) == [key for key, _, _ in scales]  # info order, not sorted
    assert tree.attrs["url"] == str(path)
    assert tree.attrs["type"] == "image" and tree.attrs["data_type"] == "uint8"
    assert tree.attrs["num_channels"] == 1
    assert [s["key"] for s in tree.attrs["scales"]] == [k for k, _, _ in scales]
    assert tree.attrs["mesh"] == "mesh"
    for key, res, data in scales:
        child = tree[key]
        assert child.attrs["scale_key"] == key
        assert list(child.attrs["resolution"]) == list(res)
        np.testing.assert_array_equal(child["image"].values, data)


def test_datatree_nested_key(tmp_path):
    data = random_data("uint8", 1)
    write_tensorstore_volume(tmp_path, data, chunk_size=(4, 4, 4), key="nested/4_4_40")
    tree = xr.open_datatree(tmp_path, engine="precomputed")
    (name,) = tree.children
    assert "/" not in name and tree[name].attrs["scale_key"] == "nested/4_4_40"
    np.testing.assert_array_equal(tree[name]["image"].values, data)
    ds = xr.open_dataset(tmp_path, engine="precomputed", scale="nested/4_4_40")
    np.testing.assert_array_equal(ds.image.values, data)


def test_multiple_chunk_sizes_use_the_first(tmp_path):
    """Each chunk_sizes entry is a full copy; readers use the first (docs/format.md §1.2)."""
    first = random_data("uint8", 1, seed=1)
    second = random_data("uint8", 1, seed=2)
    write_tensorstore_volume(tmp_path / "a", first, chunk_size=(4, 4, 3))
    write_tensorstore_volume(tmp_path / "b", second, chunk_size=(8, 8, 2))
    for f in (tmp_path / "b" / "4_4_40").iterdir():
        shutil.copy(f, tmp_path / "a" / "4_4_40" / f.name)
    info = json.loads((tmp_path / "a" / "info").read_text())
    info["scales"][0]["chunk_sizes"] = [[4, 4, 3], [8, 8, 2]]
    (tmp_path / "a" / "info").write_text(json.dumps(info))
    ds = xr.open_dataset(tmp_path / "a", engine="precomputed", chunks={})
    assert list(ds.attrs["chunk_size"]) == [4, 4, 3]
    assert ds.attrs["chunk_sizes"] == [[4, 4, 3], [8, 8, 2]]
    assert ds.image.encoding["chunks"][:3] == (4, 4, 3)
    # Dask blocks are whole chunks of the first size
    for d, c in enumerate((4, 4, 3)):
        assert all(n % c == 0 for n in ds.image.data.chunks[d][:-1])
    np.testing.assert_array_equal(ds.image.values, first)
    info["scales"][0]["chunk_sizes"] = [[8, 8, 2], [4, 4, 3]]
    (tmp_path / "a" / "info").write_text(json.dumps(info))
    ds = xr.open_dataset(tmp_path / "a", engine="precomputed")
    np.testing.assert_array_equal(ds.image.values, second)


# -- pickling --------------------------------------------------------------------------


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle(image, dumps):
    path, data = image
    ds = xr.open_dataset(path, engine="precomputed")
    ds.image[:2, :2, :2].values  # connect the store first; pickles must not carry it
    again = pickle.loads(dumps(ds))
    np.testing.assert_array_equal(again.image.values, data)
    assert again.attrs == ds.attrs
    lazy = pickle.loads(dumps(ds.image.variable._data))
    np.testing.assert_array_equal(np.asarray(lazy), data)

    dds = xr.open_dataset(path, engine="precomputed", chunks={})
    arr = pickle.loads(dumps(dds.image.data))
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(arr.compute(), data)
    graph = dict(dds.image.data.__dask_graph__())
    graph2 = pickle.loads(dumps(graph))
    assert set(graph2) == set(graph)
    with dask.config.set(scheduler="synchronous"):
        results = dask.get(graph2, list(dds.image.data.__dask_keys__()[0][0][0]))
    assert results[0].shape == dds.image.data.blocks[0, 0, 0].shape
    np.testing.assert_array_equal(np.asarray(results[0]), dds.image.data.blocks[0, 0, 0].compute())


def test_datatree_keeps_scales_whose_group_names_collide(tmp_path):
    """Keys "a/b" and "a_b" both map to the group name "a_b": neither may be lost."""
    data = random_data("uint8", 1, seed=3)
    write_tensorstore_volume(tmp_path, data, chunk_size=(4, 4, 4), key="a_b")
    info = json.loads((tmp_path / "info").read_text())
    second = dict(info["scales"][0], key="a/b", resolution=[8, 8, 80])
    info["scales"].append(second)
    (tmp_path / "info").write_text(json.dumps(info))
    tree = xr.open_datatree(tmp_path, engine="precomputed")
    assert len(tree.children) == 2
    assert sorted(n.attrs["scale_key"] for n in tree.children.values()) == ["a/b", "a_b"]
