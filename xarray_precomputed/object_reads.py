"""Reads through obstore (Rust's ``object_store``): the fast path for remote volumes.

fsspec's HTTP, S3 and GCS filesystems are built on aiohttp and botocore: importing them and
making a client costs 0.1-0.5 s before the first byte, and their Python event loop tops out
well below what a loopback or datacentre link carries. obstore imports in milliseconds,
releases the GIL while it waits and copies, and returns zero-copy buffers. It is used for
reads when it is installed and the volume's ``storage_options`` say nothing it cannot honour;
otherwise (and for every write) reads go through fsspec as before. ``storage_options={"reader":
"fsspec"}`` forces fsspec, ``"obstore"`` refuses the fallback.

:class:`ObjectReader` offers the three calls :class:`~xarray_precomputed.storage.Store`
makes of a read filesystem (``cat_file``, ``cat_ranges``, ``exists``), with fsspec's
meaning, and turns obstore's errors into exceptions that
:func:`~xarray_precomputed.retry.classify` understands. obstore's own retries are off:
:class:`~xarray_precomputed.retry.RetryPolicy` alone bounds attempts and time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from .pools import fetch_pool, per_process
from .remote import OWN_OPTIONS
from .retry import RetryPolicy

READERS = ("auto", "obstore", "fsspec")
# S3 options obstore is told about; anything else (profile, config_kwargs, ...) needs botocore.
_S3_KEYS = frozenset({"anon", "key", "secret", "token", "endpoint_url", "requester_pays"})
_S3_CLIENT_KEYS = frozenset({"endpoint_url", "region_name"})
_OWN = frozenset(OWN_OPTIONS)
_STATUS = re.compile(r"status(?: code)?:? (\d{3})")
_QUOTED = re.compile(r'"([^"]+)"')
_DETAIL = re.compile(r'(?:error|message): "([^"]+)"')


class ObjectStoreStatusError(Exception):
    """A non-2xx answer; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ObjectStoreConnectError(ConnectionRefusedError):
    """No connection could be made (refused, unknown host, connect timeout)."""


class ObjectStoreTimeoutError(TimeoutError):
    """The request took longer than the client's timeout."""


class ObjectStoreTransferError(ConnectionResetError):
    """The connection broke while the request or the body was under way."""


def reader_choice(storage_options: dict[str, Any]) -> str:
    """``storage_options["reader"]``, checked: ``"auto"`` (default), ``"obstore"`` or ``"fsspec"``."""
    choice = storage_options.get("reader", "auto") or "auto"
    if choice not in READERS:
        raise ValueError(f"storage_options['reader'] must be one of {READERS}, not {choice!r}")
    return choice


def translate_error(exc: BaseException) -> BaseException:
    """An obstore error as an exception :func:`~xarray_precomputed.retry.classify` knows."""
    if isinstance(exc, FileNotFoundError):
        return exc
    text = str(exc)
    first = text.split("\n", 1)[0].strip()
    status = _STATUS.search(text)
    if status:
        return ObjectStoreStatusError(first, int(status.group(1)))
    # (a connect timeout is reported as "kind: Timeout" around hyper's ConnectError)
    if "kind: Connect" in text or "tcp connect error" in text:
        cause = _connect_cause(text)
        # the cause first: messages are cut at 300 characters (retry.describe)
        return ObjectStoreConnectError(f"{cause} ({first})" if cause else first)
    if "kind: Timeout" in text or "TimedOut" in text:
        return ObjectStoreTimeoutError(first)
    if "kind: Body" in text or "kind: Request" in text or "error sending request" in text:
        return ObjectStoreTransferError(first)
    return exc


def _connect_cause(text: str) -> str | None:
    """What the first line of a failed connection leaves out, from obstore's debug text:
    e.g. ``dns error: failed to lookup address information: Name or service not known``
    or ``tcp connect error: Connection refused``."""
    at = text.find("ConnectError(")
    if at < 0:
        return None
    what = _QUOTED.search(text, at)
    details = _DETAIL.findall(text, at)
    if what is None:
        return None
    return f"{what.group(1)}: {details[-1]}" if details else what.group(1)


class ObjectReader:
    """Read-only access to one bucket (or one HTTP origin) through an obstore store.

    Paths are relative to the bucket or origin; the root of the volume is :attr:`root`.
    """

    # Its client gives up on a connection after the policy's connect_timeout (see
    # :func:`open_reader`), so a first read may take the whole timeout (RemoteCaller.run).
    xp_bounds_connect = True

    def __init__(self, store: Any, root: str, anonymous: bool = False) -> None:
        self.store = store
        self.root = root
        # True when no credentials were configured and requests go unsigned (public data)
        self.anonymous = anonymous

    def __repr__(self) -> str:
        return f"ObjectReader({self.store!r})"

    def cat_file(self, path: str, start: int | None = None, end: int | None = None):
        """The object ``path`` (or bytes ``[start, end)`` of it) as a zero-copy buffer."""
        import obstore

        if (start is None) != (end is None):
            raise ValueError("give both start and end, or neither")
        try:
            if start is None:
                return memoryview(obstore.get(self.store, path).bytes())
            if end <= start:
                return memoryview(b"")
            return memoryview(obstore.get_range(self.store, path, start=start, end=end))
        except Exception as e:
            if start is not None and _past_end(e):
                return memoryview(b"")
            if start is not None and _no_ranges(e):
                return memoryview(obstore.get(self.store, path).bytes())[start:end]
            raise translate_error(e) from e

    def cat_ranges(
        self,
        paths: Sequence[str],
        starts: Sequence[int | None] | None,
        ends: Sequence[int | None] | None,
        on_error: str = "return",
    ) -> list[Any]:
        """Several objects or ranges at once, each its own request (coalescing is the
        caller's); failures are returned in place, as fsspec's ``on_error="return"``."""
        n = len(paths)
        starts = list(starts) if starts is not None else [None] * n
        ends = list(ends) if ends is not None else [None] * n

        def one(args: tuple[str, int | None, int | None]) -> Any:
            try:
                return self.cat_file(*args)
            except Exception as e:
                return e

        requests = list(zip(paths, starts, ends))
        if n == 1:
            out = [one(requests[0])]
        else:
            # Each request on its own thread, blocked in Rust without the GIL: measured 2x
            # the throughput of awaiting obstore's coroutines on a Python event loop.
            out = list(fetch_pool().map(one, requests))
        if on_error != "return":
            for r in out:
                if isinstance(r, BaseException):
                    raise r
        return out

    def exists(self, path: str) -> bool:
        import obstore

        try:
            obstore.head(self.store, path)
            return True
        except FileNotFoundError:
            return False
        except Exception as e:
            raise translate_error(e) from e


def _past_end(exc: BaseException) -> bool:
    """Whether a ranged GET started past the object's end (HTTP 416): that reads as empty,
    as in fsspec, and callers check lengths (a truncated shard)."""
    match = _STATUS.search(str(exc))
    return match is not None and match.group(1) == "416"


def _no_ranges(exc: BaseException) -> bool:
    """Whether the server ignored the Range header: then the whole object is read once."""
    return type(exc).__name__ == "NotSupportedError" and "Range" in str(exc)


# -- choosing and configuring the store ----------------------------------------------------


def open_reader(
    url: str, options: dict[str, Any], policy: RetryPolicy, gcs_base: str | None
) -> ObjectReader | None:
    """An :class:`ObjectReader` for ``url``, or ``None`` when fsspec must read it.

    ``gcs_base`` is the HTTP(S) endpoint of an anonymous ``gs://`` read (credentialed GCS
    stays with gcsfs).
    """
    choice = reader_choice(options)
    if choice == "fsspec" or "://" not in url:
        return None
    try:
        import obstore  # noqa: F401
    except ImportError as e:
        if choice == "obstore":
            raise ValueError(
                "storage_options['reader'] is 'obstore' but it is not installed"
            ) from e
        return None
    protocol, rest = url.split("://", 1)
    client = {
        "allow_http": True,
        "connect_timeout": timedelta(seconds=policy.connect_timeout),
        "read_timeout": timedelta(seconds=max(policy.connect_timeout, 60.0)),
        "timeout": timedelta(seconds=max(policy.timeout, 1.0)),
        "pool_max_idle_per_host": "64",
    }
    retry = {"max_retries": 0, "retry_timeout": timedelta(seconds=policy.timeout)}
    made = None
    if protocol in ("http", "https"):
        made = _http(protocol, rest, options, client, retry)
    elif protocol in ("s3", "s3a"):
        made = _s3(rest, options, client, retry)
    elif protocol in ("gs", "gcs") and gcs_base is not None:
        made = _gcs(rest, gcs_base, client, retry)
    if made is None:
        if choice == "obstore":
            raise ValueError(
                f"storage_options['reader'] is 'obstore' but {url} with options "
                f"{sorted(set(options) - _OWN)} needs fsspec"
            )
        return None
    store, root, anonymous = made
    return ObjectReader(store, root, anonymous)


def _client(kind: str, target: str, **kwargs: Any) -> Any:
    """One obstore client per configuration and process: volumes on one server share its
    connections, and its set-up (~5 ms, mostly loading TLS root certificates) is paid once."""

    def make() -> Any:
        import obstore.store

        cls = getattr(obstore.store, kind)
        return cls.from_url(target, **kwargs) if kind == "HTTPStore" else cls(target, **kwargs)

    return per_process(("obstore", kind, target, repr(sorted(kwargs.items()))), make)


def _http(protocol: str, rest: str, options: dict, client: dict, retry: dict):
    if set(options) - _OWN:  # headers, auth, client_kwargs: aiohttp's business
        return None
    origin, _, root = rest.partition("/")
    store = _client(
        "HTTPStore", f"{protocol}://{origin}", client_options=client, retry_config=retry
    )
    return store, root.strip("/"), False


def _gcs(rest: str, base: str, client: dict, retry: dict):
    # Anonymous reads are plain GETs of <base>/<bucket>/<object> (GCS's XML API): an HTTP
    # store makes them, and is made in a third of the time of obstore's GCS client, which
    # prepares for credentials that an anonymous read never needs.
    bucket, _, root = rest.partition("/")
    store = _client("HTTPStore", f"{base}/{bucket}", client_options=client, retry_config=retry)
    return store, root.strip("/"), False


def _s3(rest: str, options: dict, client: dict, retry: dict):
    kwargs = dict(options.get("client_kwargs") or {})
    if set(options) - _OWN - _S3_KEYS - {"client_kwargs"} or set(kwargs) - _S3_CLIENT_KEYS:
        return None
    bucket, _, root = rest.partition("/")
    endpoint = options.get("endpoint_url") or kwargs.get("endpoint_url")
    config: dict[str, Any] = {}
    anonymous = False
    if options.get("anon"):
        config["skip_signature"] = True
    elif options.get("key") or options.get("secret"):
        config["access_key_id"] = options.get("key")
        config["secret_access_key"] = options.get("secret")
        if options.get("token"):
            config["session_token"] = options["token"]
    elif not os.environ.get("AWS_ACCESS_KEY_ID"):
        if _botocore_would_find_credentials():
            return None  # profiles, SSO, instance roles: botocore's credential chain
        config["skip_signature"] = anonymous = True  # public data, as tensorstore reads it
    if options.get("requester_pays"):
        config["request_payer"] = True
    region = kwargs.get("region_name") or os.environ.get("AWS_REGION")
    region = region or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        config["endpoint"] = str(endpoint).rstrip("/")
        config.setdefault("region", region or "us-east-1")
    else:
        config["region"] = region or bucket_region(bucket)
    store = _client("S3Store", bucket, config=config, client_options=client, retry_config=retry)
    return store, root.strip("/"), anonymous


def _botocore_would_find_credentials() -> bool:
    """Whether credentials are configured that only botocore's chain knows how to use."""
    env = os.environ
    if any(
        env.get(k)
        for k in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
    ):
        return True
    home = Path.home() / ".aws"
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE"), env.get("AWS_CONFIG_FILE")]
    if any(Path(f).exists() for f in files if f) or (home / "credentials").exists():
        return True
    if (home / "config").exists():
        return True
    try:  # EC2 instance roles come from the instance metadata service
        return "amazon" in Path("/sys/class/dmi/id/board_vendor").read_text().lower()
    except OSError:
        return False


_regions: dict[str, str] = {}


def bucket_region(bucket: str, endpoint: str = "https://s3.amazonaws.com") -> str:
    """The AWS region of ``bucket`` (one anonymous HEAD; S3 names it even when it refuses)."""
    if bucket not in _regions:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"{endpoint}/{bucket}", method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                region = resp.headers.get("x-amz-bucket-region")
        except urllib.error.HTTPError as e:
            region = e.headers.get("x-amz-bucket-region")
        except OSError:
            region = None
        _regions[bucket] = region or "us-east-1"
    return _regions[bucket]
