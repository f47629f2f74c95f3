"""Reading on a multi-process dask.distributed cluster: everything a task needs must
pickle, and workers open storage themselves."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xarray_precomputed.errors import ChunkNotFoundError
from xarray_precomputed.testing import write_tensorstore_volume

from .helpers import sharding_dict
from .process_probe import storage_calls

distributed = pytest.importorskip("distributed")
pytest.importorskip("tensorstore")

pytestmark = pytest.mark.timeout(120)

SHARDINGS = {
    "identity": sharding_dict(3, 1, 4),
    "murmur": sharding_dict(2, 2, 2, hash="murmurhash3_x86_128", mi_enc="raw"),
}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    out = {}
    for name, spec in SHARDINGS.items():
        path = tmp_path_factory.mktemp(name)
        rng = np.random.default_rng(7)
        data = rng.integers(0, 2**31, (37, 29, 11, 2), dtype=np.uint32)
        data[:8, :8, :4] = 0  # a missing shard / missing chunks
        write_tensorstore_volume(
            path, data, chunk_size=(8, 8, 4), voxel_offset=(5, -9, 1), sharding=spec
        )
        out[name] = (path, data)
    return out


@pytest.mark.parametrize("name", list(SHARDINGS))
def test_compute_on_process_cluster(process_client, volumes, name):
    client = process_client
    path, data = volumes[name]
    ds = xr.open_dataset(path, engine="precomputed", chunks={})
    if ds.image.data.npartitions == 1:  # small unsharded/murmur volume: one ~64 MiB group
        ds = xr.open_dataset(
            path, engine="precomputed", chunks=dict(zip("xyz", (16, 16, 8)))
        )  # whole chunks
    assert ds.image.data.npartitions > 1
    with storage_calls(client) as calls:
        total = client.compute(ds.image.astype(np.uint64).sum()).result()
        assert int(total) == int(data.astype(np.uint64).sum())
        values = client.compute(ds.image.data).result()
        np.testing.assert_array_equal(values, data)
        # A lazy selection is shipped to the workers too.
        sel = ds.image.isel(x=slice(3, 30, 4), y=[5, 1, 20], channel=1)
        expected = data[3:30:4][:, [5, 1, 20]][..., 1]
        np.testing.assert_array_equal(client.compute(sel.data).result(), expected)
    # The reads happened in the worker processes, not here.
    assert calls.here == {}, calls.here
    assert sum(calls.in_workers().values()) > 0, calls.workers
    assert len(calls.workers) == 2


def test_errors_cross_process_boundaries(process_client, volumes):
    client = process_client
    path, _ = volumes["identity"]
    ds = xr.open_dataset(path, engine="precomputed", chunks={}, fill_missing=False)
    with pytest.raises(ChunkNotFoundError, match="shard"):
        client.compute(ds.image[:8, :8, :4].data).result()
