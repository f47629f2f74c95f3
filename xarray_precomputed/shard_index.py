"""Finding chunks in a shard without reading it whole: index entries, minishard indexes.

A partial read of a shard costs an index-entry request, then one request per minishard
index, then the chunk data (docs/format.md §4.4). The first two are kept in a bounded, per-volume
:class:`IndexCache`, so the next cutout in a shard already touched costs only its chunk
requests. Cached offsets are trusted until the cache is cleared: a shard rewritten
underneath is noticed only when its chunks no longer decode (then its entries are dropped,
see :meth:`IndexCache.discard`); reopen the volume or call :func:`clear_index_caches`
after rewriting one.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import CorruptDataError
from .metadata import ShardingSpec
from .sharding import decode_minishard_index, shard_index_size
from .storage import Store

DEFAULT_INDEX_CACHE_BYTES = 32 << 20
# Ranges closer than ``gap`` bytes are fetched in one request, up to ``max_size`` bytes.
DEFAULT_COALESCE = {"gap": 1 << 20, "max_size": 64 << 20}
_ENTRY_BYTES = 64  # rough cost of one cached index entry
_caches: weakref.WeakSet[IndexCache] = weakref.WeakSet()


class IndexCache:
    """Least-recently-used cache of shard index entries and decoded minishard indexes.

    Bounded by ``max_bytes`` (0 disables it); thread-safe.

    >>> c = IndexCache(1000); c.put(("a", 1), "x", 600); c.put(("a", 2), "y", 600)
    >>> c.get(("a", 1)), c.get(("a", 2)), c.nbytes
    (None, 'y', 600)
    """

    def __init__(self, max_bytes: int = DEFAULT_INDEX_CACHE_BYTES) -> None:
        if int(max_bytes) < 0:
            raise ValueError(f"index cache size must be >= 0 bytes, not {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        _caches.add(self)

    def get(self, key: tuple) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._items[key] = (value, nbytes)
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes:
                _, (_, n) = self._items.popitem(last=False)
                self.nbytes -= n

    def discard(self, path: str) -> None:
        """Forget everything cached about the shard at ``path``."""
        with self._lock:
            for key in [k for k in self._items if k[1] == path]:
                self.nbytes -= self._items.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


def index_cache_bytes(storage_options: dict[str, Any]) -> int:
    """The cache bound from ``storage_options["index_cache"]`` (bytes; 0 or False disables)."""
    value = storage_options.get("index_cache", DEFAULT_INDEX_CACHE_BYTES)
    if value is True or value is None:
        return DEFAULT_INDEX_CACHE_BYTES
    if value is False:
        return 0
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"storage_options['index_cache'] must be bytes >= 0, not {value!r}")
    return value


def coalescing_options(storage_options: dict[str, Any]) -> dict[str, int]:
    """``DEFAULT_COALESCE`` updated from ``storage_options["coalesce"]``."""
    value = storage_options.get("coalesce") or {}
    unknown = sorted(set(value) - set(DEFAULT_COALESCE)) if isinstance(value, dict) else None
    if unknown is None or unknown:
        raise ValueError(
            f"storage_options['coalesce'] must be a dict with keys {sorted(DEFAULT_COALESCE)}, "
            f"not {value!r}"
        )
    out = {**DEFAULT_COALESCE, **value}
    if any(not isinstance(v, int) or v < 0 for v in out.values()):
        raise ValueError(f"storage_options['coalesce'] values must be bytes >= 0, not {value!r}")
    return out


def clear_index_caches() -> None:
    """Empty the shard index caches of every open volume in this process.

    >>> clear_index_caches()
    """
    for cache in list(_caches):
        cache.clear()


def coalesce(
    ranges: Sequence[tuple[int, int]], gap: int, max_size: int
) -> list[tuple[int, int, list[int]]]:
    """Group byte ranges into request spans ``(start, end, members)``.

    A range joins the previous span when it starts at most ``gap`` bytes after the span's
    end and the span stays within ``max_size`` bytes (a single larger range is its own span).

    >>> coalesce([(0, 10), (12, 20), (100, 110)], gap=5, max_size=1000)
    [(0, 20, [0, 1]), (100, 110, [2])]
    """
    spans: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(ranges)), key=lambda i: ranges[i]):
        s, e = ranges[i]
        if spans:
            s0, e0, members = spans[-1]
            if s - e0 <= gap and max(e, e0) - s0 <= max_size:
                spans[-1] = (s0, max(e, e0), members + [i])
                continue
        spans.append((s, e, [i]))
    return spans


def index_entries(
    store: Store, path: str, spec: ShardingSpec, minishards: Sequence[int],
    cache: IndexCache, where: str,
) -> dict[int, tuple[int, int]] | None:  # fmt: skip
    """Absolute ``[start, end)`` of each minishard's index; ``None`` if the shard is missing.

    Entries not cached are read in one ranged request spanning the lowest to the highest.
    """
    out: dict[int, tuple[int, int]] = {}
    todo = []
    for m in minishards:
        hit = cache.get(("entry", path, m))
        if hit is None:
            todo.append(m)
        else:
            out[m] = hit
    if not todo:
        return out
    lo, hi = min(todo), max(todo) + 1
    raw = store.get_range(path, 16 * lo, 16 * hi)
    if raw is None:
        return None
    if len(raw) != 16 * (hi - lo):
        raise CorruptDataError(
            f"{where}: shard is shorter than its {shard_index_size(spec)}-byte index"
        )
    table = np.frombuffer(raw, "<u8").reshape(-1, 2).astype(np.uint64)
    offset = shard_index_size(spec)
    for j, (s, e) in enumerate(table.tolist()):
        if e < s:
            raise CorruptDataError(f"{where}: minishard {lo + j} index has end before start")
        cache.put(("entry", path, lo + j), (s + offset, e + offset), _ENTRY_BYTES)
        if lo + j in todo:
            out[lo + j] = (s + offset, e + offset)
    return out


def minishard_indexes(
    store: Store, path: str, spec: ShardingSpec, entries: dict[int, tuple[int, int]],
    cache: IndexCache, coalescing: dict[str, int], where: str,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Decoded minishard indexes of the non-empty minishards among ``entries``."""
    out = {}
    todo = []
    for m, (s, e) in entries.items():
        if s == e:
            continue
        hit = cache.get(("mini", path, m))
        if hit is None:
            todo.append(m)
        else:
            out[m] = hit
    ranges = [entries[m] for m in todo]
    size = _local_size(store, path) if todo else None
    for blob, m in zip(
        fetch_ranges(store, path, ranges, coalescing, where, "minishard index"), todo
    ):
        decoded = decode_minishard_index(blob, spec, f"{where} minishard {m}", entries[m], size)
        out[m] = decoded
        cache.put(("mini", path, m), decoded, sum(a.nbytes for a in decoded) + _ENTRY_BYTES)
    return out


def _local_size(store: Store, path: str) -> int | None:
    """A local shard's size (one stat), to check every index entry against; remote
    shards are not asked (a request): their chunks are checked when fetched."""
    if not store.is_local:
        return None
    try:
        return os.path.getsize(store.path(path))
    except OSError:
        return None


def fetch_ranges(
    store: Store, path: str, ranges: Sequence[tuple[int, int]], coalescing: dict[str, int],
    where: str, what: str, reuse_buffer: bool = False,
) -> list[memoryview]:  # fmt: skip
    """Byte ranges of one shard, fetched with coalesced requests (into the thread's
    reused buffer with ``reuse_buffer``: see ``Store.get_ranges``)."""
    if not ranges:
        return []
    spans = coalesce(ranges, coalescing["gap"], coalescing["max_size"])
    fetched = store.get_ranges([(path, s, e) for s, e, _ in spans], reuse_buffer)
    out: list[memoryview] = [memoryview(b"")] * len(ranges)
    for (s0, e0, members), data in zip(spans, fetched):
        if data is None:
            raise CorruptDataError(f"{where}: shard disappeared while reading {what}")
        if len(data) < e0 - s0:
            raise CorruptDataError(
                f"{where}: {what} [{s0}, {e0}) lies beyond the shard end (truncated shard)"
            )
        view = memoryview(data)
        for i in members:
            s, e = ranges[i]
            out[i] = view[s - s0 : e - s0]
    return out
