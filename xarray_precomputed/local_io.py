"""Local files: atomic writes (whole or streamed as produced) and reads into a buffer each
thread reuses.

:class:`~xarray_precomputed.storage.Store` maps keys to paths and calls these for local
volumes. Reads that are decoded at once go into the thread's buffer: a fresh ``bytes`` per
chunk would be freshly mapped memory again and again, each first touch a page fault.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np

from .compression import gzip_decompress
from .errors import CorruptDataError, StorageError

_thread_buffers = threading.local()
_GROWTH = 1 << 20  # thread buffers grow to whole MiB


class StreamedObject:
    """An object's bytes as ``write(f)`` writes them to an open binary file, returning
    whether to store it at all: what :meth:`~xarray_precomputed.storage.Store.put` takes
    for an object that should not be whole in memory (a local shard is written chunk by
    chunk as it is encoded).

    >>> StreamedObject(lambda f: f.write(b"abc") == 3).to_bytes()
    b'abc'
    """

    __slots__ = ("write",)

    def __init__(self, write: Callable[[BinaryIO], bool]) -> None:
        self.write = write

    def to_bytes(self) -> bytes | None:
        """The whole object in memory (``None``: not to be stored)."""
        buf = io.BytesIO()
        return buf.getvalue() if self.write(buf) else None


def thread_buffer(size: int) -> memoryview:
    """``size`` bytes of this thread's reusable buffer, grown as needed.

    What a previous call returned is overwritten: callers decode before reading again.
    The buffer is ``np.empty``, not a zero-filled bytearray: pages are touched only when
    read into; it grows to the next MiB so that sizes a little larger do not regrow it.
    """
    buf = getattr(_thread_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _thread_buffers.buf = np.empty(-(-size // _GROWTH) * _GROWTH, np.uint8)
    return memoryview(buf)[:size]


def write_atomically(path: str, write: Callable[[BinaryIO], bool]) -> bool:
    """Create or replace ``path`` with what ``write(f)`` writes to an open temp file beside
    it, renamed into place: readers see the old file or the new, never a mix.

    ``write`` returns whether to keep the file; if not (or if it raises), the temp file is
    removed and ``path`` is left as it was. Returns whether ``path`` was written.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a", "obj")
    >>> write_atomically(p, lambda f: f.write(b"xyz") > 0), open(p, "rb").read()
    (True, b'xyz')
    >>> write_atomically(p, lambda f: f.write(b"other") < 0), open(p, "rb").read()
    (False, b'xyz')
    >>> new = os.path.join(os.path.dirname(p), "new", "x")  # declined: no directory made
    >>> write_atomically(new, lambda f: False), os.listdir(os.path.dirname(p))
    (False, ['obj'])
    """
    directory = os.path.dirname(path)
    # the temp file goes in the nearest directory that exists: none is created for an
    # object that is then not stored (an empty shard)
    home = directory
    while home and not os.path.isdir(home) and os.path.dirname(home) != home:
        home = os.path.dirname(home)
    tmp = os.path.join(home, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            keep = write(f)
        if keep:
            os.makedirs(directory, exist_ok=True)
            os.replace(tmp, path)
            return True
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError):
            raise StorageError(f"cannot write {path}: {e}") from e
        raise
    _remove(tmp)
    return False


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_file(path: str) -> None:
    """Remove a file if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Remove a directory and everything under it, if it exists."""
    shutil.rmtree(path, ignore_errors=True)


def tree_size(path: str) -> int:
    """Bytes of the files under ``path`` (symbolic links not followed); 0 if nothing is there."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            else:
                total += e.stat().st_size
    return total


def open_for_reading(path: str) -> BinaryIO | None:
    """``path`` opened for unbuffered reading, or ``None`` if it does not exist."""
    try:
        return open(path, "rb", buffering=0)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e}") from e


def _read_into(f: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``f``'s position; fewer bytes only at the end of the file."""
    n = 0
    while n < len(view):
        got = f.readinto(view[n:])
        if not got:
            break
        n += got
    return n


def read_whole(path: str, max_size: int | None = None) -> bytes | None:
    """The whole file, or ``None`` if it does not exist. Where it does not, cloud-files'
    compressed variants ``path.gz`` / ``path.br`` are read and decompressed (at most
    ``max_size`` bytes; docs/format.md §2.4)."""
    f = open_for_reading(path)
    if f is not None:
        with f:
            return f.read()
    for suffix in (".gz", ".br"):
        f = open_for_reading(path + suffix)
        if f is None:
            continue
        with f:
            data = f.read()
        try:
            return _decompress_suffixed(data, suffix, max_size, path + suffix)
        except CorruptDataError:
            raise
        except Exception as e:  # the object is there but corrupt
            raise CorruptDataError(f"cannot decompress {path + suffix}: {e}") from e
    return None


def _decompress_suffixed(data: bytes, suffix: str, max_size: int | None, where: str) -> bytes:
    if suffix == ".gz":
        return gzip_decompress(data, max_size, where)
    import brotli  # only needed for cloud-files' .br files

    d = brotli.Decompressor()
    limit = (max_size + 1) if max_size is not None else 0
    out = d.process(data, output_buffer_limit=limit) if limit else d.process(data)
    if max_size is not None and len(out) > max_size:
        raise CorruptDataError(f"{where}: brotli data expands beyond {max_size} bytes")
    if not d.is_finished():
        raise CorruptDataError(f"{where}: brotli data is truncated")
    return out


def read_whole_reusing(path: str) -> memoryview | None:
    """The whole file in the thread's buffer (:func:`thread_buffer`); ``None`` if missing."""
    f = open_for_reading(path)
    if f is None:
        return None
    with f:
        view = thread_buffer(os.fstat(f.fileno()).st_size)
        return view[: _read_into(f, view)]


def read_range(path: str, start: int, end: int) -> bytes | None:
    """Bytes ``[start, end)`` of the file (fewer past its end), ``None`` if missing."""
    f = open_for_reading(path)
    if f is None:
        return None
    with f:
        # a corrupt index may ask for exabytes: never allocate past the file's end
        end = min(end, os.fstat(f.fileno()).st_size)
        f.seek(start)
        return f.read(max(0, end - start))


def read_ranges_reusing(requests: Sequence[tuple[str, int, int]]) -> list[memoryview | None]:
    """Byte ranges ``(path, start, end)`` in the thread's buffer, one ``open`` per file."""
    files: dict[str, tuple[BinaryIO, int] | None] = {}  # path -> (file, size), None if missing
    try:
        for path, _, _ in requests:
            if path not in files:
                f = open_for_reading(path)
                files[path] = None if f is None else (f, os.fstat(f.fileno()).st_size)
        # a corrupt index may ask for exabytes: never allocate past a file's end
        spans = [
            (f[0], start, max(0, min(end, f[1]) - start)) if f else None
            for (path, start, end) in requests
            for f in (files[path],)
        ]
        view = thread_buffer(sum(sp[2] for sp in spans if sp))
        out: list[memoryview | None] = []
        pos = 0
        for sp in spans:
            if sp is None:
                out.append(None)
                continue
            f, start, n = sp
            f.seek(start)
            n = _read_into(f, view[pos : pos + n])
            out.append(view[pos : pos + n])
            pos += n
        return out
    finally:
        for entry in files.values():
            if entry is not None:
                entry[0].close()
