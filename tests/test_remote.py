"""Reading peer-written volumes from real (loopback) S3, GCS and HTTP servers.

Four representative volumes (tests/peers.py) are uploaded to each server:

``box``     tensorstore raw, identity-hash sharding whose shards are axis-aligned boxes,
            gzip minishard indices and gzip chunk data (several shard files, one missing);
``murmur``  tensorstore raw, murmurhash3 sharding (shards are not boxes);
``cseg``    tensorstore compressed_segmentation, unsharded;
``cvraw``   cloud-volume raw, unsharded, written without cloud-files compression.

Request budgets (HTTP requests seen by the server; see ``WHOLE``/``RANGED`` below):

* a whole object (``info``, a whole shard, an unsharded chunk) costs ``WHOLE[backend]``:
  1 request everywhere. (s3fs's default ``max_concurrency > 1`` would add a HEAD before each
  whole-object GET, and a HEAD + LIST for a missing one; the Store sets ``max_concurrency=1``
  on S3 unless the caller chose otherwise.)  A *missing* whole object costs the same (404).
* a byte range costs 1 request everywhere (also when the object is missing);
* opening a volume reads only ``info``: ``WHOLE[backend]`` requests;
* reading exactly one box-shaped shard (a ``chunks={}`` Dask task, or a cutout equal to the
  shard box) fetches the whole shard file: ``WHOLE[backend]``;
* a small cutout inside one stored chunk of a sharded volume costs 3 ranged GETs: shard
  index entry, minishard index, chunk data;
* an unsharded cutout touching ``k`` chunks costs ``k * WHOLE[backend]`` (present or not).
"""

from __future__ import annotations

import gzip
import itertools
import os
import socket
import time

import numpy as np
import pytest
import xarray as xr

from xarray_precomputed.errors import InfoNotFoundError, PrecomputedError, StorageError

from . import peers
from .process_probe import storage_calls

BACKENDS = ("s3", "gcs", "http")
# Requests for one whole object, found or missing (see module docstring).
WHOLE = {"s3": 1, "gcs": 1, "http": 1}
RANGED = 1
GZIP_MAGIC = b"\x1f\x8b"


def _pick(pred, what: str) -> peers.Case:
    for c in peers.all_cases():
        if pred(c):
            return c
    raise LookupError(f"tests/peers.py has no {what} case any more")


def _is_box(c: peers.Case) -> bool:
    box = peers.shard_box_chunks(c.sharding, c.grid_shape)
    return box is not None and any(g > b for g, b in zip(c.grid_shape, box))


VOLUMES = {
    "box": _pick(
        lambda c: (
            c.writer == "tensorstore"
            and c.encoding == "raw"
            and c.sharding is not None
            and c.sharding["hash"] == "identity"
            and c.sharding["minishard_index_encoding"] == "gzip"
            and c.sharding["data_encoding"] == "gzip"
            and _is_box(c)
        ),
        "tensorstore raw identity-box gzip sharded",
    ),
    "murmur": _pick(
        lambda c: (
            c.writer == "tensorstore"
            and c.encoding == "raw"
            and c.sharding is not None
            and c.sharding["hash"] == "murmurhash3_x86_128"
        ),
        "tensorstore raw murmurhash sharded",
    ),
    "cseg": _pick(
        lambda c: (
            c.writer == "tensorstore"
            and c.encoding == "compressed_segmentation"
            and c.sharding is None
        ),
        "tensorstore unsharded compressed_segmentation",
    ),
    "cvraw": _pick(
        lambda c: (
            c.writer == "cloudvolume"
            and c.encoding == "raw"
            and c.sharding is None
            and not c.compress
        ),
        "cloud-volume unsharded raw (no compression)",
    ),
}


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """name -> (case, local root, array read locally by xarray_precomputed)."""
    base = tmp_path_factory.mktemp("remote-volumes")
    out = {}
    for name, case in VOLUMES.items():
        root = str(base / name)
        expected = peers.write_volume(case, root)
        ds = xr.open_dataset(root, engine="precomputed")
        got = ds[case.layer_type].values
        np.testing.assert_array_equal(got, expected, strict=True)
        out[name] = (case, root, got)
    return out


class Remote:
    """One server with every volume uploaded once."""

    def __init__(self, name: str, server, urls: dict[str, str]):
        self.name = name
        self.server = server
        self.urls = urls
        self.storage_options = server.storage_options

    @property
    def whole(self) -> int:
        return WHOLE[self.name]

    def open(self, volume: str, **kwargs) -> xr.DataArray:
        case = VOLUMES[volume]
        kwargs.setdefault("storage_options", self.storage_options)
        ds = xr.open_dataset(self.urls[volume], engine="precomputed", **kwargs)
        return ds[case.layer_type]

    def measure(self, fn) -> tuple[object, list[tuple[str, str, str | None]]]:
        self.server.reset_counts()
        result = fn()
        return result, self.server.requests()


@pytest.fixture(scope="module")
def uploaded(request, local):
    """``uploaded(backend) -> Remote``: every volume uploaded once per backend."""
    cache: dict[str, Remote] = {}

    def get(backend: str) -> Remote:
        if backend not in cache:
            server = request.getfixturevalue(f"{backend}_server")
            urls = {name: server.upload_dir(root, name) for name, (_, root, _) in local.items()}
            cache[backend] = Remote(backend, server, urls)
        return cache[backend]

    return get


# Reads go through obstore where it can; "/fsspec" runs the same tests on the fsspec path
# (storage_options={"reader": "fsspec"}), which unusual options and writes still use.
READ_PATHS = (*BACKENDS, *(f"{b}/fsspec" for b in BACKENDS))


@pytest.fixture(params=READ_PATHS)
def remote(request, uploaded) -> Remote:
    backend, _, reader = request.param.partition("/")
    server = uploaded(backend)
    if not reader:
        return server
    copy = Remote(server.name, server.server, server.urls)
    copy.storage_options = {**server.storage_options, "reader": reader}
    return copy


def _cell_box(case: peers.Case, cell, box=(1, 1, 1)) -> dict[str, slice]:
    """Voxel slices of ``box`` chunks starting at chunk ``cell`` (clipped)."""
    return {
        d: slice(g * c, min((g + b) * c, n))
        for d, g, b, c, n in zip("xyz", cell, box, case.chunk_size, case.size)
    }


def _sel(sel: dict[str, slice]) -> tuple[slice, ...]:
    return tuple(sel.get(d, slice(None)) for d in ("x", "y", "z", "channel"))


def _path(req) -> str:
    return req[1].split("?")[0]


# ---------------------------------------------------------------------------------------------
# correctness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("volume", list(VOLUMES))
def test_remote_read_equals_local(remote: Remote, local, volume: str):
    _, _, want = local[volume]
    url = remote.urls[volume]
    assert "://" in url
    np.testing.assert_array_equal(remote.open(volume).values, want, strict=True)
    ds = xr.open_dataset(
        "precomputed://" + url, engine="precomputed", storage_options=remote.storage_options
    )
    assert ds.attrs["url"] == url
    np.testing.assert_array_equal(ds[VOLUMES[volume].layer_type].values, want, strict=True)
    # guess_can_open recognises the prefix: no engine= needed
    ds = xr.open_dataset("precomputed://" + url, storage_options=remote.storage_options)
    var = ds[VOLUMES[volume].layer_type]
    np.testing.assert_array_equal(var[5:30, 3:20, 1:9].values, want[5:30, 3:20, 1:9], strict=True)


@pytest.mark.parametrize("volume", ["box", "murmur"])
def test_remote_read_with_dask(remote: Remote, local, volume: str):
    _, _, want = local[volume]
    var = remote.open(volume, chunks={})
    np.testing.assert_array_equal(var.values, want, strict=True)


# ---------------------------------------------------------------------------------------------
# request budgets
# ---------------------------------------------------------------------------------------------


def test_open_reads_only_info(remote: Remote):
    var, reqs = remote.measure(lambda: remote.open("box", chunks={}))
    assert len(reqs) == remote.whole, reqs
    assert all(_path(r).endswith("info") for r in reqs), reqs
    tree, reqs = remote.measure(
        lambda: xr.open_datatree(
            remote.urls["box"],
            engine="precomputed",
            chunks={},
            storage_options=remote.storage_options,
        )
    )
    assert len(reqs) == remote.whole, reqs


def test_whole_box_shard_is_one_request(remote: Remote, local):
    case, root, want = local["box"]
    box = peers.shard_box_chunks(case.sharding, case.grid_shape)
    shard0 = peers.shard_filename(case.sharding, 0)
    assert os.path.exists(os.path.join(root, peers.SCALE_KEY, shard0))
    sel = _cell_box(case, (0, 0, 0), box)

    var = remote.open("box", chunks={})
    assert var.data.chunksize[:3] == tuple(s.stop for s in sel.values())
    block, reqs = remote.measure(lambda: var.data.blocks[0, 0, 0, 0].compute())
    np.testing.assert_array_equal(block, want[_sel(sel)], strict=True)
    assert len(reqs) == remote.whole, reqs
    get = [r for r in reqs if r[0] == "GET"]
    assert len(get) == 1 and get[0][2] is None, reqs  # one GET of the whole file, no Range
    assert shard0 in get[0][1]

    # The same box through the lazy (non-Dask) path.
    lazy = remote.open("box")
    cut, reqs = remote.measure(lambda: lazy.isel(sel).values)
    np.testing.assert_array_equal(cut, want[_sel(sel)], strict=True)
    assert len(reqs) == remote.whole, reqs

    # The whole volume with Dask: one task and one whole-object read per shard box (the
    # missing shard costs the same: a 404).
    n_blocks = int(np.prod(var.data.numblocks))
    n_files = len(peers.expected_files(case, want))
    assert n_files < n_blocks  # make_data leaves one shard file out
    values, reqs = remote.measure(lambda: var.values)
    np.testing.assert_array_equal(values, want, strict=True)
    assert len(reqs) == n_blocks * remote.whole, reqs
    assert all(r[2] is None for r in reqs), reqs
    values, reqs = remote.measure(lambda: lazy.values)  # same without Dask
    np.testing.assert_array_equal(values, want, strict=True)
    assert len(reqs) == n_blocks * remote.whole, reqs


def _stored_cell(case: peers.Case) -> tuple[int, int, int]:
    zero = set(peers.zero_cells(case))
    for cell in itertools.product(*(range(g) for g in case.grid_shape)):
        if cell not in zero:
            return cell
    raise AssertionError("no stored chunk")


@pytest.mark.parametrize("volume", ["box", "murmur"])
def test_small_cutout_in_shard_is_three_ranged_gets(remote: Remote, local, volume: str):
    case, _, want = local[volume]
    cell = _stored_cell(case)
    chunk = _cell_box(case, cell)
    sel = {d: slice(s.start + 1, min(s.start + 3, s.stop)) for d, s in chunk.items()}
    # Lazy and Dask alike (Dask fuses the cutout into the block's getter, so a task does not
    # fetch its whole shard box).
    for chunks in (None, {}):
        var = remote.open(volume, chunks=chunks)
        cut, reqs = remote.measure(lambda var=var: var.isel(sel).values)
        np.testing.assert_array_equal(cut, want[_sel(sel)], strict=True)
        # shard index entry, minishard index, chunk data
        assert len(reqs) == 3 * RANGED, (chunks, reqs)
        assert all(r[0] == "GET" and r[2] is not None for r in reqs), reqs
        assert len({_path(r) for r in reqs}) == 1, reqs
        first, last = (int(v) for v in reqs[0][2].removeprefix("bytes=").split("-"))
        assert last - first + 1 == 16  # one 16-byte shard index entry
    var = remote.open(volume)

    # A cutout in a shard file that does not exist: a single (404) ranged GET.
    if volume == "box":
        last_cell = tuple(g - 1 for g in case.grid_shape)
        assert last_cell in set(peers.zero_cells(case))
        sel = _cell_box(case, last_cell)
        cut, reqs = remote.measure(lambda: var.isel(sel).values)
        assert not cut.any()
        assert len(reqs) == RANGED, reqs


def _murmur_whole_read_budget(case: peers.Case, want) -> int:
    """Requests for a whole read of the murmur volume: per shard file its index entries,
    its minishard indexes and its chunk data; one (404) index read per missing shard."""
    grid = case.grid_shape
    shards = {
        peers.shard_number(case.sharding, peers.compressed_morton_code(cell, grid))
        for cell in itertools.product(*(range(g) for g in grid))
    }
    n_files = len(peers.expected_files(case, want))
    return 3 * n_files + (len(shards) - n_files)


def test_whole_murmur_volume_is_three_ranged_gets_per_shard(remote: Remote, local):
    """A lazy whole read of non-box shards: per shard file one read of the needed index
    entries, one (coalesced) read of the minishard indices, one (coalesced) read of the
    chunk data; a shard file that does not exist costs its one (404) index read."""
    case, _, want = local["murmur"]
    var = remote.open("murmur")
    values, reqs = remote.measure(lambda: var.values)
    np.testing.assert_array_equal(values, want, strict=True)
    assert len(reqs) == _murmur_whole_read_budget(case, want), reqs
    assert all(r[2] is not None for r in reqs), reqs


def _cutout_2x2x2(case: peers.Case) -> tuple[dict[str, slice], int]:
    """A cutout straddling chunk boundaries and the number of chunks it touches."""
    sel, k = {}, 1
    for d, c, n in zip("xyz", case.chunk_size, case.size):
        start = c // 2
        stop = min(n, start + c + 1)
        sel[d] = slice(start, stop)
        k *= (stop - 1) // c - start // c + 1
    return sel, k


@pytest.mark.parametrize("volume", ["cseg", "cvraw"])
def test_unsharded_cutout_is_one_request_per_chunk(remote: Remote, local, volume: str):
    case, _, want = local[volume]
    sel, k = _cutout_2x2x2(case)
    assert k == 8
    for chunks in (None, {}):
        var = remote.open(volume, chunks=chunks)
        cut, reqs = remote.measure(lambda var=var: var.isel(sel).values)
        np.testing.assert_array_equal(cut, want[_sel(sel)], strict=True)
        assert len(reqs) == k * remote.whole, (chunks, reqs)
        assert all(r[2] is None for r in reqs), reqs  # whole-object reads, no ranges
        # one object per chunk (S3's LIST for a missing key names the bucket, not the key)
        assert len({_path(r) for r in reqs if "list-type=" not in r[1]}) == k, reqs


def test_s3_single_get_with_max_concurrency_1(s3_server, uploaded, local):
    """An explicit ``max_concurrency=1`` (the Store's default on S3) gives one GET per object."""
    remote = uploaded("s3")
    opts = dict(s3_server.storage_options, max_concurrency=1)
    var, reqs = remote.measure(lambda: remote.open("box", chunks={}, storage_options=opts))
    assert len(reqs) == 1 and reqs[0][0] == "GET", reqs
    _, reqs = remote.measure(lambda: var.data.blocks[0, 0, 0, 0].compute())
    assert len(reqs) == 1 and reqs[0][0] == "GET", reqs
    case, _, want = local["cvraw"]
    sel, k = _cutout_2x2x2(case)
    var = remote.open("cvraw", storage_options=opts)
    cut, reqs = remote.measure(lambda: var.isel(sel).values)
    np.testing.assert_array_equal(cut, want[_sel(sel)], strict=True)
    # present chunks: one GET; absent chunks: GET 404 (no LIST)
    assert len(reqs) == k, reqs


# ---------------------------------------------------------------------------------------------
# Content-Encoding: gzip (cloud-files convention for unsharded chunks)
# ---------------------------------------------------------------------------------------------


def _upload_gzip_encoded(remote: Remote, root: str, name: str) -> str:
    """Upload the volume at ``root`` with every chunk object gzip-compressed and marked
    ``Content-Encoding: gzip`` (``info`` stays plain); returns the URL."""
    server = remote.server
    if remote.name == "http":
        url = server.upload_dir(root, name + "-gz")
        prefix = url[len(server.endpoint_url) :]
        for dirpath, _, files in os.walk(os.path.join(root, peers.SCALE_KEY)):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    server.serve_gzip_encoded(f"{prefix}/{peers.SCALE_KEY}/{f}", fh.read())
        return url
    url = server.new_url(name + "-gz")
    fs = server.fs()
    base = url.split("://", 1)[1]
    for dirpath, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            with open(os.path.join(dirpath, f), "rb") as fh:
                data = fh.read()
            if not rel.startswith(peers.SCALE_KEY + "/"):
                fs.pipe_file(f"{base}/{rel}", data)
            elif remote.name == "s3":
                fs.pipe_file(f"{base}/{rel}", gzip.compress(data), ContentEncoding="gzip")
            else:
                fs.pipe_file(
                    f"{base}/{rel}",
                    gzip.compress(data),
                    fixed_key_metadata={"content_encoding": "gzip"},
                )
    if remote.name == "s3":
        # S3 hands the stored bytes back still gzipped: the reader must sniff the magic.
        some = next(p for p in fs.find(f"{base}/{peers.SCALE_KEY}"))
        assert fs.cat_file(some)[:2] == GZIP_MAGIC
    return url


@pytest.mark.parametrize("volume", ["cvraw", "cseg"])
def test_gzip_content_encoded_chunks(remote: Remote, local, volume: str):
    case, root, want = local[volume]
    url = _upload_gzip_encoded(remote, root, volume)
    ds = xr.open_dataset(url, engine="precomputed", storage_options=remote.storage_options)
    var = ds[case.layer_type]
    values, reqs = remote.measure(lambda: var.values)
    np.testing.assert_array_equal(values, want, strict=True)
    n_chunks = int(np.prod(case.grid_shape))
    assert len(reqs) == n_chunks * remote.whole, reqs
    sel, _ = _cutout_2x2x2(case)
    np.testing.assert_array_equal(var.isel(sel).values, want[_sel(sel)], strict=True)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("prefix", ["", "precomputed://"])
def test_unreachable_http_raises_storage_error_quickly(prefix: str):
    url = f"http://127.0.0.1:{_closed_port()}/vol"
    t0 = time.monotonic()
    with pytest.raises(PrecomputedError) as info:
        xr.open_dataset(prefix + url, engine="precomputed")
    elapsed = time.monotonic() - t0
    assert isinstance(info.value, StorageError), repr(info.value)
    assert isinstance(info.value, OSError)
    assert url + "/info" in str(info.value)
    assert "Connection refused" in str(info.value)  # the cause, not only "error sending request"
    # refused connections are retried for the default connect_timeout (5 s), then given up
    # on: the bound is that budget plus the last attempt, with room for a busy machine
    assert elapsed < 6.5, elapsed


def test_missing_volume_raises_info_not_found(remote: Remote):
    url = remote.urls["box"] + "-does-not-exist"
    with pytest.raises(InfoNotFoundError) as info:
        xr.open_dataset(url, engine="precomputed", storage_options=remote.storage_options)
    assert isinstance(info.value, FileNotFoundError)
    assert url + "/info" in str(info.value)


# ---------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------


def test_distributed_read_from_s3(s3_server, local, process_client):
    results = {}
    urls = {v: s3_server.upload_dir(local[v][1], v) for v in ("box", "murmur")}
    for volume, url in urls.items():
        case = VOLUMES[volume]
        ds = xr.open_dataset(
            url, engine="precomputed", chunks={}, storage_options=s3_server.storage_options
        )
        var = ds[case.layer_type]
        s3_server.reset_counts()
        with storage_calls(process_client) as calls:
            results[volume] = var.compute().values
        # the reads happened in the worker processes, not here ...
        assert calls.here == {}, calls.here
        assert sum(calls.in_workers().values()) > 0, calls.workers
        # ... within the request budget: one whole-shard GET per box-shaped block (a
        # missing shard is one 404), and no more than a whole lazy read per murmur block
        n_blocks = int(np.prod(var.data.numblocks))
        if volume == "box":
            budget = n_blocks * WHOLE["s3"]
        else:
            budget = n_blocks * _murmur_whole_read_budget(case, local[volume][2])
        assert 0 < s3_server.count() <= budget, (volume, s3_server.requests())
    for volume, got in results.items():
        np.testing.assert_array_equal(got, local[volume][2], strict=True)
