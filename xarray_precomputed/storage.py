"""Byte storage over fsspec: whole objects, byte ranges, atomic puts.

A :class:`Store` is small and picklable (a URL and storage options); the fsspec
filesystem is created lazily in each process. Missing objects read as ``None``;
any other failure becomes a :class:`~xarray_precomputed.errors.StorageError`
naming the object.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import local_io
from .errors import StorageError
from .local_io import StreamedObject
from .object_reads import open_reader, reader_choice
from .remote import (
    OWN_OPTIONS,
    RemoteCaller,
    anonymous_gcs_base,
    gcs_media_url,
    open_filesystem,
    pipe_creating_parents,
)
from .retry import RetryPolicy, describe
from .urls import normalize_url

if TYPE_CHECKING:  # fsspec is imported where a filesystem is made (remote.py)
    import fsspec


class Store:
    """Objects under one URL prefix.

    >>> import tempfile
    >>> s = Store(tempfile.mkdtemp())
    >>> s.put("a/b", b"xyz")
    True
    >>> s.get("a/b"), s.get_range("a/b", 1, 3), s.get("missing")
    (b'xyz', b'yz', None)
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        self.url = normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.retry = RetryPolicy.from_option(self.storage_options.get("retry"))
        try:  # a typo fails here, for local paths too (which never use a reader)
            reader_choice(self.storage_options)
        except ValueError as e:
            raise StorageError(f"cannot open storage at {self.url}: {e}") from e
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root: str | None = None
        self._remote = RemoteCaller(self, self.retry)
        self._reset_reads()

    def _reset_reads(self) -> None:
        self._read_fs: Any = None
        self._read_root: str | None = None
        self._gcs_base = anonymous_gcs_base(self.url, self.storage_options)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def _connect(self) -> tuple[fsspec.AbstractFileSystem, str]:
        if self._fs is None:
            self._fs, self._root = open_filesystem(self.url, self.storage_options, self.retry)
        return self._fs, self._root  # type: ignore[return-value]

    def reset_connection(self) -> None:
        """Forget the filesystem (e.g. after ``storage_options`` changed); made anew on use."""
        self._fs = None
        self._root = None
        self._reset_reads()

    @property
    def fsspec_options(self) -> dict[str, Any]:
        """``storage_options`` without this package's own keys (``retry``, ``index_cache``, ``coalesce``)."""
        return {k: v for k, v in self.storage_options.items() if k not in OWN_OPTIONS}

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._connect()[0]

    @property
    def read_fs(self) -> Any:
        """What reads go through: obstore where it can (see :mod:`.object_reads`), else
        ``fs``, or fsspec's plain HTTP for anonymous ``gs://``."""
        if self._read_fs is None:
            try:
                reader = open_reader(self.url, self.storage_options, self.retry, self._gcs_base)
            except ValueError as e:
                raise StorageError(f"cannot open storage at {self.url}: {e}") from e
            if reader is not None:
                self._read_fs, self._read_root = reader, reader.root
                if reader.anonymous:
                    # Recorded, so pickled copies (Dask workers) and writes agree.
                    self.storage_options = {**self.storage_options, "anon": True}
                    self._fs = None
            elif self._gcs_base is not None:
                self._read_fs = open_filesystem(self._gcs_base, {}, self.retry)[0]
            else:
                return self.fs
        return self._read_fs

    def read_path(self, key: str) -> str:
        """What :attr:`read_fs` calls the object ``key``."""
        if self._read_fs is None and not self.is_local:
            _ = self.read_fs  # decides between obstore and fsspec
        if self._read_root is not None:
            return self.path(key, self._read_root).lstrip("/")
        if self._gcs_base is None:
            return self.path(key)
        return gcs_media_url(self._gcs_base, self.path(key, self.url.split("://", 1)[1]))

    def path(self, key: str, root: str | None = None) -> str:
        """Full path of ``key`` for the filesystem (``..`` components resolved)."""
        if root is None:
            root = self._connect()[1] if not self.is_local else self.url
        parts = root.split("/") if root else []
        for p in key.split("/"):
            if p == "..":
                if parts:
                    parts.pop()
            elif p and p != ".":
                parts.append(p)
        joined = "/".join(parts)
        if self.is_local or root.startswith("/"):
            return "/" + joined.lstrip("/")
        return joined

    def url_of(self, key: str) -> str:
        """A human-readable location for error messages."""
        return f"{self.url}/{key}"

    # -- reads ---------------------------------------------------------------

    def get(self, key: str, max_size: int | None = None) -> bytes | None:
        """The whole object, or ``None`` when it does not exist.

        ``max_size`` bounds what a cloud-files ``.gz``/``.br`` object may expand to.
        """
        if self.is_local:
            return local_io.read_whole(self.path(key), max_size)
        data = self._get_remote(key)
        return data if data is None or isinstance(data, bytes) else bytes(data)

    def _get_remote(self, key: str) -> bytes | memoryview | None:
        path = self.read_path(key)
        remote = self._remote
        try:
            return remote.run(
                self.url_of(key), lambda fs, t: remote.call(fs, "cat_file", path, timeout=t)
            )
        except FileNotFoundError:
            return None
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"cannot read {self.url_of(key)}: {describe(e)}") from e

    def get_reusing_buffer(
        self, key: str, max_size: int | None = None
    ) -> memoryview | bytes | None:
        """The whole object, read into a buffer this thread reuses (local stores).

        The result is valid until the same thread calls this again: callers decode
        and copy out before reading the next object. Reusing the buffer avoids the
        page faults of a fresh multi-MiB allocation per shard.
        """
        if not self.is_local:
            return self._get_remote(key)  # obstore's buffer as is: no copy
        view = local_io.read_whole_reusing(self.path(key))
        if view is None:
            return self.get(key, max_size)  # also looks for cloud-files' suffixed variants
        return view

    def get_many(
        self, keys: Sequence[str], max_size: int | None = None
    ) -> list[bytes | memoryview | None]:
        """Several whole objects, fetched concurrently on remote stores."""
        if self.is_local:
            return [self.get(k, max_size) for k in keys]
        paths = [self.read_path(k) for k in keys]
        # cat_ranges without bounds, not cat: no glob expansion of the paths (a media
        # URL's "?alt=media" would be taken for a wildcard), one GET per object.
        return self._remote.run_batch(
            [self.url_of(k) for k in keys],
            lambda fs, idx, t: self._remote.call(
                fs,
                "cat_ranges",
                [paths[i] for i in idx],
                None,
                None,
                on_error="return",
                timeout=t,
            ),  # fmt: skip
        )

    def get_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of an object (fewer if it is shorter), ``None`` if missing."""
        return self.get_ranges([(key, start, end)])[0]

    def get_ranges(
        self, requests: Sequence[tuple[str, int, int]], reuse_buffer: bool = False
    ) -> list[bytes | memoryview | None]:
        """Several byte ranges at once, fetched concurrently.

        With ``reuse_buffer`` a local store reads them into a buffer this thread reuses,
        valid until the thread's next reusing read (as :meth:`get_reusing_buffer`): a
        fresh allocation per range would fault in fresh pages for every chunk.
        """
        if not requests:
            return []
        if self.is_local:
            # Sequential: callers already run in the pool, and page-cache reads are quick.
            if reuse_buffer:
                return local_io.read_ranges_reusing(
                    [(self.path(k), start, end) for k, start, end in requests]
                )
            return [local_io.read_range(self.path(k), start, end) for k, start, end in requests]
        paths = [self.read_path(k) for k, _, _ in requests]
        remote = self._remote

        def fetch(fs, idx: list[int], t: float) -> list[Any]:
            if len(idx) == 1:
                (i,) = idx
                try:
                    return [remote.call(fs, "cat_file", paths[i], start=requests[i][1],
                                        end=requests[i][2], timeout=t)]  # fmt: skip
                except Exception as e:  # judged per entry, as cat_ranges does
                    return [e]
            return remote.call(
                fs, "cat_ranges", [paths[i] for i in idx], [requests[i][1] for i in idx],
                [requests[i][2] for i in idx], on_error="return", timeout=t,
            )  # fmt: skip

        what = [f"{self.url_of(k)}[{s}:{e}]" for k, s, e in requests]
        out = self._remote.run_batch(what, fetch)
        for i, r in enumerate(out):
            start, end = requests[i][1], requests[i][2]
            if r is not None and len(r) > end - start:
                # The server ignored the Range header and sent the whole object.
                out[i] = r[start:end]
        return out

    def exists(self, key: str) -> bool:
        if self.is_local:
            return os.path.exists(self.path(key))
        path = self.read_path(key)
        remote = self._remote
        try:
            return remote.run(
                self.url_of(key), lambda fs, t: remote.call(fs, "exists", path, timeout=t)
            )
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"cannot reach {self.url_of(key)}: {describe(e)}") from e

    def object_info(self, key: str) -> dict[str, Any]:
        """fsspec's ``info`` of the remote object ``key`` (size, ETag, md5Hash, ...), under
        the retry policy.

        Raises ``FileNotFoundError`` when it does not exist, :class:`StorageError` when
        the retries give up, and a filesystem's other (final) errors as they are.
        """
        path = self.path(key)
        remote = self._remote
        return remote.run(
            self.url_of(key),
            lambda fs, t: remote.call(fs, "info", path, timeout=t),
            fs=lambda: self.fs,
        )

    def tree_size(self, key: str) -> int:
        """Bytes stored under ``key`` (a directory or prefix); 0 when nothing is."""
        path = self.path(key)
        if self.is_local:
            return local_io.tree_size(path)
        remote = self._remote
        try:
            return int(
                remote.run(
                    self.url_of(key),
                    lambda fs, t: remote.call(fs, "du", path, total=True, timeout=t),
                    fs=lambda: self.fs,
                )
            )
        except FileNotFoundError:
            return 0
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"cannot read {self.url_of(key)}: {describe(e)}") from e

    # -- writes --------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview | StreamedObject) -> bool:
        """Store an object atomically: readers see the old object or the new, never a mix.

        ``data`` may be a :class:`StreamedObject`: on local disk it is written to the file
        as it is produced, never whole in memory. Returns whether an object was stored
        (a streamed object may decline).
        """
        path = self.path(key)
        if isinstance(data, StreamedObject):
            if self.is_local:
                return local_io.write_atomically(path, data.write)
            data = data.to_bytes()
            if data is None:
                return False
        if self.is_local:
            return local_io.write_atomically(path, lambda f: f.write(data) is not None)
        # One request: object stores publish it whole or not at all, so repeating it
        # after a transient failure is safe. A bytearray is passed as is, so a shard is
        # not copied once more before upload.
        payload = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        remote = self._remote

        def attempt(fs: Any, t: float) -> None:
            pipe_creating_parents(
                fs, path, payload, lambda name, *a, **kw: remote.call(fs, name, *a, timeout=t, **kw)
            )

        self.write_with_retries(key, "write", attempt)
        self.fs.invalidate_cache(path)
        return True

    def delete(self, key: str) -> None:
        """Remove an object if it exists."""
        path = self.path(key)
        if self.is_local:
            local_io.remove_file(path)
            return
        remote = self._remote
        self.write_with_retries(
            key, "delete", lambda fs, t: remote.call(fs, "rm_file", path, timeout=t)
        )

    def remove_tree(self, key: str) -> None:
        """Remove everything under ``key`` (a directory or prefix), if anything is there.

        Remotely one recursive ``rm`` (a listing, then deletes) under the retry policy; a
        repeated attempt removes what an interrupted one left, and nothing left is no error.
        """
        path = self.path(key)
        if self.is_local:
            local_io.remove_tree(path)
            return
        remote = self._remote
        self.write_with_retries(
            key, "delete", lambda fs, t: remote.call(fs, "rm", path, recursive=True, timeout=t)
        )
        self.fs.invalidate_cache(path)

    def write_with_retries(
        self, key: str, verb: str, attempt: Callable[[Any, float], Any], max_conflicts: int = 1
    ) -> None:
        """``attempt(fs, seconds_left)`` under the retry policy, through fsspec (:attr:`fs`).

        Transient failures (429/5xx, resets, timeouts) are retried, and up to
        ``max_conflicts`` lost races (:class:`~xarray_precomputed.remote.Conflict`, for
        conditional updates); giving up, or any other failure, raises
        :class:`StorageError` naming the object. Deleting a missing object is no error.
        """
        try:
            self._remote.run(
                self.url_of(key), attempt, verb=verb, fs=lambda: self.fs,
                max_conflicts=max_conflicts,
            )  # fmt: skip
        except StorageError:
            raise
        except FileNotFoundError as e:
            if verb == "delete":
                return
            raise StorageError(f"cannot {verb} {self.url_of(key)}: {describe(e)}") from e
        except Exception as e:
            raise StorageError(f"cannot {verb} {self.url_of(key)}: {describe(e)}") from e
