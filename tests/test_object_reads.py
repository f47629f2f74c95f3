"""The obstore read path: when it is chosen, what its errors mean, and fsspec's semantics
(short reads past the end, servers without Range), against real loopback servers."""

from __future__ import annotations

import http.server
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from xarray_precomputed.errors import StorageError
from xarray_precomputed.object_reads import (
    ObjectReader,
    bucket_region,
    open_reader,
    translate_error,
)
from xarray_precomputed.retry import RetryPolicy, classify
from xarray_precomputed.storage import Store

from .servers import threaded_http_server

pytest.importorskip("obstore")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /status/NNN, /slow (sleeps 3 s), anything else 200 + 10 bytes."""

    def do_GET(self) -> None:
        if self.path.startswith("/v/status/"):
            self.send_response(int(self.path.rsplit("/", 1)[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/v/slow":
            time.sleep(3)
        body = bytes(range(10))  # Range is ignored, as by some simple servers
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client timed out (test_timeout_is_transient)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def plain_server():
    with threaded_http_server(_Handler) as url:
        yield url


def _reader(url: str, **policy) -> ObjectReader:
    reader = open_reader(url, {}, RetryPolicy(**policy), None)
    assert isinstance(reader, ObjectReader)
    return reader


@pytest.mark.parametrize(("status", "kind"), [(503, "transient"), (429, "transient"),
                                               (403, "final"), (400, "final")])  # fmt: skip
def test_statuses_are_classified(plain_server, status, kind):
    reader = _reader(plain_server + "/v")
    with pytest.raises(Exception) as e:
        reader.cat_file(f"v/status/{status}")
    assert getattr(e.value, "status", None) == status
    assert classify(e.value) == kind
    assert "\n" not in str(e.value)  # one line, not obstore's debug dump


def test_missing_object_is_file_not_found(http_server):
    reader = _reader(http_server.endpoint_url + "/v")
    with pytest.raises(FileNotFoundError):
        reader.cat_file("v/nothing-here")
    assert reader.exists("v/nothing-here") is False
    assert Store(http_server.endpoint_url + "/v").get("nothing-here") is None


def test_refused_connection_is_unreachable():
    reader = _reader("http://127.0.0.1:9/v")
    with pytest.raises(ConnectionRefusedError) as e:
        reader.cat_file("v/info")
    assert classify(e.value) == "unreachable"


def test_refused_connection_says_why():
    reader = _reader("http://127.0.0.1:9/v")
    with pytest.raises(ConnectionRefusedError, match="tcp connect error: Connection refused"):
        reader.cat_file("v/info")


# obstore 0.12's text for a host that does not resolve (its debug part, abridged): the first
# line says only "error sending request"
_DNS_FAILURE = """Generic HTTP error: Error performing GET https://nowhere.invalid/v/info in 1ms - \
HTTP error: error sending request

Debug source:
Generic {
    store: "HTTP",
    source: RetryError(RetryErrorImpl {
        method: GET,
        inner: Http(HttpError {
            kind: Connect,
            source: reqwest::Error {
                kind: Request,
                source: hyper_util::client::legacy::Error(
                    Connect,
                    ConnectError(
                        "dns error",
                        Custom {
                            kind: Uncategorized,
                            error: "failed to lookup address information: Name or service not known",
                        },
                    ),
                ),
            },
        }),
    }),
}"""


def test_unknown_host_says_dns():
    e = translate_error(RuntimeError(_DNS_FAILURE))
    assert isinstance(e, ConnectionRefusedError) and classify(e) == "unreachable"
    assert str(e).startswith(
        "dns error: failed to lookup address information: Name or service not known (Generic"
    )
    assert "\n" not in str(e)


def test_unreachable_endpoint_fails_fast_with_advice():
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot reach .*info.*check the URL"):
        Store("http://127.0.0.1:9/v", {"retry": {"connect_timeout": 1}}).get("info")
    assert time.monotonic() - t0 < 10


def test_timeout_is_transient(plain_server):
    reader = _reader(plain_server + "/v", timeout=1.0, connect_timeout=1.0)
    with pytest.raises(TimeoutError) as e:
        reader.cat_file("v/slow")
    assert classify(e.value) == "transient"


def test_ranges_read_short_past_the_end(http_server):
    (http_server.root / "short").mkdir()
    (http_server.root / "short" / "obj").write_bytes(bytes(range(10)))
    reader = _reader(http_server.endpoint_url + "/short")
    assert bytes(reader.cat_file("short/obj", 5, 20)) == bytes(range(5, 10))
    assert bytes(reader.cat_file("short/obj", 12, 20)) == b""  # HTTP 416
    got = reader.cat_ranges(["short/obj", "short/obj", "short/none"], [0, 10, 0], [3, 20, 4])
    assert bytes(got[0]) == b"\x00\x01\x02" and bytes(got[1]) == b""
    assert isinstance(got[2], FileNotFoundError)


def test_server_without_range_support(plain_server):
    reader = _reader(plain_server + "/v")
    assert bytes(reader.cat_file("v/obj", 2, 5)) == b"\x02\x03\x04"
    got = reader.cat_ranges(["v/a", "v/b"], [1, 8], [3, 10])
    assert [bytes(g) for g in got] == [b"\x01\x02", b"\x08\x09"]


def test_concurrent_batches_from_many_threads(http_server):
    (http_server.root / "many").mkdir()
    for i in range(8):
        (http_server.root / "many" / str(i)).write_bytes(bytes([i]) * 1000)
    store = Store(http_server.endpoint_url + "/many")

    def batch(i: int) -> list[bytes]:
        keys = [str((i + j) % 8) for j in range(4)]
        return [bytes(b[:1]) for b in store.get_many(keys)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batch, range(32)))
    assert all(r == [bytes([(i + j) % 8]) for j in range(4)] for i, r in enumerate(results))
    assert isinstance(store.read_fs, ObjectReader)


def test_which_reader(http_server, s3_server, monkeypatch, tmp_path):
    url = http_server.endpoint_url + "/v"
    assert isinstance(Store(url).read_fs, ObjectReader)
    # Options obstore cannot honour keep fsspec (aiohttp's headers, botocore's profiles).
    assert not isinstance(Store(url, {"headers": {"X-A": "1"}}).read_fs, ObjectReader)
    assert not isinstance(Store(url, {"reader": "fsspec"}).read_fs, ObjectReader)
    s3 = s3_server.new_url("which")
    assert isinstance(Store(s3, s3_server.storage_options).read_fs, ObjectReader)
    assert not isinstance(Store(s3, {**s3_server.storage_options, "profile": "x"}).read_fs,
                          ObjectReader)  # fmt: skip
    monkeypatch.setenv("AWS_PROFILE", "somebody")
    opts = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    assert not isinstance(Store(s3, opts).read_fs, ObjectReader)
    with pytest.raises(StorageError, match=r"reader.*obstore.*needs fsspec"):
        Store(url, {"headers": {"X-A": "1"}, "reader": "obstore"}).read_fs
    with pytest.raises(StorageError, match=r"reader"):
        Store(url, {"reader": "rust"})
    with pytest.raises(StorageError, match=r"reader.*'obstor'"):  # a local path too
        Store(str(tmp_path), {"reader": "obstor"})


def test_bucket_region_from_the_endpoint(s3_server):
    assert bucket_region(s3_server.bucket, s3_server.endpoint_url) == "us-east-1"


def test_reads_equal_through_both_paths(s3_server, gcs_server, http_server, tmp_path):
    data = bytes(range(256)) * 64
    (tmp_path / "obj").write_bytes(data)
    for server in (s3_server, gcs_server, http_server):
        url = server.upload_dir(tmp_path, "both")
        got = {}
        for reader in ("obstore", "fsspec"):
            store = Store(url, {**server.storage_options, "reader": reader})
            got[reader] = (
                store.get("obj"),
                [bytes(b) for b in store.get_ranges([("obj", 5, 300), ("obj", 16000, 17000)])],
                store.exists("obj"),
                store.exists("none"),
            )
        assert got["obstore"] == got["fsspec"], server
        assert got["obstore"][0] == data and got["obstore"][1][1] == data[16000:]


def test_volumes_on_one_server_share_a_client(http_server, s3_server):
    """One obstore client (and connection pool) per server and configuration."""
    a = Store(http_server.endpoint_url + "/a").read_fs
    b = Store(http_server.endpoint_url + "/b/c").read_fs
    assert a.store is b.store and (a.root, b.root) == ("a", "b/c")
    opts = s3_server.storage_options
    s1 = Store(s3_server.new_url("one"), opts).read_fs
    s2 = Store(s3_server.new_url("two"), opts).read_fs
    assert s1.store is s2.store and s1.store is not a.store
    other = Store(s3_server.new_url("three"), {**opts, "retry": {"timeout": 7}}).read_fs
    assert other.store is not s1.store  # another timeout: another client
