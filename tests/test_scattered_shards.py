"""Sharding layouts whose shards are not boxes (murmurhash3, identity with too few bits)
are written by a two-stage graph and read back by tensorstore and cloud-volume."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.core import get_dependencies

import xarray_precomputed as xp
from xarray_precomputed.errors import WriteError
from xarray_precomputed.write_graph import TASK_PREFIX

from . import peers
from .helpers import make_array, rand, sharding_dict

SPECS = {
    # the case: preshift 1, minishard 2, shard bits 6 on a 10 x 6 x 5 chunk grid
    "identity-nonbox": sharding_dict(1, 2, 6, mi_enc="raw", data_enc="gzip"),
    "identity-aliasing": sharding_dict(1, 1, 1),
    "murmurhash": sharding_dict(1, 2, 3, hash="murmurhash3_x86_128"),
    "murmurhash-raw": sharding_dict(
        0, 3, 2, hash="murmurhash3_x86_128", mi_enc="raw", data_enc="raw"
    ),  # fmt: skip
}
SIZE, CHUNK = (80, 48, 20), (8, 8, 4)  # grid 10 x 6 x 5


def _data() -> np.ndarray:
    data = rand((*SIZE, 1), "uint16", seed=51)
    data[:16, :16, :8] = 0  # some empty chunks, never stored
    return data


def _cloudvolume_read(url: str) -> np.ndarray:
    cloudvolume = peers.cloudvolume()
    cv = cloudvolume.CloudVolume("file://" + url, fill_missing=True, progress=False, parallel=1)
    return np.asarray(cv[:, :, :])


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("chunks", [(32, 24, 8, 1), (13, 48, 7, 1)], ids=["fits", "misaligned"])
def test_written_and_read_by_peers(tmp_path, name, chunks):
    url = str(tmp_path / "v")
    data = _data()
    arr = make_array(da.from_array(data, chunks=chunks))
    delayed = xp.to_precomputed(arr, url, chunk_size=CHUNK, sharding=SPECS[name], compute=False)
    # stage 2: one task per shard holding a chunk
    shard_tasks = [
        k for k in delayed.dask if isinstance(k, tuple) and str(k[0]).startswith(TASK_PREFIX)
    ]
    written = delayed.compute()
    files = sorted(os.listdir(os.path.join(url, "4_4_40")))
    assert written == len(files) == len(shard_tasks)
    assert all(f.endswith(".shard") for f in files)
    np.testing.assert_array_equal(xr.open_dataset(url, engine="precomputed").image.values, data)
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)
    np.testing.assert_array_equal(_cloudvolume_read(url)[..., 0], data[..., 0])


def test_same_bytes_as_tensorstore_reads_and_writes_into(tmp_path):
    """tensorstore writes a region into our murmurhash volume; we read its result."""
    ts = peers.tensorstore()

    url = str(tmp_path / "v")
    data = _data()
    xp.to_precomputed(make_array(data), url, chunk_size=CHUNK, sharding=SPECS["murmurhash"])
    t = ts.open(peers.tensorstore_spec(url), open=True, read=True, write=True).result()
    patch = rand((5, 6, 3, 1), "uint16", seed=52)
    t[10:15, 20:26, 3:6].write(patch).result()
    data[10:15, 20:26, 3:6] = patch
    np.testing.assert_array_equal(xr.open_dataset(url, engine="precomputed").image.values, data)


def test_stage_one_tasks_hold_one_block(tmp_path):
    """Each encode task depends on one input block; each shard task on the encode tasks
    whose blocks hold its chunks (for identity non-box specs, not all of them)."""
    url = str(tmp_path / "v")
    arr = make_array(da.from_array(_data(), chunks=(16, 16, 4, 1)))
    delayed = xp.to_precomputed(arr, url, chunk_size=CHUNK, sharding=SPECS["identity-nonbox"],
                                compute=False)  # fmt: skip
    graph = dict(delayed.dask)
    shard_keys = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith(TASK_PREFIX)]
    encode_keys = [
        k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("encode-chunks-")
    ]
    assert len(encode_keys) > 1
    encode = set(encode_keys)
    fan_in = [len(get_dependencies(graph, k) & encode) for k in shard_keys]
    assert max(fan_in) < len(encode_keys)


def test_region_writes_into_such_layouts_still_refused(tmp_path):
    url = str(tmp_path / "v")
    xp.to_precomputed(make_array(_data()), url, chunk_size=CHUNK, sharding=SPECS["murmurhash"])
    with pytest.raises(WriteError, match="not boxes"):
        xp.to_precomputed(make_array(rand((8, 8, 4, 1), "uint16"), offset=(8, 8, 4)), url,
                          mode="r+", region="auto")  # fmt: skip
