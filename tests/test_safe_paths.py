"""Scale keys that would leave the volume root: refused on write (argument, attrs,
DataTree node) and on read (an ``info`` from elsewhere)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.errors import InfoError, WriteError

from .helpers import make_array, rand

BAD_KEYS = [
    "..",
    "../outside",
    "a/../../outside",
    "/tmp/absolute",
    "a\\b",
    "",
    "a\x00b",
    "tab\there",
    "new\nline",
    "s3://bucket/x",
    "C:evil",
    "a//b",
    "./a",
    "a/",
]


def _files(root) -> set[str]:
    out = set()
    for d, _, names in os.walk(root):
        out |= {os.path.relpath(os.path.join(d, n), root) for n in names}
    return out


@pytest.fixture
def arr():
    return make_array(rand((16, 16, 4)), dims=("x", "y", "z"))


@pytest.mark.parametrize("key", BAD_KEYS)
def test_argument_key_refused_and_nothing_written(tmp_path, arr, key):
    url = tmp_path / "inner" / "vol"
    with pytest.raises(WriteError) as e:
        xp.to_precomputed(arr, str(url), scale_key=key, chunk_size=(8, 8, 4))
    assert repr(key) in str(e.value) and "scale_key argument" in str(e.value)
    assert _files(tmp_path) == set()


@pytest.mark.parametrize("key", ["../escape", "/abs", "a\\b"])
def test_attrs_key_refused(tmp_path, arr, key):
    a = arr.copy()
    a.attrs.update(scale_key=key, resolution=[4, 4, 40])
    with pytest.raises(WriteError, match="'scale_key' attr"):
        xp.to_precomputed(a, str(tmp_path / "vol"), chunk_size=(8, 8, 4))
    assert _files(tmp_path) == set()


@pytest.mark.parametrize("name", ["..", "a\\b", "x\x01"])
def test_datatree_node_name_refused(tmp_path, arr, name):
    tree = xr.DataTree.from_dict({"4_4_40": arr.to_dataset(), name: arr.to_dataset()})
    with pytest.raises(WriteError, match="DataTree node") as e:
        xp.to_precomputed(tree, str(tmp_path / "vol"), chunk_size=(8, 8, 4))
    assert repr(name) in str(e.value)
    assert _files(tmp_path) == set()


def test_region_write_with_bad_key_refused(tmp_path, arr):
    url = str(tmp_path / "vol")
    xp.to_precomputed(arr, url, chunk_size=(8, 8, 4))
    with pytest.raises(WriteError, match="leaves the volume root"):
        xp.to_precomputed(arr, url, mode="r+", scale_key="../vol", region="auto")


def test_nested_relative_key_is_fine(tmp_path, arr):
    url = str(tmp_path / "vol")
    xp.to_precomputed(arr, url, scale_key="s0/data", chunk_size=(8, 8, 4))
    assert os.path.isdir(os.path.join(url, "s0", "data"))
    ds = xr.open_dataset(url, engine="precomputed")
    np.testing.assert_array_equal(ds.image.values[..., 0], arr.values)


def _write_info_with_key(root, key):
    """A hostile volume: its info points a scale at ``key``."""
    os.makedirs(root, exist_ok=True)
    info = {
        "@type": "neuroglancer_multiscale_volume", "type": "image", "data_type": "uint8",
        "num_channels": 1,
        "scales": [{"key": key, "size": [4, 4, 1], "resolution": [1, 1, 1],
                    "chunk_sizes": [[4, 4, 1]], "encoding": "raw", "voxel_offset": [0, 0, 0]}],
    }  # fmt: skip
    with open(os.path.join(root, "info"), "w") as f:
        json.dump(info, f)


@pytest.mark.parametrize("key", ["../secret", "/", "a/../../secret", "x\\y", "gs://b/k"])
def test_read_refuses_info_with_escaping_key(tmp_path, key):
    # a file the hostile key would reach: 16 bytes named like the chunk
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "0-4_0-4_0-1").write_bytes(bytes(range(16)))
    vol = tmp_path / "vol"
    _write_info_with_key(vol, key)
    with pytest.raises(InfoError) as e:
        xr.open_dataset(str(vol), engine="precomputed")
    assert repr(key) in str(e.value)
    # nor may a write replace it: mode="w" must not delete what the old info names
    with pytest.raises(WriteError):
        xp.to_precomputed(
            make_array(rand((4, 4, 1)), dims=("x", "y", "z"), res=(1, 1, 1)),
            str(vol),
            mode="a",
            resolution=(1, 1, 1),
        )
    xp.to_precomputed(
        make_array(rand((4, 4, 1)), dims=("x", "y", "z"), res=(1, 1, 1)),
        str(vol),
        mode="w",
        resolution=(1, 1, 1),
    )
    assert (secret / "0-4_0-4_0-1").read_bytes() == bytes(range(16))


def test_read_allows_harmless_components(tmp_path):
    vol = tmp_path / "vol"
    _write_info_with_key(vol, "./s0/")
    (vol / "s0").mkdir()
    (vol / "s0" / "0-4_0-4_0-1").write_bytes(bytes(range(16)))
    ds = xr.open_dataset(str(vol), engine="precomputed")
    assert ds.image.values.ravel(order="F").tolist() == list(range(16))
