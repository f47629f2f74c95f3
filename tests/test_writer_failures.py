"""``xp.to_precomputed``: a failed put then a retry gives a correct volume, no temporary
files are left behind, and the same data gives the same bytes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os

import dask
import dask.array as da
import numpy as np
import pytest

import xarray_precomputed as xp
from xarray_precomputed.errors import StorageError
from xarray_precomputed.storage import Store

from . import peers
from .helpers import make_array, rand, sharding_dict
from .writer_helpers import all_files, base_volume, file_hashes, ours

# -- failures and determinism ------------------------------------------------------------------


@contextlib.contextmanager
def own_thread_pool(workers=2):
    """Run dask's threaded scheduler on a pool that is joined on exit.

    When a task fails, ``compute`` raises at once while tasks already running carry on
    (they cannot be cancelled); joining the pool lets them finish before the test looks
    at the files.
    """
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        with dask.config.set(scheduler="threads", pool=pool):
            yield
    finally:
        pool.shutdown(wait=True)


def _no_temporaries(url):
    names = all_files(url)
    assert not [n for n in names if n.endswith(".tmp") or os.path.basename(n).startswith(".")]


@pytest.mark.parametrize("retry", ["w", "r+"])
def test_failed_put_then_retry_gives_a_correct_volume(tmp_path, monkeypatch, retry):
    size, chunk = (48, 40, 13), (8, 8, 4)
    spec = sharding_dict(3, 0, 5)
    data = rand((*size, 1), seed=18)
    arr = make_array(da.from_array(data, chunks=(16, 16, 8, 1)))
    url = str(tmp_path / "v")
    real = Store.put
    failed = []

    victim = "4_4_40/" + peers.shard_filename(spec, 5)

    def flaky(store, key, blob):
        if key == victim and not failed:
            failed.append(key)
            raise StorageError(f"injected failure writing {key}")
        return real(store, key, blob)

    monkeypatch.setattr(Store, "put", flaky)
    with pytest.raises(StorageError, match="injected"):
        with own_thread_pool():  # tasks in flight when the error arrives finish first
            xp.to_precomputed(arr, url, chunk_size=chunk, sharding=spec)
    assert failed == [victim] == ["4_4_40/05.shard"]
    assert not os.path.exists(os.path.join(url, victim))
    _no_temporaries(url)
    if retry == "w":
        xp.to_precomputed(arr, url, mode="w", chunk_size=chunk, sharding=spec)
    else:
        xp.to_precomputed(arr, url, mode="r+", region="auto")
    _no_temporaries(url)
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)
    np.testing.assert_array_equal(ours(url), data)


def test_failure_inside_the_atomic_put_leaves_no_temporary_file(tmp_path, monkeypatch):
    url = str(tmp_path / "v")
    data = base_volume(url)  # an existing shard must survive a failed rewrite intact
    before = file_hashes(url)
    real_replace = os.replace

    def failing_replace(src, dst):
        if dst.endswith(".shard"):
            raise OSError(28, "No space left on device (injected)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    patch = rand((24, 20, 8, 1), seed=19)
    with pytest.raises(StorageError, match="No space"):
        with own_thread_pool():
            xp.to_precomputed(make_array(patch), url, mode="r+", region="auto")
    monkeypatch.setattr(os, "replace", real_replace)
    _no_temporaries(url)
    assert {k: v for k, v in file_hashes(url).items() if k != "info"} == {
        k: v for k, v in before.items() if k != "info"
    }
    np.testing.assert_array_equal(ours(url), data)
    np.testing.assert_array_equal(peers.tensorstore_read(url), data)


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation", "jpeg", "png"])
def test_same_data_twice_gives_identical_bytes(tmp_path, encoding):
    dtype, nc = ("uint8", 1) if encoding in ("jpeg", "png") else ("uint64", 2)
    data = rand((29, 23, 9, nc), dtype, seed=20)
    hashes = []
    for i, chunks in enumerate([(29, 23, 9, nc), (7, 5, 3, nc)]):
        url = str(tmp_path / f"v{i}")
        arr = make_array(da.from_array(data, chunks=chunks), offset=(-1, 2, 3))
        xp.to_precomputed(
            arr, url, chunk_size=(8, 8, 4), encoding=encoding, shard_bytes=8 * 8 * 4 * 4
        )
        hashes.append(file_hashes(url))
    xp.to_precomputed(
        make_array(data, offset=(-1, 2, 3)),
        str(tmp_path / "v0"),
        mode="w",
        chunk_size=(8, 8, 4),
        encoding=encoding,
        shard_bytes=8 * 8 * 4 * 4,
    )
    hashes.append(file_hashes(tmp_path / "v0"))
    assert len(hashes[0]) > 2
    assert hashes[0] == hashes[1] == hashes[2]
