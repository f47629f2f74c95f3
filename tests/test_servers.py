"""Self-tests of the loopback storage servers in ``servers.py`` / ``conftest.py``.

Measured request counts (fsspec 2026.9, s3fs 2026.9, gcsfs 2026.10):

=====================  ==================  =====  ====
operation              s3 (moto)           gcs    http
=====================  ==================  =====  ====
whole ``cat_file``     2 (HEAD + GET) [1]  1 GET  1 GET
ranged ``cat_file``    1 GET               1 GET  1 GET
missing ``cat_file``   2 (HEAD + LIST)     1 GET  1 GET
small ``pipe_file``    1 PUT               1 POST  --
=====================  ==================  =====  ====

[1] one GET with ``max_concurrency=1``.
"""

import gzip
import os
import urllib.parse

import fsspec
import pytest

pytestmark = pytest.mark.timeout(120)

SERVERS = ["s3_server", "gcs_server", "http_server"]
WRITABLE = ["s3_server", "gcs_server"]

CHUNK = bytes(range(256)) * 4
INFO = b'{"type": "image"}'

# (count, methods) per operation and server
WHOLE = {"s3_server": ["HEAD", "GET"], "gcs_server": ["GET"], "http_server": ["GET"]}
MISSING = {"s3_server": ["HEAD", "GET"], "gcs_server": ["GET"], "http_server": ["GET"]}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    (root / "info").write_bytes(INFO)
    (root / "8_8_8").mkdir()
    (root / "8_8_8" / "0-64_0-64_0-64").write_bytes(CHUNK)
    (root / "8_8_8" / "deeper").mkdir()
    (root / "8_8_8" / "deeper" / "0.shard").write_bytes(b"shard")
    (root / "empty").write_bytes(b"")
    return root


@pytest.fixture(params=SERVERS)
def server(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=WRITABLE)
def writable_server(request):
    return request.getfixturevalue(request.param)


def _fs(url, server):
    return fsspec.core.url_to_fs(url, skip_instance_cache=True, **server.storage_options)


def _name(server):
    return {"S3Server": "s3_server", "GCSServer": "gcs_server", "HTTPServer": "http_server"}[
        type(server).__name__
    ]


def test_gcsfs_hns_lookup_disabled():
    assert os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"


def test_loopback_only(server):
    assert urllib.parse.urlsplit(server.endpoint_url).hostname == "127.0.0.1"


def test_upload_dir_layout_and_unique_prefix(server, sample_dir):
    url1 = server.upload_dir(str(sample_dir), "layout")
    url2 = server.upload_dir(str(sample_dir), "layout")
    assert url1 != url2
    assert not url1.endswith("/")
    fs, root = _fs(url1, server)
    for rel, data in [
        ("info", INFO),
        ("8_8_8/0-64_0-64_0-64", CHUNK),
        ("8_8_8/deeper/0.shard", b"shard"),
        ("empty", b""),
    ]:
        assert fs.cat_file(f"{root}/{rel}") == data


def test_whole_ranged_and_missing_reads(server, sample_dir):
    name = _name(server)
    url = server.upload_dir(str(sample_dir), "reads")
    fs, root = _fs(url, server)

    server.reset_counts()
    assert fs.cat_file(f"{root}/info") == INFO
    assert [m for m, _, _ in server.requests()] == WHOLE[name]
    assert server.count() == len(WHOLE[name])

    server.reset_counts()
    assert fs.cat_file(f"{root}/8_8_8/0-64_0-64_0-64", start=10, end=20) == CHUNK[10:20]
    assert server.count() == 1
    ((method, path, rng),) = server.requests()
    assert method == "GET"
    assert rng == "bytes=10-19"
    assert "0-64_0-64_0-64" in urllib.parse.unquote(path)

    server.reset_counts()
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/8_8_8/missing")
    assert [m for m, _, _ in server.requests()] == MISSING[name]

    server.reset_counts()
    assert server.count() == 0
    assert server.requests() == []


def test_s3_whole_read_single_get_without_concurrency(s3_server, sample_dir):
    url = s3_server.upload_dir(str(sample_dir), "one-get")
    fs, root = fsspec.core.url_to_fs(
        url, skip_instance_cache=True, max_concurrency=1, **s3_server.storage_options
    )
    s3_server.reset_counts()
    assert fs.cat_file(f"{root}/info") == INFO
    assert [m for m, _, _ in s3_server.requests()] == ["GET"]


def test_cat_ranges_one_request_per_range(server, sample_dir):
    url = server.upload_dir(str(sample_dir), "ranges")
    fs, root = _fs(url, server)
    path = f"{root}/8_8_8/0-64_0-64_0-64"
    server.reset_counts()
    out = fs.cat_ranges([path] * 3, [0, 100, 1000], [4, 104, 1024])
    assert out == [CHUNK[0:4], CHUNK[100:104], CHUNK[1000:1024]]
    assert sorted(r for _, _, r in server.requests()) == [
        "bytes=0-3",
        "bytes=100-103",
        "bytes=1000-1023",
    ]


def test_write_read_round_trip(writable_server):
    url = writable_server.new_url("roundtrip")
    assert url != writable_server.new_url("roundtrip")
    fs, root = _fs(url, writable_server)
    assert not fs.exists(f"{root}/a/b")

    writable_server.reset_counts()
    fs.pipe_file(f"{root}/a/b", b"payload")
    assert writable_server.count() == 1
    ((method, _, _),) = writable_server.requests()
    assert method in ("PUT", "POST")

    fs2, root2 = _fs(url, writable_server)  # a fresh instance sees the write
    assert fs2.cat_file(f"{root2}/a/b") == b"payload"
    assert fs2.cat_file(f"{root2}/a/b", start=3, end=5) == b"lo"
    assert fs2.find(root2) == [f"{root2}/a/b"]


def test_gcs_resumable_upload_goes_through_proxy(gcs_server):
    # Upload sessions follow the Location header; it must point at the counting proxy.
    fs, root = _fs(gcs_server.new_url("resumable"), gcs_server)
    data = os.urandom(2**20)
    gcs_server.reset_counts()
    fs.pipe_file(f"{root}/big", data, chunksize=2**18)
    reqs = gcs_server.requests()
    assert len(reqs) == 5  # initiate + 4 chunks of 256 KiB
    assert all("uploadType=resumable" in path for _, path, _ in reqs)
    assert fs.cat_file(f"{root}/big") == data


def test_gcs_survives_many_requests(gcs_server, sample_dir):
    # fake-gcs-server blocks once its unread stderr pipe fills (~500 requests with the
    # wrapper's FakeGCSServer); ours logs to a file.
    url = gcs_server.upload_dir(str(sample_dir), "many")
    fs, root = _fs(url, gcs_server)
    path = f"{root}/8_8_8/0-64_0-64_0-64"
    n = 600
    gcs_server.reset_counts()
    out = fs.cat_ranges([path] * n, [i % 1000 for i in range(n)], [i % 1000 + 1 for i in range(n)])
    assert out == [CHUNK[i % 1000 : i % 1000 + 1] for i in range(n)]
    assert gcs_server.count() == n


def test_http_gzip_content_encoding(http_server):
    raw = b"compressed chunk " * 200
    url = http_server.serve_gzip_encoded("gz/0-64_0-64_0-64", raw)
    assert url == f"{http_server.endpoint_url}/gz/0-64_0-64_0-64"
    fs, path = _fs(url, http_server)
    http_server.reset_counts()
    assert fs.cat_file(path) == raw
    assert http_server.requests() == [("GET", "/gz/0-64_0-64_0-64", None)]

    # the body on the wire really is gzip with the header set
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(resp.read()) == raw

    pre = gzip.compress(b"already")
    url2 = http_server.serve_gzip_encoded("/gz/pre", pre, already_compressed=True)
    assert fs.cat_file(_fs(url2, http_server)[1]) == b"already"


def test_http_is_range_aware_not_whole_file(http_server, sample_dir):
    # guard against a server that ignores Range (fsspec would silently return everything)
    url = http_server.upload_dir(str(sample_dir), "range-guard")
    fs, root = _fs(url, http_server)
    assert fs.cat_file(f"{root}/8_8_8/0-64_0-64_0-64", start=-4) == CHUNK[-4:]
    assert fs.size(f"{root}/8_8_8/0-64_0-64_0-64") == len(CHUNK)
