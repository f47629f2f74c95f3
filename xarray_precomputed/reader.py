"""Reading voxels of one scale: selection -> chunks -> bytes -> decode -> array.

:class:`ScaleReader` is what Dask ships to workers: a :class:`Store` (URL and
storage options) and the parsed metadata, nothing else. A read groups the chunks
it needs by shard, fetches each shard index once, coalesces byte ranges, and
writes each chunk into a C-ordered output, so Dask blocks concatenate with
straight copies and users get NumPy's default order: compressed_segmentation is
decoded straight into the output, other encodings are decoded (x-fastest) and
copied with a tiled transposing copy (``layout.copy_into``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .chunk_grid import chunk_key, chunk_shape, morton_encode, shard_box_chunks
from .codecs import scale_codec
from .compression import GZIP_MAGIC, gzip_decompress
from .errors import ChunkNotFoundError, CorruptDataError
from .layout import copy_into, empty
from .metadata import Scale, VolumeInfo
from .pools import io_pool
from .shard_index import (
    IndexCache,
    coalescing_options,
    fetch_ranges,
    index_cache_bytes,
    index_entries,
    minishard_indexes,
)
from .sharding import (
    decode_chunk_data,
    decode_minishard_index,
    lookup,
    parse_shard_index,
    shard_and_minishard,
    shard_index_size,
    shard_key,
)
from .storage import Store

AxisSel = slice | np.ndarray
_REMOTE_BATCH = 8  # chunks per remote task: 8 tasks in flight keep 64 requests going


@dataclass
class _AxisPlan:
    """For one axis: the chunk cells touched and, per cell, where values go."""

    cells: np.ndarray  # chunk indices along the axis
    out: list[AxisSel]  # positions in the output
    local: list[AxisSel]  # positions within the chunk
    length: int  # output length


def _plan_axis(sel: AxisSel, chunk: int, size: int) -> _AxisPlan:
    if isinstance(sel, slice):
        start, stop, step = sel.indices(size)
        if step < 1:
            raise ValueError("negative steps are resolved by xarray before reaching the store")
        n = len(range(start, stop, step))
        if n == 0:
            return _AxisPlan(np.zeros(0, np.int64), [], [], 0)
        last = start + (n - 1) * step
        cells, outs, locs = [], [], []
        for k in range(start // chunk, last // chunk + 1):
            lo = k * chunk
            hi = min(lo + chunk, size)
            first = start + max(0, -(-(lo - start) // step)) * step
            if first >= hi or first > last:
                continue
            end = min(hi, last + 1)
            count = len(range(first, end, step))
            o = (first - start) // step
            cells.append(k)
            outs.append(slice(o, o + count))
            locs.append(slice(first - lo, first - lo + (count - 1) * step + 1, step))
        return _AxisPlan(np.array(cells, np.int64), outs, locs, n)
    idx = np.asarray(sel, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise IndexError(f"index out of bounds for axis of size {size}")
    cell_of = idx // chunk
    cells = np.unique(cell_of)
    outs, locs = [], []
    for k in cells:
        pos = np.flatnonzero(cell_of == k)
        outs.append(pos)
        locs.append(idx[pos] - k * chunk)
    return _AxisPlan(cells, outs, locs, len(idx))


def _as_index(sel: AxisSel, n: int | None = None) -> np.ndarray:
    if isinstance(sel, slice):
        return np.arange(*sel.indices(n if n is not None else sel.stop))
    return sel


@dataclass
class _ChunkTask:
    cell: tuple[int, int, int]
    out: tuple[AxisSel, AxisSel, AxisSel]
    local: tuple[AxisSel, AxisSel, AxisSel]


class ScaleReader:
    """Reads any outer selection of one scale as an ``(x, y, z, channel)`` array.

    >>> # reader = ScaleReader(Store("/data/vol"), info, 0)
    >>> # reader.read((slice(0, 64), slice(0, 64), slice(10, 11), slice(None)))
    """

    def __init__(self, store: Store, info: VolumeInfo, scale_index: int, fill_missing: bool = True):
        self.store = store
        self.info = info
        self.scale_index = scale_index
        self.fill_missing = fill_missing
        self.scale: Scale = info.scales[scale_index]
        s = self.scale
        self.codec = scale_codec(s, info.dtype, info.num_channels)
        self.shape = (*s.size, info.num_channels)
        self.dtype = info.dtype
        self._box = shard_box_chunks(s.grid_shape, s.sharding) if s.sharding is not None else None
        options = store.storage_options
        self.index_cache = IndexCache(index_cache_bytes(options))
        self.coalescing = coalescing_options(options)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "info": self.info,
            "scale_index": self.scale_index,
            "fill_missing": self.fill_missing,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _where(self, key: str) -> str:
        return f"{self.store.url_of(self.scale.key + '/' + key)} (scale {self.scale.key!r})"

    # -- public --------------------------------------------------------------

    def read(self, selection: Sequence[AxisSel | int]) -> np.ndarray:
        """Read an outer selection: one slice, integer or 1-D integer array per axis.

        Integer indexers drop their axis, as in NumPy. The result is C-ordered.
        """
        selection = tuple(selection) + (slice(None),) * (4 - len(selection))
        drop = [i for i, s in enumerate(selection) if isinstance(s, (int, np.integer))]
        sel = [np.array([int(s)]) if isinstance(s, (int, np.integer)) else s for s in selection]
        for i in drop:
            if not -self.shape[i] <= sel[i][0] < self.shape[i]:
                raise IndexError(f"index {selection[i]} out of bounds for axis {i}")
            sel[i] = sel[i] % self.shape[i]
        chunk = self.scale.chunk_size
        plans = [_plan_axis(sel[d], chunk[d], self.shape[d]) for d in range(3)]
        channel_sel = sel[3]
        if isinstance(channel_sel, slice):
            n_channels = len(range(*channel_sel.indices(self.shape[3])))
        else:
            n_channels = len(channel_sel)
        # empty, not zeros: every element is written once, by its chunk or, for a
        # missing chunk, with 0; fresh zeroed pages cost more than the copy itself.
        out = empty((plans[0].length, plans[1].length, plans[2].length, n_channels),
                    dtype=self.dtype)  # fmt: skip
        if out.size:
            tasks = [
                _ChunkTask(
                    (int(plans[0].cells[i]), int(plans[1].cells[j]), int(plans[2].cells[k])),
                    (plans[0].out[i], plans[1].out[j], plans[2].out[k]),
                    (plans[0].local[i], plans[1].local[j], plans[2].local[k]),
                )
                for k in range(len(plans[2].cells))
                for j in range(len(plans[1].cells))
                for i in range(len(plans[0].cells))
            ]
            self._run(tasks, out, channel_sel)
        if drop:
            out = out[tuple(0 if i in drop else slice(None) for i in range(4))]
        return out

    # -- scheduling ----------------------------------------------------------

    def _run(self, tasks: list[_ChunkTask], out: np.ndarray, channel_sel: AxisSel) -> None:
        if self.scale.sharding is not None:
            units = self._group_by_shard(tasks)
            work = [(self._read_shard, unit) for unit in units]
        else:
            batch = 1 if self.store.is_local else _REMOTE_BATCH
            work = [
                (self._read_unsharded, tasks[i : i + batch]) for i in range(0, len(tasks), batch)
            ]

        def run(item):
            fn, unit = item
            for task in fn(unit, out, channel_sel):  # the tasks whose chunk is missing
                self._zero(task, out)

        if len(work) == 1:
            run(work[0])
        else:
            for _ in io_pool(self.store.is_local).map(run, work):
                pass

    def _group_by_shard(self, tasks: list[_ChunkTask]) -> list[tuple[int, list, np.ndarray]]:
        spec = self.scale.sharding
        cells = np.array([t.cell for t in tasks], dtype=np.int64)
        ids = morton_encode(cells, self.scale.grid_shape)
        shards, _ = shard_and_minishard(ids, spec)
        units = []
        for shard in np.unique(shards):
            members = np.flatnonzero(shards == shard)
            units.append((int(shard), [tasks[i] for i in members], ids[members]))
        return units

    # -- placing decoded chunks ------------------------------------------------

    def _put(self, task: _ChunkTask, data, where: str, out: np.ndarray, csel) -> None:
        """Decode one chunk into its place in ``out``. For step-1 slices the codec writes
        the window itself (compressed_segmentation: straight into ``out``, no chunk
        buffer); other selections go through a decoded chunk."""
        shape = chunk_shape(self.scale, task.cell)
        sels = (*task.local, *task.out)
        if isinstance(csel, slice) and all(
            isinstance(s, slice) and s.step in (None, 1) for s in sels
        ):
            ox, oy, oz = task.out
            lo = (task.local[0].start, task.local[1].start, task.local[2].start)
            self.codec.decode_into(data, shape, where, out[ox, oy, oz, :], lo=lo, channels=csel)
        else:
            self._place(task, self.codec.decode(data, shape, where), out, csel)

    def _place(self, task: _ChunkTask, chunk: np.ndarray, out: np.ndarray, csel) -> None:
        lx, ly, lz = task.local
        ox, oy, oz = task.out
        if all(isinstance(s, slice) for s in (lx, ly, lz, csel)):
            copy_into(out[ox, oy, oz, :], chunk[lx, ly, lz, csel])
            return
        shape = chunk.shape
        src = np.ix_(*(_as_index(s, n) for s, n in zip((lx, ly, lz, csel), shape)))
        dst = np.ix_(*(_as_index(s) for s in (ox, oy, oz)), np.arange(out.shape[3]))
        out[dst] = chunk[src]

    def _zero(self, task: _ChunkTask, out: np.ndarray) -> None:
        ox, oy, oz = task.out
        if all(isinstance(s, slice) for s in (ox, oy, oz)):
            out[ox, oy, oz, :] = 0
        else:
            out[np.ix_(*(_as_index(s) for s in (ox, oy, oz)), np.arange(out.shape[3]))] = 0

    def _content_decoded(self, data: bytes, cell, where: str) -> bytes:
        shape = chunk_shape(self.scale, cell)
        expected = self.codec.nbytes(shape)
        # cloud-files may store unsharded objects gzip-compressed (Content-Encoding
        # that no client undid); raw chunks are told apart by their exact length.
        if data[:2] == GZIP_MAGIC:
            if self.scale.encoding != "raw" or len(data) != expected:
                data = gzip_decompress(data, self.codec.expand_bound(shape), where)
        return data

    # -- unsharded -------------------------------------------------------------

    def _read_unsharded(self, tasks: list[_ChunkTask], out: np.ndarray, csel):
        keys = [chunk_key(self.scale, t.cell) for t in tasks]
        full = [f"{self.scale.key}/{k}" for k in keys]
        bound = self.codec.expand_bound(self.scale.chunk_size)
        if self.store.is_local:
            # each decoded before this thread reads again: its buffer is reused, no fresh
            # pages per chunk (a generator: read one, decode it, read the next)
            blobs = (self.store.get_reusing_buffer(k, bound) for k in full)
        else:
            blobs = self.store.get_many(full, bound)
        for task, key, data in zip(tasks, keys, blobs):
            if data is None:
                self._missing(key)
                yield task
                continue
            where = self._where(key)
            self._put(task, self._content_decoded(data, task.cell, where), where, out, csel)

    def _missing(self, key: str) -> None:
        if not self.fill_missing:
            raise ChunkNotFoundError(
                f"{self._where(key)}: chunk is missing; pass fill_missing=True to read it as 0"
            )

    # -- sharded ---------------------------------------------------------------

    def _read_shard(self, unit: tuple[int, list[_ChunkTask], np.ndarray], out: np.ndarray, csel):
        shard, tasks, ids = unit
        spec = self.scale.sharding
        key = shard_key(shard, spec)
        path = f"{self.scale.key}/{key}"
        where = self._where(key)
        isize = shard_index_size(spec)
        whole: memoryview | None = None
        _, minishards = shard_and_minishard(ids, spec)
        if self._covers_whole_shard(tasks):
            whole = self.store.get_reusing_buffer(path)
            if whole is None:
                yield from self._missing_shard(key, tasks)
                return
            if len(whole) < isize:
                raise CorruptDataError(
                    f"{where}: shard is {len(whole)} bytes, shorter than its {isize}-byte index"
                )
            index = parse_shard_index(whole[:isize], spec, where)
            needed = [int(m) for m in np.unique(minishards) if index[m, 0] != index[m, 1]]
            ranges = [(int(index[m, 0]), int(index[m, 1])) for m in needed]
            blobs = self._fetch(path, whole, ranges, where, "minishard index")
            decoded = {
                m: decode_minishard_index(b, spec, f"{where} minishard {m}", r, len(whole))
                for m, b, r in zip(needed, blobs, ranges)
            }
        else:
            cache = self.index_cache
            try:
                entries = index_entries(self.store, path, spec,
                                        sorted({int(m) for m in minishards}), cache, where)  # fmt: skip
                if entries is None:
                    yield from self._missing_shard(key, tasks)
                    return
                decoded = minishard_indexes(
                    self.store, path, spec, entries, cache, self.coalescing, where
                )
            except CorruptDataError:
                cache.discard(path)  # the shard may have changed since it was cached
                raise
        found_tasks, found_ids, data_ranges = [], [], []
        for m in np.unique(minishards):
            sel = np.flatnonzero(minishards == m)
            if int(m) not in decoded:
                for i in sel:
                    self._missing(f"{key} chunk {int(ids[i])}")
                    yield tasks[i]
                continue
            ok, starts, ends = lookup(ids[sel], decoded[int(m)])
            for i, f, s, e in zip(sel, ok, starts, ends):
                if not f:
                    self._missing(f"{key} chunk {int(ids[i])}")
                    yield tasks[i]
                    continue
                found_tasks.append(tasks[i])
                found_ids.append(int(ids[i]))
                data_ranges.append((int(s), int(e)))
        bound = self.codec.expand_bound(self.scale.chunk_size)
        try:
            # decoded before this thread reads again: its buffer is reused (no fresh pages)
            blobs = self._fetch(path, whole, data_ranges, where, "chunk data", reuse_buffer=True)
            for task, cid, blob in zip(found_tasks, found_ids, blobs):
                cwhere = f"{where} chunk {cid} (cell {task.cell})"
                self._put(task, decode_chunk_data(blob, spec, bound, cwhere), cwhere, out, csel)
        except CorruptDataError:
            if whole is None:  # offsets may come from the cache of a since-rewritten shard
                self.index_cache.discard(path)
            raise

    def _missing_shard(self, key: str, tasks):
        if not self.fill_missing:
            raise ChunkNotFoundError(
                f"{self._where(key)}: shard is missing; pass fill_missing=True to read it as 0"
            )
        return tasks

    def _covers_whole_shard(self, tasks: list[_ChunkTask]) -> bool:
        if self._box is None:
            return False
        # The tasks are distinct cells of one box shard; if they are all the cells
        # of its (clipped) box, the whole file is needed: fetch it in one request.
        g, b, c = self.scale.grid_shape, self._box, tasks[0].cell
        cells = 1
        for d in range(3):
            origin = c[d] // b[d] * b[d]
            cells *= min(b[d], g[d] - origin)
        return len({t.cell for t in tasks}) == cells

    def _fetch(
        self, path: str, whole: bytes | None, ranges: list[tuple[int, int]], where: str,
        what: str, reuse_buffer: bool = False,
    ) -> list[memoryview]:  # fmt: skip
        """Byte ranges of a shard, from memory or with coalesced requests."""
        if whole is None:
            return fetch_ranges(
                self.store, path, ranges, self.coalescing, where, what, reuse_buffer
            )
        size = len(whole)
        for s, e in ranges:
            if e > size or s > e:
                raise CorruptDataError(f"{where}: {what} [{s}, {e}) lies beyond the shard end")
        view = memoryview(whole)  # slices of a view, not copies of each chunk
        return [view[s:e] for s, e in ranges]  # type: ignore[misc]
