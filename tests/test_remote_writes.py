"""Remote writes and deletes under the retry policy, through the fault-injecting proxy.

The proxy (tests/faults.py) sits in front of moto S3 and fake-gcs-server and answers some
write requests (S3: PUT; GCS: POST uploads; deletes: DELETE) with 503 or drops the
connection. Writes must succeed through that, give up within the policy's bounds with a
:class:`StorageError` naming the object, the attempts and the last status, and not retry
final answers (403, a missing bucket). Requests are counted at the proxy, so retries
multiplied by a client library's own loop would show.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.conditional import update_object
from xarray_precomputed.errors import StorageError
from xarray_precomputed.resume import ResumingStore
from xarray_precomputed.storage import Store

from . import faults, servers
from .helpers import make_array, rand, sharding_dict

FAST = {"backoff": 0.005, "max_backoff": 0.02}
WRITES = {"PUT", "POST"}  # S3 puts; GCS uploads


def _through(server, proxy: faults.FaultProxy) -> dict:
    """Storage options that reach ``server`` through ``proxy``."""
    opts = dict(server.storage_options)
    if isinstance(server, servers.S3Server):
        opts["client_kwargs"] = {"endpoint_url": proxy.url}
    else:
        opts["endpoint_url"] = proxy.url
    return opts


@pytest.fixture(params=["s3", "gcs"])
def proxied(request):
    """(server, storage options through a fault proxy, proxy) for one writable server."""
    server = request.getfixturevalue(f"{request.param}_server")
    proxy = faults.FaultProxy(getattr(server, "upstream_url", server.endpoint_url))
    proxy.gcs_public_host = getattr(server, "public_host", None)
    try:
        yield server, _through(server, proxy), proxy
    finally:
        proxy.close()


def _writes(proxy: faults.FaultProxy) -> list[tuple[str, str]]:
    return [(m, path.split("?")[0]) for m, path, _, _ in proxy.seen if m in WRITES]


def test_volume_written_through_transient_failures(proxied):
    server, opts, proxy = proxied
    data = rand((48, 32, 16, 1), "uint16", seed=7)
    arr = make_array(data)
    url = server.new_url("retried-write")
    faulted = ["503", "reset", "503", "500", "reset", "429"]
    proxy.inject(*faulted, methods=WRITES)
    xp.to_precomputed(arr, url, chunk_size=(16, 16, 8), sharding=sharding_dict(0, 0, 2),
                      storage_options={**opts, "retry": FAST})  # fmt: skip
    assert proxy.injected() == faulted
    writes = _writes(proxy)
    # the info and 4 shards, and one more request for each fault
    assert len(writes) == 5 + len(faulted), writes
    if isinstance(server, servers.S3Server):  # (GCS uploads name the object in the body)
        assert len(set(writes)) == 5, writes
    got = xr.open_dataset(url, engine="precomputed", storage_options=server.storage_options)
    np.testing.assert_array_equal(got.image.values, data)


def test_write_gives_up_after_bounded_attempts(proxied):
    server, opts, proxy = proxied
    url = server.new_url("give-up")
    store = Store(url, {**opts, "retry": {**FAST, "attempts": 3, "timeout": 5}})
    proxy.inject(always="503", methods=WRITES)
    t0 = time.monotonic()
    with pytest.raises(StorageError) as e:
        store.put("8_8_8/0-64_0-64_0-64", b"x" * 1000)
    msg = str(e.value)
    assert f"cannot write {url}/8_8_8/0-64_0-64_0-64" in msg, msg
    assert "3 attempt(s)" in msg and "HTTP 503" in msg, msg
    assert time.monotonic() - t0 < 5
    assert len(_writes(proxy)) == 3  # ours only: no client library's retries within them


def test_write_gives_up_within_the_time_budget(proxied):
    server, opts, proxy = proxied
    store = Store(server.new_url("budget"), {**opts, "retry": {"attempts": 1000,
                                                               "backoff": 0.05, "timeout": 1.5}})  # fmt: skip
    proxy.inject(always="reset", methods=WRITES)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot write .*/info: gave up after \d+ attempt") as e:
        store.put("info", b"{}")
    assert time.monotonic() - t0 < 5
    attempts = int(re.search(r"after (\d+) attempt", str(e.value)).group(1))
    # aiohttp sends an idempotent request (an S3 PUT) once more on a dropped connection;
    # no other retries within ours
    assert attempts <= len(_writes(proxy)) <= 2 * attempts


def test_deletes_are_retried(proxied):
    server, opts, proxy = proxied
    url = server.new_url("delete")
    store = Store(url, {**opts, "retry": {**FAST, "attempts": 3}})
    store.put("a", b"abc")
    proxy.inject("503", "reset", methods={"DELETE"})
    store.delete("a")
    assert proxy.injected() == ["503", "reset"]
    assert Store(url, server.storage_options).get("a") is None
    store.delete("a")  # missing: no error
    store.put("b", b"abc")
    proxy.inject(always="503", methods={"DELETE"})
    with pytest.raises(StorageError, match=rf"cannot delete {url}/b: gave up after 3 attempt"):
        store.delete("b")
    assert [m for m, *_ in proxy.seen] == ["DELETE"] * 3
    assert Store(url, server.storage_options).get("b") == b"abc"


def test_final_write_errors_are_not_retried(proxied):
    server, opts, proxy = proxied
    url = server.new_url("forbidden")
    store = Store(url, {**opts, "retry": FAST})
    proxy.inject(always="403", methods=WRITES | {"DELETE"})
    with pytest.raises(StorageError, match=rf"cannot write {url}/info: .*(403|Forbidden)"):
        store.put("info", b"{}")
    assert len(proxy.seen) == 1
    proxy.inject(always="403", methods={"DELETE"})
    with pytest.raises(StorageError, match=rf"cannot delete {url}/info: .*(403|Forbidden)"):
        store.delete("info")
    assert len(proxy.seen) == 1


def test_missing_bucket_is_not_retried(proxied):
    server, opts, proxy = proxied
    proxy.inject()
    url = server.new_url("x").replace(server.bucket, server.bucket + "-missing")
    with pytest.raises(
        StorageError, match=rf"cannot write {url}/info: .*(404|NoSuchBucket|FileNotFound)"
    ):
        Store(url, {**opts, "retry": FAST}).put("info", b"{}")
    assert len(_writes(proxy)) == 1


def test_merged_writes_retry_under_the_policy(proxied):
    """Conditional read-merge-write (conditional.py) uses the same bounds."""
    server, opts, proxy = proxied
    store = Store(server.new_url("merge"), {**opts, "retry": {**FAST, "attempts": 3}})
    proxy.inject("503", "reset", methods=WRITES)
    update_object(store, "n", lambda old: b"1" if old is None else old + b"1")
    assert proxy.injected() == ["503", "reset"]
    update_object(store, "n", lambda old: b"1" if old is None else old + b"1")
    assert store.get("n") == b"11"
    proxy.inject(always="503", methods=WRITES)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot write .*/n: gave up after 3 attempt.*HTTP 503"):
        update_object(store, "n", lambda old: old + b"1")
    assert time.monotonic() - t0 < 5
    assert len(_writes(proxy)) == 3
    assert store.get("n") == b"11"


def _scripted_update(other: Store, proxy: faults.FaultProxy, key: str, script: list[str]):
    """``(update, calls)``: an update appending ``b"u"`` that, on its n-th call, first does
    ``script[n]`` ("ok" past its end), and the bytes each call was given.

    "race": another writer (``other``, not through the proxy) appends ``b"o"`` between our
    read and our write, which then meets a real 412; "503": our write is answered 503;
    "503 always": every write of ours from then on is.
    """
    calls: list[bytes | None] = []

    def update(old: bytes | None) -> bytes:
        step = script[len(calls)] if len(calls) < len(script) else "ok"
        calls.append(old)
        if step == "race":
            other.put(key, (old or b"") + b"o")
        elif step == "503":
            proxy.faults.append("503")
        elif step == "503 always":
            proxy.always = "503"
        return (old or b"") + b"u"

    return update, calls


def test_merged_write_through_conflicts_and_failures(proxied):
    """Lost races and transient failures interleave in one loop; races are no failures."""
    server, opts, proxy = proxied
    url = server.new_url("conflicts")
    store = Store(url, {**opts, "retry": {**FAST, "attempts": 2}})
    other = Store(url, server.storage_options)
    other.put("n", b"s")
    proxy.inject(methods=WRITES)
    update, calls = _scripted_update(other, proxy, "n", ["race", "503", "race"])
    update_object(store, "n", update)
    # two races and one 503 within attempts=2: only the 503 counted
    assert calls == [b"s", b"so", b"so", b"soo"]
    assert [f for m, *_, f in proxy.seen if m in WRITES] == ["ok", "503", "ok", "ok"]
    assert other.get("n") == b"soou"  # the other writer's parts kept
    proxy.inject(methods=WRITES)
    update, calls = _scripted_update(other, proxy, "n", ["race", "503 always"])
    with pytest.raises(
        StorageError,
        match=rf"cannot write {url}/n: gave up after 2 attempt\(s\) \(and 1 lost to "
        r"concurrent writers\) in [\d.]+ s; last error: HTTP 503",
    ):
        update_object(store, "n", update)
    assert len(calls) == 3 and other.get("n") == b"soouo"


def test_merged_write_gives_up_after_lost_races(proxied, monkeypatch):
    """Every read-merge-write losing a race: MAX_ATTEMPTS of them, and no retry failures."""
    from xarray_precomputed import conditional

    monkeypatch.setattr(conditional, "MAX_ATTEMPTS", 4)
    server, opts, proxy = proxied
    url = server.new_url("lost-races")
    store = Store(url, {**opts, "retry": False})  # one attempt: races do not use it up
    other = Store(url, server.storage_options)
    proxy.inject(methods=WRITES)
    update, calls = _scripted_update(other, proxy, "n", ["race"] * 10)
    with pytest.raises(
        StorageError,
        match=rf"cannot write {url}/n: gave up after 4 attempts lost to concurrent writers "
        "of the same object",
    ):
        update_object(store, "n", update)
    assert calls == [None, b"o", b"oo", b"ooo"]
    assert proxy.injected() == [] and len(_writes(proxy)) == 4
    assert other.get("n") == b"oooo"  # nothing of ours stored


@pytest.mark.parametrize("backend", ["http", "s3", "gcs"])
def test_unreachable_endpoint_fails_fast_on_write(backend):
    port = servers._free_port()  # nothing listens there
    ep = f"http://127.0.0.1:{port}"
    url, opts = {
        "http": (f"{ep}/vol", {}),
        "s3": ("s3://bucket/vol", {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": ep}}),
        "gcs": ("gs://bucket/vol", {"endpoint_url": ep, "token": "anon"}),
    }[backend]  # fmt: skip
    store = Store(url, {**opts, "retry": {"connect_timeout": 1.0}})
    t0 = time.monotonic()
    with pytest.raises(StorageError) as e:
        store.put("info", b"{}")
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    for hint in (f"cannot reach {url}/info", "check the URL", "network", "credentials"):
        assert hint in msg, msg
    if backend != "http":  # fsspec's HTTP filesystem has no delete
        with pytest.raises(StorageError, match="cannot reach"):
            store.delete("info")


LISTS_AND_DELETES = {"GET", "POST", "DELETE"}  # listings; S3 bulk and GCS batch deletes


def test_tree_removal_is_retried(proxied):
    server, opts, proxy = proxied
    url = server.new_url("tree")
    store = Store(url, {**opts, "retry": {**FAST, "attempts": 4}})
    for key in ("old/a", "old/b/c", "kept"):
        store.put(key, b"abc")
    proxy.inject("503", "reset", "503", methods=LISTS_AND_DELETES)
    store.remove_tree("old")
    assert proxy.injected() == ["503", "reset", "503"]
    check = Store(url, server.storage_options)
    assert check.get("old/a") is None and check.get("old/b/c") is None
    assert check.get("kept") == b"abc"
    store.remove_tree("old")  # nothing there: no error
    store.put("old/a", b"abc")
    proxy.inject(always="503", methods=LISTS_AND_DELETES)
    t0 = time.monotonic()
    with pytest.raises(
        StorageError, match=rf"cannot delete {url}/old: gave up after 4 attempt.*HTTP 503"
    ):
        store.remove_tree("old")
    assert time.monotonic() - t0 < 5
    assert len(proxy.seen) == 4  # ours only
    assert check.get("old/a") == b"abc"


def test_overwrite_removes_old_scales_through_failures(proxied):
    """mode="w" over an existing volume removes its scales under the retry policy."""
    server, opts, proxy = proxied
    url = server.new_url("overwrite")
    old = make_array(rand((32, 32, 16, 1), "uint8", seed=1))
    xp.to_precomputed(old, url, chunk_size=(16, 16, 8), storage_options=server.storage_options)
    check = Store(url, server.storage_options)
    old_scale = json.loads(check.get("info"))["scales"][0]["key"]
    assert check.tree_size(old_scale) > 0
    data = rand((32, 32, 16, 1), "uint8", seed=2)
    new = make_array(data, res=(16.0, 16.0, 80.0))  # another scale key
    proxy.inject("503", "reset", "503", methods={"POST", "DELETE"})
    xp.to_precomputed(new, url, mode="w", chunk_size=(16, 16, 8),
                      storage_options={**opts, "retry": FAST})  # fmt: skip
    assert proxy.injected() == ["503", "reset", "503"]
    check.reset_connection()  # (s3fs caches listings)
    new_scale = json.loads(check.get("info"))["scales"][0]["key"]
    assert new_scale != old_scale
    assert check.tree_size(old_scale) == 0
    got = xr.open_dataset(url, engine="precomputed", storage_options=server.storage_options)
    np.testing.assert_array_equal(got.image.values, data)


def test_object_info_and_sizes_are_retried(proxied):
    server, opts, proxy = proxied
    url = server.new_url("sizes")
    store = ResumingStore(url, {**opts, "retry": {**FAST, "attempts": 3}})
    store.put("s/a", b"abc")
    store.put("s/b", b"defg")
    proxy.inject("503", "reset", methods={"GET", "HEAD"})
    assert store.object_info("s/a")["size"] == 3
    proxy.inject("503", "503", methods={"GET", "HEAD"})
    assert store.holds("s/b", b"defg") and not store.holds("s/b", b"defh")
    proxy.inject("503", "reset", methods={"GET", "HEAD"})
    assert store.tree_size("s") == 7
    assert store.tree_size("missing") == 0
    proxy.inject(always="503", methods={"GET", "HEAD"})
    with pytest.raises(StorageError, match=rf"cannot read {url}/s: gave up after 3 attempt"):
        store.tree_size("s")
