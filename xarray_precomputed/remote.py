"""Remote filesystems: how they are opened, and how requests are retried.

:func:`open_filesystem` turns a URL and the user's ``storage_options`` into an fsspec
filesystem with this package's defaults (the user's values always win):

* timeouts, so an unreachable endpoint fails in seconds rather than minutes, and the
  client libraries' own retry loops switched off where they can be, so that
  :class:`~xarray_precomputed.retry.RetryPolicy` alone bounds attempts and time;
* connection pools sized for the parallel reads (s3fs keeps 10 by default);
* public data without configuration: ``gs://`` goes anonymous when no Google credentials
  can be found, and ``s3://`` retries anonymously when botocore finds no credentials
  (see :meth:`RemoteCaller.run`), as tensorstore does;
* third-party loggers kept quiet unless the application configures logging.

:class:`RemoteCaller` runs one call (a read through :attr:`Store.read_fs
<xarray_precomputed.storage.Store.read_fs>`, a write or delete through fsspec) with
retries and a hard deadline.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import give_up
from .errors import StorageError
from .retry import RetryPolicy, classify, describe

if TYPE_CHECKING:  # imported when a filesystem is made: local and obstore reads skip it
    import fsspec

# Keys of storage_options this package consumes; the rest go to fsspec.
OWN_OPTIONS = ("retry", "index_cache", "coalesce", "reader")
# Parallel requests one filesystem should carry (pool threads x ranges per call).
POOL_SIZE = 64
_QUIET_LOGGERS = ("gcsfs", "s3fs", "fsspec", "aiobotocore", "botocore", "google", "urllib3")
_quieted = False
_S3_CREDENTIALS = ("anon", "key", "secret", "token", "profile", "session")


def quiet_third_party_loggers() -> None:
    """Keep client libraries from printing tracebacks through Python's last-resort handler.

    A :class:`logging.NullHandler` only matters while the application has configured no
    logging: records still propagate to the root logger's handlers when it has.
    """
    global _quieted
    if not _quieted:
        for name in _QUIET_LOGGERS:
            logger = logging.getLogger(name)
            if not logger.handlers:
                logger.addHandler(logging.NullHandler())
        _quieted = True


def _google_credentials_available() -> bool:
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    config = Path(os.environ.get("CLOUDSDK_CONFIG", Path.home() / ".config" / "gcloud"))
    if (config / "application_default_credentials.json").exists():
        return True
    if (Path.home() / ".gcs_tokens").exists():  # gcsfs's own token cache
        return True
    try:  # what google-auth checks first to decide it runs on Google Compute Engine
        return "Google" in Path("/sys/class/dmi/id/product_name").read_text()
    except OSError:
        return False


def filesystem_options(protocol: str, options: dict[str, Any], policy: RetryPolicy) -> dict:
    """The fsspec constructor arguments: the user's options over this package's defaults."""
    opts = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
    connect = policy.connect_timeout
    if protocol in ("s3", "s3a"):
        # s3fs would send a HEAD before each whole-object GET to split big objects; our
        # objects are chunks and shards, already read in parallel.
        opts.setdefault("max_concurrency", 1)
        config = dict(opts.get("config_kwargs") or {})
        config.setdefault("connect_timeout", connect)
        config.setdefault("read_timeout", max(connect, 60.0))
        config.setdefault("max_pool_connections", POOL_SIZE)
        # botocore's "max_attempts" counts retries (1 would mean two tries); the total is
        # what the policy must bound.
        config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
        opts["config_kwargs"] = config
    elif protocol in ("gs", "gcs"):
        if "token" not in opts and not _google_credentials_available():
            opts["token"] = "anon"
        if "requests_timeout" not in opts:
            # per request, as aiohttp takes it: no bound on a whole (long) upload
            opts["requests_timeout"] = _socket_timeouts(connect)
    elif protocol in ("http", "https"):
        client = dict(opts.get("client_kwargs") or {})
        if "timeout" not in client:
            client["timeout"] = _socket_timeouts(connect)
        opts["client_kwargs"] = client
    return opts


def bounds_connect(protocol: str, opts: dict[str, Any]) -> bool:
    """Whether a filesystem made with ``opts`` (from :func:`filesystem_options`) gives up
    on a connection that cannot be made by itself, within a connect timeout of its client.

    Then a first request may take the whole ``timeout`` (see :meth:`RemoteCaller.run`).
    """
    if protocol in ("s3", "s3a"):
        return True  # botocore always has a connect timeout (ours, or its 60 s)
    if protocol in ("gs", "gcs"):
        timeout = opts.get("requests_timeout")
    elif protocol in ("http", "https"):
        timeout = (opts.get("client_kwargs") or {}).get("timeout")
    else:
        return False
    if isinstance(timeout, (int, float)):
        return timeout > 0
    return any(getattr(timeout, a, None) for a in ("sock_connect", "connect", "total"))


def _socket_timeouts(connect: float) -> Any:
    """aiohttp's timeouts: ``connect`` to connect, a minute at most between reads."""
    import aiohttp  # gcsfs and fsspec's HTTP filesystem import it anyway

    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=max(connect, 60.0))


# gcsfs options that an anonymous read over plain HTTPS honours as well.
_PLAIN_GCS_OPTIONS = frozenset({"token", "endpoint_url", "project", *OWN_OPTIONS})


def anonymous_gcs_base(url: str, options: dict[str, Any]) -> str | None:
    """The HTTP(S) base serving ``gs://`` objects when they are read anonymously, else None.

    Anonymous reads need no Google client: the JSON API's media downloads are plain GETs
    (with Range) that fsspec's HTTP filesystem makes. That spares importing gcsfs and
    google-auth, most of a cold open's time. Writes, credentials and requester pays keep
    gcsfs.
    """
    if not url.startswith(("gs://", "gcs://")) or set(options) - _PLAIN_GCS_OPTIONS:
        return None
    token = options.get("token")
    if token is None and not _google_credentials_available():
        token = "anon"
    if token != "anon":
        return None
    return str(options.get("endpoint_url") or "https://storage.googleapis.com").rstrip("/")


def gcs_media_url(base: str, path: str) -> str:
    """URL of the object ``bucket/name`` for a plain GET.

    >>> gcs_media_url("https://storage.googleapis.com", "b/v/8_8_8/0-64_0-64_0-64")
    'https://storage.googleapis.com/download/storage/v1/b/b/o/v%2F8_8_8%2F0-64_0-64_0-64?alt=media'
    """
    from urllib.parse import quote

    bucket, _, name = path.partition("/")
    return (
        f"{base}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
    )


def open_filesystem(url: str, options: dict[str, Any], policy: RetryPolicy):
    """``(filesystem, root path)`` for ``url``; raises :class:`StorageError` on bad options."""
    quiet_third_party_loggers()
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        opts = filesystem_options(protocol, options, policy)
        if protocol in ("gs", "gcs"):
            from .gcs_filesystem import SingleTryGCSFileSystem

            fs = SingleTryGCSFileSystem(**opts)
            root = fs._strip_protocol(url)
        elif protocol in ("s3", "s3a"):
            from .s3_filesystem import SingleTryS3FileSystem

            cls = SingleTryS3FileSystem
            fs = cls(**{**cls._get_kwargs_from_urls(url), **opts})
            root = cls._strip_protocol(url)
        else:
            from fsspec.core import url_to_fs

            fs, root = url_to_fs(url, **opts)
        # (fsspec reuses an instance for the same arguments: the same answer then)
        fs.xp_bounds_connect = bounds_connect(protocol, opts)
    except Exception as e:  # unknown protocol, missing package, bad option
        raise StorageError(f"cannot open storage at {url}: {e}") from e
    return fs, root.rstrip("/")


class Conflict(Exception):
    """Raised by an attempt of :meth:`RemoteCaller.run` whose conditional write found the
    object changed by another writer since it was read: no failure, the attempt starts over."""


class RemoteCaller:
    """Runs filesystem calls for one :class:`~xarray_precomputed.storage.Store` with retries.

    The async filesystems (s3fs, gcsfs, fsspec's HTTP) are driven through their event loop
    with a deadline, so a client library's own retry loop cannot exceed the policy's time.
    """

    def __init__(self, store: Any, policy: RetryPolicy) -> None:
        self.store = store
        self.policy = policy
        self.reached = False  # after one answer, connection errors count as transient

    def call(self, fs: Any, name: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        # a wrapper (fsspec's DirFileSystem) is async only if what it wraps is
        inner = getattr(fs, "fs", fs)
        if (
            getattr(fs, "async_impl", False)
            and getattr(inner, "async_impl", False)
            and getattr(fs, "loop", None) is not None
        ):
            from fsspec.asyn import sync

            return sync(
                fs.loop, getattr(fs, "_" + name), *args, timeout=max(timeout, 0.01), **kwargs
            )
        return getattr(fs, name)(*args, **kwargs)

    def run(
        self,
        what: str | Callable[[], str],
        fn: Callable[[Any, float], Any],
        *,
        verb: str = "read",
        fs: Callable[[], Any] | None = None,
        max_conflicts: int = 1,
    ) -> Any:
        """``fn(filesystem, seconds_left)`` with retries; ``what`` names the object for errors.

        ``fs`` returns the filesystem to use (asked anew for each attempt, as switching to
        anonymous access makes a new one): :attr:`Store.read_fs` by default; writes and
        deletes pass ``Store.fs`` (fsspec) and a ``verb`` ("write", "delete") for the
        messages. Exceptions that are not transient (including ``FileNotFoundError`` and
        :class:`StorageError`) pass through. A batch ``fn`` keeps what it got and raises a
        transient error while parts are missing; ``what`` may then be a callable naming
        the part that failed last.

        Each attempt gets what is left of ``timeout``, also the first request of a fresh
        store (e.g. on a Dask worker), which may be a big upload or the read of a big
        shard over a slow link: an unreachable endpoint is still given up on after
        ``connect_timeout``, through the client's connect timeout, and connection failures
        are retried only within ``connect_timeout`` until the endpoint has answered. Only a
        read through a filesystem without a client connect timeout (see
        :func:`bounds_connect`; e.g. one made by another fsspec protocol) gets
        ``connect_timeout`` in all until the endpoint has answered.

        An attempt that raises :class:`Conflict` (a read-merge-write that lost a race) is
        made again after a short pause of its own and does not count among the attempts;
        the ``max_conflicts``-th conflict gives up. Their time counts in the elapsed time
        that bounds the retries of failures.
        """
        p = self.policy
        reading = verb == "read"
        filesystem = fs or (lambda: self.store.read_fs)
        start = time.monotonic()
        attempt = lost = 0
        while True:
            attempt += 1
            target = filesystem()
            if self.reached or not reading or getattr(target, "xp_bounds_connect", False):
                budget = p.timeout
            else:
                budget = min(p.timeout, max(p.connect_timeout, 0.01))
            left = budget - (time.monotonic() - start)
            try:
                result = fn(target, left)
                self.reached = True
                return result
            except StorageError:
                raise
            except Conflict as e:
                self.reached = True
                attempt -= 1
                lost += 1
                if lost >= max_conflicts:
                    raise give_up.lost_races(verb, _name(what), lost) from e
                time.sleep(_conflict_pause(lost))
            except Exception as e:
                if reading and self._switch_to_anonymous(e):
                    attempt -= 1
                    continue
                kind = classify(e)
                if kind == "final":
                    raise
                if kind == "transient" and not _is_deadline(e):
                    self.reached = True  # the endpoint answered or accepted a connection
                budget = p.timeout if self.reached else min(p.timeout, p.connect_timeout)
                elapsed = time.monotonic() - start
                pause = p.pause(attempt - 1)
                if attempt >= p.attempts or elapsed + pause >= budget:
                    if not self.reached and (reading or kind == "unreachable"):
                        url = self.store.url
                        raise give_up.unreachable(_name(what), e, attempt, elapsed, url) from e
                    raise give_up.exhausted(verb, _name(what), e, attempt, elapsed, lost) from e
                time.sleep(pause)

    def run_batch(self, what: list[str], fetch: Callable) -> list[bytes | None]:
        """Fetch items with retries: each round asks again only for the failed ones.

        ``fetch(fs, indices, seconds_left)`` returns one bytes / exception / ``None`` per
        index, as fsspec's ``cat_ranges(..., on_error="return")`` does.
        """
        out: list[Any] = [None] * len(what)
        pending = list(range(len(what)))
        last = [0]

        def attempt(fs, t: float) -> None:
            failed, error = [], None
            for i, r in zip(pending, fetch(fs, pending, t)):
                if r is None or isinstance(r, FileNotFoundError):
                    out[i] = None
                elif isinstance(r, BaseException):
                    if classify(r) == "final":
                        raise StorageError(f"cannot read {what[i]}: {describe(r)}") from r
                    failed.append(i)
                    error = error or r
                    last[0] = i
                else:
                    out[i] = r
            pending[:] = failed
            if error is not None:
                raise error

        try:
            self.run(lambda: what[last[0]], attempt)
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"cannot read {what[last[0]]}: {describe(e)}") from e
        return out

    def _switch_to_anonymous(self, e: Exception) -> bool:
        """S3 without credentials: go on anonymously (public buckets), as tensorstore does."""
        store = self.store
        if (
            not store.url.startswith(("s3://", "s3a://"))
            or type(e).__name__ != "NoCredentialsError"
        ):
            return False
        if any(k in store.storage_options for k in _S3_CREDENTIALS):
            return False
        # Recorded in the options, so pickled copies (Dask workers) start anonymous too.
        store.storage_options = {**store.storage_options, "anon": True}
        store.reset_connection()
        return True


def _is_deadline(e: BaseException) -> bool:
    return type(e).__name__ in ("FSTimeoutError", "TimeoutError")


def _name(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def _conflict_pause(n: int) -> float:
    """Seconds to wait after conflict ``n`` (from 1), with full jitter.

    Short: the winning write has landed already; the jitter spreads the writers still
    contending for the object.
    """
    return random.uniform(0.0, min(2.0, 0.02 * 2 ** min(n - 1, 10)))


def pipe_creating_parents(
    fs: fsspec.AbstractFileSystem,
    path: str,
    data: bytes | bytearray,
    call: Callable[..., Any] | None = None,
) -> None:
    """``fs.pipe_file``, creating the parent directories first where the filesystem has them.

    Object stores have no directories and accept the put as is; a filesystem with real
    directories (a local directory behind another protocol, SFTP, ...) refuses a missing
    parent with ``FileNotFoundError``: then make the parents and put once more.
    ``call(name, *args)`` makes the filesystem calls (default: the method ``name`` of ``fs``),
    e.g. with a deadline.
    """
    if call is None:
        call = lambda name, *args, **kw: getattr(fs, name)(*args, **kw)  # noqa: E731
    try:
        call("pipe_file", path, data)
    except FileNotFoundError:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        flat = {"S3FileSystem", "GCSFileSystem"} & {c.__name__ for c in type(fs).__mro__}
        if not parent or flat:  # a missing bucket: never create one as a side effect
            raise
        call("makedirs", parent, exist_ok=True)
        call("pipe_file", path, data)
