"""Parts of input blocks kept for the next boxes of a chain, so that input that must be
computed whole is not computed once per shard it overlaps.

Input blocks that do not line up with shards feed several write tasks. Each task
computes the blocks it overlaps itself (:class:`.input_blocks.BlockRecipe`), which keeps
memory bounded but repeats the work: 192^3 blocks over 512x256x256 shards are computed
2.2 times each, 100x700x50 blocks 3.6 times. The write graph therefore writes the boxes
of a line of shards along the axis where blocks are shared most in one task, a *chain*
(:mod:`.write_chains`), and a box that computes a block whole keeps the parts the later
boxes of its chain need, so that they take them instead of computing the block again.

What a process keeps is bounded: its running chains' boxes and the kept parts together
stay within :data:`HELD_BOXES` boxes (kept parts at least one box): one chain running
alone keeps up to two boxes of parts, two chains share one. A part that does not fit
is not kept (its box computes the block again), and parts needed by the next box win
over parts needed later.

>>> parts = KeptParts()
>>> with parts.running(chain := ("write", 0), box=8):  # alone: 2 boxes of parts
...     parts.offer(chain, "block", 1, np.arange(8, dtype="uint8"))
...     parts.offer(chain, "block", 2, np.arange(8, 16, dtype="uint8"))
...     parts.offer(chain, "other", 1, np.arange(8, dtype="uint8"))  # wins over position 2
...     parts.take(chain, "block", 1).tolist()
True
True
True
[0, 1, 2, 3, 4, 5, 6, 7]
>>> parts.used  # what the chain kept is dropped when it stops running
0
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layout import copy_into

HELD_BOXES = 3  # a process's running chains' boxes and kept parts, in boxes


class KeptParts:
    """The block parts one process keeps for later boxes of chains, within its budget.

    Entries are keyed by (chain, block key, position of the box that will take it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, Any, int], np.ndarray] = {}
        self._running: dict[Any, int] = {}  # chain: bytes of one of its boxes
        self.used = 0
        self.taken = self.missed = 0  # parts found and not found by the boxes they were for

    def limit(self) -> int:
        """The bytes of parts this process may keep now."""
        if not self._running:
            return 0
        box = max(self._running.values())
        return box * max(1, HELD_BOXES - len(self._running))

    @contextlib.contextmanager
    def running(self, chain: Any, box: int):
        """While a chain (of boxes of ``box`` bytes) runs here; after it nothing of it is kept."""
        with self._lock:
            self._running[chain] = box
            self._shrink(self.limit(), lambda c, pos: True)
        try:
            yield self
        finally:
            with self._lock:
                del self._running[chain]
                self._shrink(0, lambda c, pos: c == chain)

    def take(self, chain: Any, key: Any, position: int) -> np.ndarray | None:
        """The part of block ``key`` kept for the box at ``position``, forgotten here."""
        with self._lock:
            part = self._entries.pop((chain, key, position), None)
            if part is None:
                self.missed += 1
            else:
                self.used -= part.nbytes
                self.taken += 1
            return part

    def offer(self, chain: Any, key: Any, position: int, part: np.ndarray) -> bool:
        """Keep a copy of ``part`` of block ``key`` for the box at ``position`` if it fits,
        making room by dropping parts this chain needs later than ``position``."""
        size = part.nbytes
        with self._lock:
            limit = self.limit()
            if (chain, key, position) in self._entries or size > limit:
                return (chain, key, position) in self._entries
            self._shrink(limit - size, lambda c, pos: c == chain and pos > position)
            if self.used + size > limit:
                return False
            self.used += size  # reserved now, published once copied
        try:
            kept = _own_pages(part)
        except BaseException:
            with self._lock:
                self.used -= size
            raise
        with self._lock:
            self._entries[(chain, key, position)] = kept
        return True

    def _shrink(self, limit: int, which) -> None:
        """Drop entries ``which(chain, position)`` allows, needed last first, until
        ``limit`` bytes are kept."""
        if self.used <= limit:
            return
        for k in sorted((k for k in self._entries if which(k[0], k[2])), key=lambda k: -k[2]):
            self.used -= self._entries.pop(k).nbytes
            if self.used <= limit:
                return


def _own_pages(part: np.ndarray) -> np.ndarray:
    """A copy of ``part`` (in its memory order) in an anonymous map of its own.

    Parts are taken by other boxes, kept and freed in any order, from several threads:
    from the heap they would leave each thread's arena as large as the most it ever kept
    (RSS ~2 budgets for 2 threads); a map is given back to the system when freed.
    """
    flat = np.frombuffer(mmap.mmap(-1, max(part.nbytes, 1)), part.dtype, count=part.size)
    fortran = part.ndim > 1 and abs(part.strides[0]) < abs(part.strides[-2])
    out = flat.reshape(part.shape[::-1]).T if fortran else flat.reshape(part.shape)
    copy_into(out, part)
    return out


_kept: KeptParts | None = None
_kept_pid = 0
_kept_lock = threading.Lock()


def kept_parts() -> KeptParts:
    """This process's :class:`KeptParts` (a new one after a fork)."""
    global _kept, _kept_pid
    with _kept_lock:
        if _kept is None or _kept_pid != os.getpid():
            _kept, _kept_pid = KeptParts(), os.getpid()
        return _kept


@dataclass(frozen=True)
class Share:
    """How one task shares one input block with the tasks of its chain: whether an
    earlier task also needs it (and may have kept this task's part), and the parts
    (block coordinates, x/y/z) later tasks need, by their position."""

    earlier: bool
    later: tuple[tuple[int, tuple[slice, slice, slice]], ...]


@dataclass(frozen=True, eq=False)
class ChainLink:
    """A box's place in its chain: the chain, its position, the bytes of the chain's
    largest box, and its :class:`Share` per piece (by index)."""

    chain: Any
    position: int
    box: int
    shares: dict[int, Share]

    def part(self, index: int, recipe: Any, src: tuple[slice, slice, slice]) -> np.ndarray:
        """``recipe``'s block at ``src`` (x, y, z): kept by an earlier task, or computed;
        computed whole when later tasks need parts of it, and their parts kept."""
        share = self.shares.get(index)
        full = (*src, slice(None))
        if share is None:
            return recipe.compute(full)
        parts = kept_parts()
        if share.earlier:
            got = parts.take(self.chain, recipe.key, self.position)
            if got is not None:
                return got
        if not share.later:
            return recipe.compute(full)
        whole = recipe.compute(None)
        for position, region in share.later:
            parts.offer(self.chain, recipe.key, position, whole[(*region, slice(None))])
        return whole[full]
