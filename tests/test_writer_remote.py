"""Writes outside the calling process: a multi-process ``distributed`` cluster writing to
local disk, and writes to a real S3 server (moto, ``s3_server`` fixture) over HTTP."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp

from . import peers
from .helpers import grid_shape, make_array, rand, sharding_dict
from .process_probe import storage_calls
from .writer_helpers import shards_touched


def n_shards(size, chunk, spec) -> int:
    grid = grid_shape(size, chunk)
    box = peers.shard_box_chunks(spec, grid)
    return int(np.prod([-(-g // b) for g, b in zip(grid, box)]))


def test_distributed_multiprocess_write_to_local_disk(tmp_path, process_client):
    size, chunk = (96, 80, 24), (16, 16, 8)
    spec = sharding_dict(3, 0, 6)  # 2x2x2-chunk boxes
    data = rand((*size, 2), "uint16", seed=1)
    arr = make_array(da.from_array(data, chunks=(40, 24, 10, 2)), offset=(-16, 8, 3))
    url = str(tmp_path / "v")
    with storage_calls(process_client) as calls:
        n = xp.to_precomputed(arr, url, chunk_size=chunk, sharding=spec)
    shards = n_shards(size, chunk, spec)
    assert n == shards == 3 * 3 * 2
    # the writes happened in the worker processes, not here: each shard once, and the info
    assert "put" not in calls.here, calls.here
    assert calls.in_workers()["put"] == shards + 1, calls.workers
    # a region write too, through the accessor, with the cluster active
    patch = rand((30, 20, 9, 2), "uint16", seed=2)
    with storage_calls(process_client) as calls:
        make_array(
            da.from_array(patch, chunks=(7, 9, 4, 2)), offset=(-10, 20, 5)
        ).precomputed.to_precomputed(url, mode="r+", region="auto")
    touched = shards_touched(size, chunk, spec, lo=(6, 12, 2), hi=(36, 32, 11))
    assert len(touched) == 2
    assert "put" not in calls.here, calls.here
    assert calls.in_workers()["put"] == len(touched) + 1, calls.workers  # and the info
    assert len(os.listdir(os.path.join(url, "4_4_40"))) == shards
    data[6:36, 12:32, 2:11] = patch
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)
    ds = xr.open_dataset(url, engine="precomputed")
    np.testing.assert_array_equal(ds.image.values, data)


@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "unsharded"])
def test_write_to_s3_one_put_per_object(s3_server, sharded):
    size, chunk = (64, 48, 20), (16, 16, 8)
    spec = sharding_dict(3, 0, 4) if sharded else None
    data = rand((*size, 1), "uint32", seed=3)
    arr = make_array(
        da.from_array(data, chunks=(20, 20, 7, 1)), offset=(5, -3, 0), name="segmentation"
    )
    url = s3_server.new_url("writer")
    s3_server.reset_counts()
    xp.to_precomputed(
        arr,
        url,
        chunk_size=chunk,
        sharding=spec,
        encoding="compressed_segmentation",
        storage_options=s3_server.storage_options,
    )
    requests = s3_server.requests()
    puts = [r for r in requests if r[0] == "PUT"]
    grid = grid_shape(size, chunk)
    objects = n_shards(size, chunk, spec) if sharded else int(np.prod(grid))
    assert len(puts) == objects + 1  # every shard (or chunk) once, plus the info
    assert len({p[1].split("?")[0] for p in puts}) == len(puts)
    assert not [r for r in requests if r[0] == "POST"]  # no multipart uploads
    fs = s3_server.fs()
    prefix = url.removeprefix("s3://")
    listed = sorted(p.removeprefix(prefix + "/") for p in fs.find(prefix))
    assert len(listed) == objects + 1 and "info" in listed
    assert not [p for p in listed if p.endswith(".tmp")]
    ds = xr.open_dataset(url, engine="precomputed", storage_options=s3_server.storage_options)
    np.testing.assert_array_equal(ds.segmentation.values, data)
    assert ds.attrs["voxel_offset"] == [5, -3, 0]
    if sharded:
        assert all(p.endswith(".shard") for p in listed if p != "info")


def test_waves_on_a_process_cluster(tmp_path, process_client):
    """``max_tasks`` on a cluster: each wave's shards are written by the workers, the info
    once by the caller, and the files equal those of one graph."""
    from .writer_helpers import file_hashes

    size, chunk = (96, 80, 24), (16, 16, 8)
    spec = sharding_dict(3, 0, 6)  # 2x2x2-chunk boxes: 3 x 3 x 2 shards
    data = rand((*size, 1), "uint8", seed=3)
    arr = make_array(da.from_array(data, chunks=(40, 24, 10, 1)))
    xp.to_precomputed(arr, tmp_path / "one", chunk_size=chunk, sharding=spec)
    with storage_calls(process_client) as calls:
        n = xp.to_precomputed(arr, tmp_path / "waves", chunk_size=chunk, sharding=spec,
                              max_tasks=4)  # fmt: skip
    assert n == n_shards(size, chunk, spec) == 18
    assert calls.here.get("put") == 1  # the info, before the first wave
    assert calls.in_workers()["put"] == 18, calls.workers
    assert file_hashes(tmp_path / "waves") == file_hashes(tmp_path / "one")
