"""Writing through any fsspec filesystem: parents are created where the filesystem has
directories (a local directory behind another protocol, fsspec's ``dir`` wrapper), and
nothing changes for those without (memory, S3, GCS)."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest
import xarray as xr
from fsspec.implementations.local import LocalFileSystem

import xarray_precomputed as xp

from .helpers import make_array, rand, sharding_dict


class WrappedLocal(LocalFileSystem):
    """A local directory behind a protocol of its own (as a plugin would register)."""

    protocol = "wrappedlocal"


fsspec.register_implementation("wrappedlocal", WrappedLocal, clobber=True)


def _targets(tmp_path, request):
    name = request.param
    if name == "memory":
        return f"memory://{uuid.uuid4().hex}/deep/vol", None
    if name == "wrapped":
        return f"wrappedlocal://{tmp_path}/not/yet/there/vol", None
    if name == "dir":
        return "dir://not/yet/vol", {"path": str(tmp_path), "target_protocol": "file"}
    server = request.getfixturevalue(f"{name}_server")
    return server.new_url("anyfs") + "/deep/vol", server.storage_options


@pytest.fixture(params=["memory", "wrapped", "dir", "s3", "gcs"])
def target(tmp_path, request):
    return _targets(tmp_path, request)


def _read(url, so) -> np.ndarray:
    return xr.open_dataset(url, engine="precomputed", storage_options=so).image.values


@pytest.mark.parametrize("sharding", [None, sharding_dict(2, 1, 2)], ids=["unsharded", "sharded"])
def test_write_region_and_replace(target, sharding):
    url, so = target
    data = rand((24, 16, 10, 1), seed=31)
    xp.to_precomputed(make_array(data), url, chunk_size=(8, 8, 5), sharding=sharding,
                      storage_options=so)  # fmt: skip
    np.testing.assert_array_equal(_read(url, so), data)
    patch = rand((5, 7, 3, 1), seed=32)
    xp.to_precomputed(make_array(patch, offset=(3, 6, 4)), url, mode="r+", region="auto",
                      storage_options=so)  # fmt: skip
    data[3:8, 6:13, 4:7] = patch
    np.testing.assert_array_equal(_read(url, so), data)
    new = rand((16, 16, 5, 1), seed=33)
    xp.to_precomputed(make_array(new), url, mode="w", chunk_size=(8, 8, 5), storage_options=so,
                      scale_key="s0/data")  # fmt: skip
    np.testing.assert_array_equal(_read(url, so), new)
    fs, root = fsspec.core.url_to_fs(url, **(so or {}))
    assert not fs.exists(f"{root}/4_4_40")  # the replaced scale is gone


def test_missing_bucket_is_not_created(s3_server):
    from xarray_precomputed.errors import StorageError

    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    url = f"s3://{bucket}/vol"
    with pytest.raises(StorageError):
        xp.to_precomputed(make_array(rand((8, 8, 4, 1))), url, chunk_size=(8, 8, 4),
                          storage_options=s3_server.storage_options)  # fmt: skip
    assert not s3_server.fs().exists(bucket)
