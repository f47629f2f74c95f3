"""``to_precomputed(..., resume=True)``: a write killed part-way and run again puts only
what is missing or different."""

from __future__ import annotations

import multiprocessing
import os
import threading

import dask
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.errors import VolumeExistsError
from xarray_precomputed.storage import Store

from .helpers import make_array, rand, sharding_dict

SIZE, CHUNK = (128, 128, 32), (16, 16, 16)  # 8 x 8 x 2 chunks
LAYOUTS = {
    # boxes of 2 x 2 x 2 chunks: 16 shards
    "sharded": (sharding_dict(2, 1, 4), 16),
    "unsharded": (None, 128),
}


def _data(seed=41) -> np.ndarray:
    return rand((*SIZE, 1), seed=seed)


def _write(url, layout, data, **kw):
    with dask.config.set(scheduler="sync"):  # one object after another, as in a long job
        return xp.to_precomputed(make_array(data), url, chunk_size=CHUNK,
                                 sharding=LAYOUTS[layout][0], **kw)  # fmt: skip


def killed_write(url: str, layout: str, after: int) -> None:
    """Runs in a child process: write, and die abruptly when about to make put ``after + 1``."""
    done = [0]
    put = Store.put

    def dying_put(store, key, data):
        if done[0] == after:
            os._exit(9)  # no cleanup, no flush: as a killed job
        done[0] += 1
        put(store, key, data)

    Store.put = dying_put
    _write(url, layout, _data())


class PutCounter:
    def __init__(self, monkeypatch):
        self.keys: list[str] = []
        lock = threading.Lock()
        put = Store.put

        def spy(store, key, data):
            with lock:
                self.keys.append(key)
            put(store, key, data)

        monkeypatch.setattr(Store, "put", spy)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_killed_write_resumes_with_the_missing_half(tmp_path, monkeypatch, layout):
    url = str(tmp_path / "v")
    objects = LAYOUTS[layout][1] + 1  # and the info
    half = objects // 2
    child = multiprocessing.get_context("spawn").Process(target=killed_write,
                                                          args=(url, layout, half))  # fmt: skip
    child.start()
    child.join(120)
    assert child.exitcode == 9
    scale_dir = os.path.join(url, "4_4_40")
    assert len([n for n in os.listdir(scale_dir) if not n.startswith(".")]) == half - 1
    with pytest.raises(VolumeExistsError):  # without resume, the usual refusal
        _write(url, layout, _data())
    puts = PutCounter(monkeypatch)
    _write(url, layout, _data(), resume=True)
    assert len(puts.keys) == objects - half and "info" not in puts.keys
    assert len(set(puts.keys)) == len(puts.keys)
    got = xr.open_dataset(url, engine="precomputed").image.values
    np.testing.assert_array_equal(got, _data())

    # run once more: nothing at all is put; change one chunk: only its object is put
    puts.keys.clear()
    _write(url, layout, _data(), resume=True, mode="w")
    assert puts.keys == []
    changed = _data()
    changed[40:41, 70:71, 20:21] += 1
    _write(url, layout, changed, resume=True, mode="w")
    assert len(puts.keys) == 1 and puts.keys[0].startswith("4_4_40/")
    np.testing.assert_array_equal(xr.open_dataset(url, engine="precomputed").image.values, changed)


def test_resume_refuses_a_different_volume(tmp_path):
    url = str(tmp_path / "v")
    _write(url, "unsharded", _data())
    with pytest.raises(VolumeExistsError, match="resume=True continues only the same write"):
        _write(url, "sharded", _data(), resume=True)


@pytest.mark.parametrize("server", ["s3", "gcs"])
def test_resume_on_object_stores_skips_stored_objects(request, monkeypatch, server):
    srv = request.getfixturevalue(f"{server}_server")
    url = srv.new_url("resume")
    so = srv.storage_options
    data = rand((64, 64, 16, 1), seed=42)
    xp.to_precomputed(make_array(data), url, chunk_size=CHUNK, sharding=None, storage_options=so)
    fs = srv.fs()
    root = url.split("://", 1)[1]
    fs.rm(f"{root}/4_4_40/0-16_0-16_0-16")  # as if the job died before these
    fs.rm(f"{root}/4_4_40/16-32_48-64_0-16")
    puts = PutCounter(monkeypatch)
    xp.to_precomputed(make_array(data), url, chunk_size=CHUNK, sharding=None,
                      storage_options=so, resume=True)  # fmt: skip
    assert sorted(puts.keys) == ["4_4_40/0-16_0-16_0-16", "4_4_40/16-32_48-64_0-16"]
    got = xr.open_dataset(url, engine="precomputed", storage_options=so).image.values
    np.testing.assert_array_equal(got, data)
