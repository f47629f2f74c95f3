"""Where an assembled shard's bytes go (see :func:`.sharding.assemble_shard`): a growing
bytearray, the buffer of a laid-out shard whose chunks are already in place, or a file
written front to back.

Raw chunks may be written straight into the destination (:class:`InPlace`) instead of being
copied out of bytes of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

_scratch = threading.local()


class InPlace:
    """A chunk's stored bytes written straight into the shard being assembled, with no
    copy of their own: what a producer may return instead of the bytes (raw chunks).

    ``fill(dst)`` writes ``size`` bytes into the uint8 array ``dst`` and returns whether
    the chunk is kept (``False``: leave it out, as a producer returning ``None``).
    """

    __slots__ = ("size", "fill")

    def __init__(self, size: int, fill: Callable[[np.ndarray], bool]) -> None:
        self.size = size
        self.fill = fill


class _Filled:
    """What :meth:`_ShardBuffer.fill` returns for a chunk kept: its length, nothing to copy."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class _ShardBuffer:
    """What :func:`.sharding.assemble_shard` appends to in memory: a bytearray, or a laid-out
    shard's buffer (:class:`.write_tasks.ShardSpace`)."""

    def __init__(self, isize: int, space=None) -> None:
        self.space = space
        if space is not None:  # a laid-out shard: chunks may already be in place
            self.buf = space.buf
            self.ba = None
        else:
            self.buf = None
            self.ba = bytearray(isize)
        self.n = isize

    def __len__(self) -> int:
        return self.n

    def dropped(self) -> None:
        """A chunk was left out: the later chunks no longer sit where they will be stored."""
        if self.space is not None:
            self.space.evacuate()
            self.space = None

    def fill(self, chunk: InPlace) -> _Filled | None:
        """Write ``chunk`` at the end; its bytes count once :meth:`extend` is given the result."""
        size = chunk.size
        if self.buf is not None and self.n + size <= len(self.buf):
            if not chunk.fill(self.buf[self.n : self.n + size]):
                return None
            return _Filled(size)
        tmp = np.empty(size, np.uint8)
        return tmp if chunk.fill(tmp) else None

    def extend(self, data) -> None:
        size = len(data)
        if isinstance(data, _Filled):  # already in place
            self.n += size
            return
        if self.buf is not None and self.n + size > len(self.buf):
            self.ba = bytearray(self.buf[: self.n])  # should not happen: the layout was wrong
            self.buf = None
        if self.buf is not None:
            self.buf[self.n : self.n + size] = np.frombuffer(data, np.uint8)
        else:
            self.ba.extend(data)
        self.n += size

    def finish(self, header: bytes) -> bytearray | memoryview:
        if self.buf is None:
            self.ba[: len(header)] = header
            return self.ba
        self.buf[: len(header)] = np.frombuffer(header, np.uint8)
        return memoryview(self.buf)[: self.n]


class ShardFileSink:
    """A shard written front to back into an open file, so that it is never whole in memory.

    The shard index goes first but is known last: its place is written as zeros and filled
    in by :meth:`finish`. A chunk left out moves nothing (the later ones are not written
    yet). Raw chunks pass through a scratch buffer each thread reuses.
    """

    def __init__(self, f: BinaryIO, isize: int) -> None:
        self.f = f
        f.write(bytes(isize))
        self.n = isize

    def __len__(self) -> int:
        return self.n

    def dropped(self) -> None:
        pass

    def fill(self, chunk: InPlace) -> _Filled | None:
        size = chunk.size
        buf = getattr(_scratch, "buf", None)
        if buf is None or len(buf) < size:
            buf = _scratch.buf = np.empty(size, np.uint8)
        dst = buf[:size]
        if not chunk.fill(dst):
            return None
        self.f.write(memoryview(dst))
        return _Filled(size)

    def extend(self, data) -> None:
        if not isinstance(data, _Filled):
            self.f.write(data)
        self.n += len(data)

    def finish(self, header: bytes) -> int:
        self.f.seek(0)
        self.f.write(header)
        return self.n
