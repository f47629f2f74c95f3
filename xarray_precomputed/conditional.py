"""Atomic read-modify-write of one object, so concurrent region writes lose nothing.

A region write that covers a shard (or chunk) only in part reads what is stored, merges
its part in and stores the result. Two writers doing that to one object at once would
lose one's part; :func:`update_object` makes the cycle atomic per object:

- local disk: an exclusive ``flock`` on a lock file beside the object, held around read,
  merge, temp write and rename (the lock file is removed after use);
- S3: ``If-Match`` on the ETag read (``If-None-Match: *`` when the object was missing, a
  conditional delete when the merge leaves nothing), retried on 412/409;
- GCS: ``ifGenerationMatch`` on the generation read (0 when missing), retried on 412;
- ``memory://``: a lock per object within the process (the only place it is shared).

Other filesystems have no conditional writes: the merge is done unguarded and concurrent
writers sharing an object may lose data (docs/writing.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from typing import Any

from fsspec.asyn import sync

from .errors import StorageError
from .remote import Conflict
from .retry import status_of
from .storage import Store

Update = Callable[[bytes | None], bytes | bytearray | None]

MAX_ATTEMPTS = 50  # conflicts (each means another writer won); failures: the RetryPolicy
_BOUNDARY = "==precomputed-part=="
_memory_locks: dict[str, threading.Lock] = {}
_memory_guard = threading.Lock()


def update_object(store: Store, key: str, update: Update) -> None:
    """Replace object ``key`` by ``update(current bytes or None)`` atomically.

    ``update`` returns the new bytes, or ``None`` to delete the object; it may be called
    more than once (after a conflict, with the newer bytes), so it must not have side
    effects beyond its result.

    >>> import tempfile
    >>> s = Store(tempfile.mkdtemp())
    >>> update_object(s, "a/n", lambda old: b"1" if old is None else old + b"1")
    >>> update_object(s, "a/n", lambda old: b"1" if old is None else old + b"1")
    >>> s.get("a/n")
    b'11'
    """
    if store.is_local:
        return _update_local(store, key, update)
    kind = conditional_kind(store.fs)
    if kind == "s3":
        return _conditional(store, key, lambda fs: _attempt_s3(store, fs, key, update))
    if kind == "gcs":
        return _conditional(store, key, lambda fs: _attempt_gcs(store, fs, key, update))
    if kind == "memory":
        with _memory_guard:
            lock = _memory_locks.setdefault(store.path(key), threading.Lock())
        with lock:
            return _unguarded(store, key, update)
    return _unguarded(store, key, update)


def conditional_kind(fs: Any) -> str | None:
    """``"s3"``, ``"gcs"``, ``"memory"`` or ``None`` (no conditional writes) for a filesystem."""
    names = {c.__name__ for c in type(fs).__mro__}
    if "S3FileSystem" in names:
        return "s3"
    if "GCSFileSystem" in names:
        return "gcs"
    if "MemoryFileSystem" in names:
        return "memory"
    return None


def _unguarded(store: Store, key: str, update: Update) -> None:
    current = store.get(key)
    new = update(current)
    if new is None:
        if current is not None:
            store.delete(key)
    else:
        store.put(key, new)


# -- local disk --------------------------------------------------------------


def _update_local(store: Store, key: str, update: Update) -> None:
    path = store.path(key)
    directory, name = os.path.split(path)
    lock_path = os.path.join(directory, f".{name}.lock")
    try:
        os.makedirs(directory, exist_ok=True)
        fd = _lock(lock_path)
    except OSError as e:
        raise StorageError(f"cannot lock {path} for a merged write: {e}") from e
    try:
        _unguarded(store, key, update)
    finally:
        try:
            os.unlink(lock_path)  # while held: the next locker sees a fresh file
        except OSError:
            pass
        os.close(fd)


def _lock(lock_path: str) -> int:
    """An fd holding an exclusive flock on ``lock_path``, the file still being there.

    Lock files are removed after use, so a waiter may get the lock on a file already
    unlinked: it then checks the path still names its file, and tries again if not.
    """
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


# -- object stores -----------------------------------------------------------


def _conditional(store: Store, key: str, attempt: Callable[[Any], None]) -> None:
    """``attempt(fs)`` under the store's retry policy, as a single put is.

    Transient failures (429/5xx, resets, timeouts) are retried under the store's
    :class:`~xarray_precomputed.retry.RetryPolicy` (its attempts, backoff and timeout,
    counted from the start of the update); an endpoint that cannot be connected to, for
    ``connect_timeout``. A :class:`~xarray_precomputed.remote.Conflict` means another
    writer's update of the object got in first: read, merge and write again, apart from
    the failures, up to :data:`MAX_ATTEMPTS` times.
    """
    # No deadline on the requests themselves (the clients' timeouts bound them): one
    # counted from the start of the update would leave little time to the requests made
    # after long contention.
    store.write_with_retries(
        key, "write", lambda fs, _left: attempt(fs), max_conflicts=MAX_ATTEMPTS
    )


def _split(path: str) -> tuple[str, str]:
    bucket, _, name = path.partition("/")
    return bucket, name


def _attempt_s3(store: Store, fs: Any, key: str, update: Update) -> None:
    from botocore.exceptions import ClientError

    path = store.path(key)
    bucket, name = _split(path)
    client = sync(fs.loop, fs.set_session)

    async def read() -> tuple[bytes | None, str | None]:
        try:
            resp = await client.get_object(Bucket=bucket, Key=name)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        async with resp["Body"] as body:
            return await body.read(), resp["ETag"]

    current, etag = sync(fs.loop, read)
    new = update(current)
    try:
        if new is None:
            if etag is None:
                return
            sync(fs.loop, client.delete_object, Bucket=bucket, Key=name, IfMatch=etag)
        else:
            body = bytes(new) if not isinstance(new, bytes) else new
            cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
            sync(fs.loop, client.put_object, Bucket=bucket, Key=name, Body=body, **cond)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise Conflict() from e
        if new is None and code in ("NoSuchKey", "404"):
            raise Conflict() from e  # deleted meanwhile: decide again on what is there
        raise
    finally:
        fs.invalidate_cache(path)


def _attempt_gcs(store: Store, fs: Any, key: str, update: Update) -> None:
    from gcsfs.core import quote

    path = store.path(key)
    bucket, name = _split(path)
    try:
        headers, current = sync(
            fs.loop, fs._call, "GET",
            f"{fs._location}/download/storage/v1/b/{quote(bucket)}/o/{quote(name)}",
            alt="media",
        )  # fmt: skip
        generation = _header(headers, "x-goog-generation")
        if generation is None:
            raise StorageError(f"{store.url_of(key)}: the server sent no object generation")
    except FileNotFoundError:
        current, generation = None, "0"
    new = update(current)
    try:
        if new is None:
            if current is None:
                return
            sync(fs.loop, fs._call, "DELETE", "b/{}/o/{}", bucket, name,
                 ifGenerationMatch=generation)  # fmt: skip
        else:
            # a multipart upload (as gcsfs makes): fake-gcs-server checks the
            # precondition only there; GCS itself on every kind of upload
            head = (
                f"--{_BOUNDARY}\nContent-Type: application/json; charset=UTF-8\n\n"
                f"{json.dumps({'name': name})}\n--{_BOUNDARY}\n"
                "Content-Type: application/octet-stream\n\n"
            )
            sync(
                fs.loop, fs._call, "POST",
                f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
                uploadType="multipart", ifGenerationMatch=generation,
                headers={"Content-Type": f'multipart/related; boundary="{_BOUNDARY}"'},
                data=head.encode() + bytes(new) + f"\n--{_BOUNDARY}--".encode(),
                json_out=True,
            )  # fmt: skip
    except (FileExistsError, FileNotFoundError) as e:  # 412 (or deleted meanwhile)
        raise Conflict() from e
    except Exception as e:
        if status_of(e) in (409, 412):
            raise Conflict() from e
        raise
    finally:
        fs.invalidate_cache(path)


def _header(headers: Any, name: str) -> str | None:
    for k, v in dict(headers).items():
        if k.lower() == name:
            return v
    return None


__all__ = ["conditional_kind", "update_object"]
