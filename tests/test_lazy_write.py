"""``to_precomputed(..., compute=False)``: nothing written or deleted until computed;
then the info first (after mode="w" removed the old scales), the data next."""

from __future__ import annotations

import hashlib
import os
import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.storage import Store

from .helpers import make_array, rand, sharding_dict


def _snapshot(root) -> dict[str, str]:
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


class Events:
    """Records puts, deletes and scale removals, in order, from any thread."""

    def __init__(self, monkeypatch):
        self.log: list[tuple[str, str]] = []
        lock = threading.Lock()
        put, delete, remove = Store.put, Store.delete, Store.remove_tree

        def record(op, key):
            with lock:
                self.log.append((op, key))

        def spy_put(store, key, data):
            record("put", key)
            return put(store, key, data)

        def spy_delete(store, key):
            record("delete", key)
            return delete(store, key)

        def spy_remove(store, key):
            record("remove", key)
            return remove(store, key)

        monkeypatch.setattr(Store, "put", spy_put)
        monkeypatch.setattr(Store, "delete", spy_delete)
        monkeypatch.setattr(Store, "remove_tree", spy_remove)


@pytest.mark.parametrize("sharding", [None, sharding_dict(3, 0, 3)], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_mode_w_compute_false_touches_nothing_then_info_first(
    tmp_path, monkeypatch, sharding, scheduler
):
    url = str(tmp_path / "v")
    old = rand((32, 32, 8, 1), seed=1)
    xp.to_precomputed(make_array(old), url, chunk_size=(8, 8, 4), sharding=sharding,
                      scale_key="old")  # fmt: skip
    before = _snapshot(url)
    events = Events(monkeypatch)
    new = rand((32, 32, 8, 1), seed=2)
    delayed = xp.to_precomputed(
        make_array(da.from_array(new, chunks=(16, 16, 8, 1))), url, mode="w",
        chunk_size=(8, 8, 4), sharding=sharding, compute=False,
    )  # fmt: skip
    assert events.log == []
    assert _snapshot(url) == before
    np.testing.assert_array_equal(
        xr.open_dataset(url, engine="precomputed").image.values, old
    )  # the old volume is intact and readable until the caller computes
    with dask.config.set(scheduler=scheduler):
        assert delayed.compute() > 0
    ops = [op for op, _ in events.log]
    info_at = events.log.index(("put", "info"))
    assert ops[:info_at] == ["remove"] and events.log[0] == ("remove", "old")
    assert all(op == "put" and key.startswith("4_4_40/") for op, key in events.log[info_at + 1 :])
    assert len(events.log) > info_at + 1
    assert not os.path.exists(os.path.join(url, "old"))
    np.testing.assert_array_equal(xr.open_dataset(url, engine="precomputed").image.values, new)


def test_region_and_datatree_compute_false_write_nothing(tmp_path, monkeypatch):
    url = str(tmp_path / "v")
    base = rand((32, 32, 8, 1), seed=3)
    xp.to_precomputed(make_array(base), url, chunk_size=(8, 8, 4))
    before = _snapshot(url)
    events = Events(monkeypatch)
    patch = rand((8, 8, 4, 1), seed=4)
    region = xp.to_precomputed(make_array(patch, offset=(8, 8, 4)), url, mode="r+",
                               region="auto", compute=False)  # fmt: skip
    tree_url = str(tmp_path / "tree")
    coarse = base[::2, ::2].copy()
    tree = xr.DataTree.from_dict(
        {"a": make_array(base.copy()).to_dataset(),
         "b": make_array(coarse, res=(8, 8, 40)).to_dataset()}
    )  # fmt: skip
    tree_write = xp.to_precomputed(tree, tree_url, chunk_size=(8, 8, 4), compute=False)
    assert events.log == [] and _snapshot(url) == before and not os.path.exists(tree_url)
    dask.compute(region, tree_write)
    base[8:16, 8:16, 4:8] = patch
    np.testing.assert_array_equal(xr.open_dataset(url, engine="precomputed").image.values, base)
    tree_log = [k for _, k in events.log if not k.startswith("4_4_40")]
    assert tree_log.count("info") == 2  # the region write's info and the tree's, once each
    t = xr.open_datatree(tree_url, engine="precomputed")
    np.testing.assert_array_equal(t["b"].image.values, coarse)
    assert sorted(t.children) == ["a", "b"]


def test_compute_true_unchanged(tmp_path, monkeypatch):
    url = str(tmp_path / "v")
    events = Events(monkeypatch)
    assert xp.to_precomputed(make_array(rand((16, 16, 8, 1))), url, chunk_size=(8, 8, 8),
                             sharding=None) == 4  # fmt: skip
    assert events.log[0] == ("put", "info") and len(events.log) == 5
