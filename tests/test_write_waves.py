"""Writing in waves (``max_tasks``): bounded graphs, the same bytes as one graph."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback

import xarray_precomputed as xp
from xarray_precomputed.errors import WriteError
from xarray_precomputed.writer import TASK_PREFIX

from .helpers import make_array, rand, sharding_dict
from .writer_helpers import PutSpy, all_files, file_hashes, ours

# 8^3 chunks in 2x2x2-chunk shards (16^3 voxels): a 64 x 48 x 32 volume has 4 x 3 x 2 shards
SHARDING = sharding_dict(3, 0, 5, data_enc="raw")
KW = dict(chunk_size=(8, 8, 8), sharding=SHARDING)


class _TaskCounter(Callback):
    """Write tasks per computed graph."""

    def __init__(self):
        super().__init__()
        self.per_graph: list[int] = []

    def _start(self, dsk):
        keys = [k[0] if isinstance(k, tuple) else k for k in dsk]
        self.per_graph.append(sum(1 for k in keys if str(k).startswith(TASK_PREFIX)))


def _data(shape=(64, 48, 32), chunks=(20, 20, 20)):
    return da.from_array(rand((*shape, 1), seed=4), chunks=(*chunks, 1))


@pytest.mark.parametrize("max_tasks", [1, 3, 5, 12, 100])
def test_waves_write_the_same_bytes_in_bounded_graphs(tmp_path, max_tasks):
    data = _data()
    xp.to_precomputed(make_array(data), tmp_path / "one", **KW)
    with _TaskCounter() as counter, dask.config.set(scheduler="threads"):
        n = xp.to_precomputed(make_array(data), tmp_path / "waves", max_tasks=max_tasks, **KW)
    assert n == 24  # every shard once
    assert file_hashes(tmp_path / "waves") == file_hashes(tmp_path / "one")
    assert max(counter.per_graph) <= max_tasks
    assert sum(counter.per_graph) == 24
    assert len(counter.per_graph) == {1: 24, 3: 12, 5: 6, 12: 2, 100: 1}[max_tasks]


def test_region_write_in_waves_merges_partial_shards_once(tmp_path, monkeypatch):
    base = rand((64, 48, 32, 1), seed=1)
    for name in ("one", "waves"):
        xp.to_precomputed(make_array(base), tmp_path / name, **KW)
    patch = rand((37, 29, 21, 1), seed=2)  # cuts shards on every side
    region = {"x": slice(5, 42), "y": slice(11, 40), "z": slice(3, 24)}
    xp.to_precomputed(make_array(patch), tmp_path / "one", mode="r+", region=region)
    spy = PutSpy(monkeypatch)
    xp.to_precomputed(make_array(da.from_array(patch, chunks=(10, 10, 10, 1))),
                      tmp_path / "waves", mode="r+", region=region, max_tasks=2)  # fmt: skip
    assert max(spy.counts().values()) == 1  # no shard written by two waves
    assert file_hashes(tmp_path / "waves") == file_hashes(tmp_path / "one")
    expected = base.copy()
    expected[5:42, 11:40, 3:24] = patch
    np.testing.assert_array_equal(ours(tmp_path / "waves"), expected)


def test_waves_need_compute_and_a_positive_bound(tmp_path):
    with pytest.raises(WriteError, match="compute=True"):
        xp.to_precomputed(make_array(_data()), tmp_path / "a", max_tasks=4, compute=False, **KW)
    with pytest.raises(WriteError, match="positive integer"):
        xp.to_precomputed(make_array(_data()), tmp_path / "b", max_tasks=0, **KW)
    assert all_files(tmp_path / "a") == all_files(tmp_path / "b") == []


def test_waves_refuse_shards_that_are_not_boxes(tmp_path):
    murmur = sharding_dict(0, 1, 2, hash="murmurhash3_x86_128")
    with pytest.raises(WriteError, match="not boxes"):
        xp.to_precomputed(make_array(_data()), tmp_path / "m", max_tasks=4,
                          chunk_size=(8, 8, 8), sharding=murmur)  # fmt: skip
    assert all_files(tmp_path / "m") == []
