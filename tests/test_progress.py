"""``to_precomputed(..., progress=True)``: a bar that counts the shards being written."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest

import xarray_precomputed as xp
from xarray_precomputed.demo import synthetic_volume
from xarray_precomputed.progress import TaskBar


@pytest.fixture(scope="module")
def data():
    return synthetic_volume((96, 64, 16), n_cells=4)[["image"]].chunk({"x": 32, "y": 32})


def test_bar_counts_the_shards(data, tmp_path, capsys):
    url = str(tmp_path / "vol")
    xp.to_precomputed(data, url, chunk_size=(16, 16, 16), shard_bytes=8 * 2**10, progress=True)
    err = capsys.readouterr().err
    shards = len(list(Path(url).glob("*/*.shard")))
    assert shards > 2
    assert "writing 8_8_40: 100%" in err and f"{shards}/{shards}" in err and "shard/s" in err


def test_no_bar_by_default(data, tmp_path, capsys):
    xp.to_precomputed(data, str(tmp_path / "vol"), chunk_size=(16, 16, 16))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_unsharded_counts_tasks_and_processes_scheduler(data, tmp_path, capsys):
    with dask.config.set(scheduler="processes", num_workers=2):
        n = xp.to_precomputed(data, str(tmp_path / "vol"), sharding=None, progress=True)
    err = capsys.readouterr().err
    assert n == len(list(Path(tmp_path, "vol", "8_8_40").iterdir()))
    assert "task/s" in err and "100%" in err


def test_distributed_progress(data, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):  # fmt: skip
        n = xp.to_precomputed(data, str(tmp_path / "vol"), chunk_size=(16, 16, 16),
                              shard_bytes=8 * 2**10, progress=True)  # fmt: skip
    assert n == len(list(Path(tmp_path, "vol").glob("*/*.shard")))
    assert "100% Completed" in capsys.readouterr().out


def test_task_bar_falls_back_to_all_tasks():
    graph = dask.delayed(sum)([dask.delayed(np.add)(i, 1) for i in range(5)])
    with TaskBar("no-such-prefix", disable=True) as bar:
        assert graph.compute() == 15
    assert bar.key_prefix is None  # matched nothing: every task counted
