"""Transient failures, give-up bounds, unreachable endpoints and quiet logging.

A fault-injecting proxy (tests/faults.py) sits in front of the real loopback servers and
answers the first requests with 503/429/502 or drops the connection; reads must succeed
through that, and give up with a :class:`StorageError` naming the object, the attempts and
the last status when the failures do not stop.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

from xarray_precomputed.errors import StorageError
from xarray_precomputed.retry import RetryPolicy, classify
from xarray_precomputed.storage import Store

from . import faults, servers

FAST = {"backoff": 0.005, "max_backoff": 0.02}


@pytest.fixture(scope="module")
def volume(ts, tmp_path_factory):
    """A small tensorstore-written sharded volume (2 shards) and its data."""
    root = tmp_path_factory.mktemp("retry-volume")
    data = np.random.default_rng(5).integers(0, 255, (64, 64, 32, 1), dtype=np.uint8)
    sharding = {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
                "preshift_bits": 0, "minishard_bits": 1, "shard_bits": 2,
                "minishard_index_encoding": "gzip", "data_encoding": "raw"}  # fmt: skip
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(root)},
         "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
         "scale_metadata": {"size": [64, 64, 32], "encoding": "raw", "chunk_size": [16, 16, 16],
                            "resolution": [1, 1, 1], "sharding": sharding}},
        create=True,
    ).result()  # fmt: skip
    store[...].write(data).result()
    return root, data


def _behind_proxy(server, url: str, proxy: faults.FaultProxy):
    """The URL and storage options that reach ``url`` of ``server`` through ``proxy``."""
    opts = dict(server.storage_options)
    if url.startswith("s3://"):
        opts["client_kwargs"] = {"endpoint_url": proxy.url}
        return url, opts
    if url.startswith("gs://"):
        return url, {**opts, "endpoint_url": proxy.url}
    return proxy.url + url[len(server.endpoint_url) :], opts


@pytest.fixture(params=["http", "s3", "gcs"])
def proxied(request, volume):
    """(url, storage_options, proxy) of the volume on one server, behind a fault proxy."""
    server = request.getfixturevalue(f"{request.param}_server")
    url = server.upload_dir(volume[0], "retry")
    upstream = getattr(server, "upstream_url", server.endpoint_url)
    proxy = faults.FaultProxy(upstream)
    proxy.gcs_public_host = getattr(server, "public_host", None)
    try:
        yield (*_behind_proxy(server, url, proxy), proxy)
    finally:
        proxy.close()


def _read(url, opts, sel=...):
    ds = xr.open_dataset(url, engine="precomputed", storage_options=opts)
    return ds.image[sel].values if sel is not ... else ds.image.values


def test_reads_succeed_through_transient_failures(proxied, volume):
    url, opts, proxy = proxied
    opts = {**opts, "retry": FAST}
    # info, then a shard index, minishard index and chunk, each failing first.
    proxy.inject("503", "reset", "429", "502", "500", "504")
    got = _read(url, opts, (slice(0, 16), slice(0, 16), slice(0, 16)))
    np.testing.assert_array_equal(got, volume[1][:16, :16, :16])
    assert proxy.injected() == ["503", "reset", "429", "502", "500", "504"]
    # A whole-volume read (whole shards, ranges batched) with faults in between.
    proxy.inject("503", "503", "reset", "429")
    np.testing.assert_array_equal(_read(url, opts), volume[1])
    assert len(proxy.injected()) == 4


def test_gives_up_after_bounded_attempts(proxied):
    url, opts, proxy = proxied
    proxy.inject(always="503")
    t0 = time.monotonic()
    with pytest.raises(StorageError) as e:
        _read(url, {**opts, "retry": {**FAST, "attempts": 3}})
    msg = str(e.value)
    assert "info" in msg and "3 attempt(s)" in msg and "HTTP 503" in msg, msg
    assert len(proxy.seen) <= 3 * 6  # gcsfs adds its own tries within each of ours
    assert time.monotonic() - t0 < 60


def test_gives_up_within_the_time_budget(proxied):
    url, opts, proxy = proxied
    proxy.inject(always="429")
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"after \d+ attempt\(s\) in") as e:
        _read(url, {**opts, "retry": {"attempts": 1000, "backoff": 0.05, "timeout": 3.0}})
    # a bound, not a speed: 1000 attempts would take far longer
    assert time.monotonic() - t0 < 15
    assert len(proxy.seen) < 1000
    if "gave up" in str(e.value):  # else the (slow) first connection used up the budget
        assert "HTTP 429" in str(e.value)


def test_final_errors_are_not_retried(proxied):
    url, opts, proxy = proxied
    proxy.inject(always="403")
    with pytest.raises(StorageError, match="403|Forbidden"):
        _read(url, {**opts, "retry": FAST})
    assert len(proxy.seen) <= 2  # 403 is final (gcsfs may try once more on its own)


def test_stalled_request_meets_the_deadline(proxied, volume):
    url, opts, proxy = proxied
    proxy.inject("stall:4")
    t0 = time.monotonic()
    with pytest.raises(StorageError):
        _read(url, {**opts, "retry": {"timeout": 1.0, "connect_timeout": 1.0}})
    assert time.monotonic() - t0 < 10


def _closed_port_urls() -> dict[str, tuple[str, dict]]:
    port = servers._free_port()  # nothing listens there
    ep = f"http://127.0.0.1:{port}"
    return {
        "http": (f"{ep}/vol", {}),
        "s3": (
            "s3://bucket/vol",
            {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": ep}},
        ),
        "gcs": ("gs://bucket/vol", {"endpoint_url": ep, "token": "anon"}),
    }


@pytest.mark.parametrize("backend", ["http", "s3", "gcs"])
def test_unreachable_endpoint_fails_fast_quietly(backend):
    """In a fresh process with default logging: ~5 s, advice, and nothing else on stderr."""
    url, opts = _closed_port_urls()[backend]
    code = textwrap.dedent(f"""
        import json, time, xarray as xr
        from xarray_precomputed.errors import StorageError
        t0 = time.monotonic()
        try:
            xr.open_dataset({url!r}, engine="precomputed", storage_options={opts!r})
        except StorageError as e:
            print(json.dumps({{"seconds": time.monotonic() - t0, "error": str(e)}}))
    """)
    env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert proc.stdout, proc.stderr
    out = json.loads(proc.stdout)
    assert out["seconds"] < 15, out  # default connect_timeout 5 s, plus process overheads
    for hint in ("cannot reach", "check the URL", "network", "credentials", "anon"):
        assert hint in out["error"], out["error"]
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr


def test_retry_option_validation():
    with pytest.raises(ValueError, match="unknown retry option"):
        Store("s3://bucket/vol", {"retry": {"tries": 3}})
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy.from_option({"attempts": 0})
    assert Store("/tmp", {"retry": False}).retry.attempts == 1


def test_classify_exceptions():
    import aiohttp

    assert classify(FileNotFoundError("x")) == "final"
    assert classify(ConnectionResetError()) == "transient"
    assert classify(ConnectionRefusedError()) == "unreachable"
    err = aiohttp.ClientResponseError(None, (), status=503)
    assert classify(err) == "transient"
    assert classify(aiohttp.ClientResponseError(None, (), status=404)) == "final"
    try:
        try:
            raise err
        except Exception as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        assert classify(outer) == "transient"


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """``/v/delayed``: answers after 1.2 s; ``/v/trickle``: the body comes over 1.5 s."""

    protocol_version = "HTTP/1.1"
    body = bytes(range(256)) * 40

    def do_GET(self) -> None:
        if self.path == "/v/delayed":
            time.sleep(1.2)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        pieces = 10 if self.path == "/v/trickle" else 1
        step = len(self.body) // pieces
        try:
            for i in range(pieces):
                if pieces > 1:
                    time.sleep(0.15)
                self.wfile.write(self.body[i * step : (i + 1) * step if i < pieces - 1 else None])
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def slow_server():
    with servers.threaded_http_server(_SlowHandler) as url:
        yield url


@pytest.fixture
def blackhole():
    """A port whose listen queue is full: connections to it are neither refused nor made."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fill.append(c)
    time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    for c in (*fill, srv):
        c.close()


def _readers() -> list[str]:
    try:
        import obstore  # noqa: F401
    except ImportError:
        return ["fsspec"]
    return ["fsspec", "obstore"]


@pytest.mark.parametrize("reader", _readers())
@pytest.mark.parametrize("what", ["delayed", "trickle"])
def test_slow_first_read_is_not_cut_at_connect_timeout(slow_server, reader, what):
    """A fresh store's first read gets the whole timeout once the endpoint is connected."""
    store = Store(f"{slow_server}/v", {"reader": reader, "retry": {"connect_timeout": 0.5,
                                                                    "timeout": 10}})  # fmt: skip
    t0 = time.monotonic()
    assert store.get(what) == _SlowHandler.body
    assert time.monotonic() - t0 > 1.0


@pytest.mark.parametrize("reader", _readers())
def test_unconnectable_endpoint_fails_within_connect_timeout(blackhole, reader):
    store = Store(f"{blackhole}/v", {"reader": reader, "retry": {"connect_timeout": 0.5}})
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=rf"cannot reach {blackhole}/v/info: .*check the URL"):
        store.get("info")
    assert time.monotonic() - t0 < 2.5
