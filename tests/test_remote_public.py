"""Public data without configuration: anonymous fallback, requester pays, gs:// vs https://."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr

from xarray_precomputed.backend import open_info
from xarray_precomputed.errors import StorageError
from xarray_precomputed.storage import Store

from . import faults, servers


@pytest.fixture(scope="module")
def volume(ts, tmp_path_factory):
    root = tmp_path_factory.mktemp("public-volume")
    data = np.random.default_rng(9).integers(0, 255, (32, 32, 16, 1), dtype=np.uint8)
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(root)},
         "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
         "scale_metadata": {"size": [32, 32, 16], "encoding": "raw", "chunk_size": [16, 16, 16],
                            "resolution": [1, 1, 1]}},
        create=True,
    ).result()  # fmt: skip
    store[...].write(data).result()
    return root, data


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _upload_public(s3_server, root, acl: str = "public-read") -> str:
    url = s3_server.new_url("public")
    fs = s3_server.fs()
    for path, rel in servers._local_files(root):
        with open(path, "rb") as f:
            fs.pipe_file(f"{url[5:]}/{rel}", f.read(), ACL=acl)
    return url


def test_s3_without_credentials_reads_public_data(s3_server, volume, no_aws_credentials):
    url = _upload_public(s3_server, volume[0])
    opts = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    ds = xr.open_dataset(url, engine="precomputed", storage_options=opts)
    np.testing.assert_array_equal(ds.image.values, volume[1])
    store, _ = open_info(url, opts)
    # The decision travels with the store to Dask workers.
    assert store.storage_options["anon"] is True
    assert pickle.loads(pickle.dumps(store)).storage_options["anon"] is True


def test_s3_anonymous_on_private_data_says_forbidden(s3_server, volume, no_aws_credentials):
    url = _upload_public(s3_server, volume[0], acl="private")
    opts = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    with pytest.raises(StorageError, match=r"info.*(403|Forbidden|Access Denied)"):
        xr.open_dataset(url, engine="precomputed", storage_options=opts)


def test_s3_explicit_credentials_are_not_replaced(s3_server, volume, no_aws_credentials):
    url = _upload_public(s3_server, volume[0])
    store = Store(url, {"key": "testing", "secret": "testing",
                        "client_kwargs": {"endpoint_url": s3_server.endpoint_url}})  # fmt: skip
    assert store.get("info") is not None and "anon" not in store.storage_options


def test_gs_without_token_goes_anonymous(gcs_server, volume, monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    url = gcs_server.upload_dir(volume[0], "public")
    ds = xr.open_dataset(
        url, engine="precomputed", storage_options={"endpoint_url": gcs_server.endpoint_url}
    )
    np.testing.assert_array_equal(ds.image.values, volume[1])
    store, _ = open_info(url, {"endpoint_url": gcs_server.endpoint_url})
    assert store.fs.credentials.method == "anon"


def test_gs_and_storage_googleapis_https_give_the_same_data(gcs_server, volume):
    """``gs://b/p`` and ``https://storage.googleapis.com/b/p`` name the same objects: GCS
    serves ``/<bucket>/<object>`` over plain HTTP(S) to requests for that host, and so does
    fake-gcs-server (its ``-public-host``); the https form is read here through fsspec's
    HTTP filesystem from the emulator with ``Host: storage.googleapis.com``."""
    url = gcs_server.upload_dir(volume[0], "same")
    bucket_path = url[len("gs://") :]
    a = xr.open_dataset(url, engine="precomputed", storage_options=gcs_server.storage_options)
    b = xr.open_dataset(
        f"{gcs_server.endpoint_url}/{bucket_path}",
        engine="precomputed",
        storage_options={"headers": {"Host": "storage.googleapis.com"}},
    )
    np.testing.assert_array_equal(a.image.values, b.image.values)
    np.testing.assert_array_equal(b.image.values, volume[1])


def test_requester_pays_reaches_the_requests(s3_server, gcs_server, volume):
    # S3: the x-amz-request-payer header, seen by a proxy in front of moto.
    url = s3_server.upload_dir(volume[0], "payer")
    proxy = faults.FaultProxy(s3_server.endpoint_url)
    try:
        opts = {**s3_server.storage_options, "requester_pays": True,
                "client_kwargs": {"endpoint_url": proxy.url}}  # fmt: skip
        ds = xr.open_dataset(url, engine="precomputed", storage_options=opts)
        np.testing.assert_array_equal(ds.image.values, volume[1])
        headers = [{k.lower(): v for k, v in h.items()} for _, _, h, _ in proxy.seen]
        assert headers and all(h.get("x-amz-request-payer") == "requester" for h in headers)
    finally:
        proxy.close()
    # GCS: the userProject query parameter, seen by the counting proxy.
    url = gcs_server.upload_dir(volume[0], "payer")
    gcs_server.reset_counts()
    opts = {**gcs_server.storage_options, "requester_pays": True}
    ds = xr.open_dataset(url, engine="precomputed", storage_options=opts)
    np.testing.assert_array_equal(ds.image.values, volume[1])
    paths = [p for _, p, _ in gcs_server.requests()]
    assert paths and all("userProject=test" in p for p in paths), paths
