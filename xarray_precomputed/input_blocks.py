"""The input a write task owns: the Dask blocks overlapping its box, copied chunk by chunk."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
from dask._task_spec import DataNode, Task, TaskRef
from dask.array.core import getter, getter_inline, getter_nofancy
from dask.local import get_sync

from .layout import copy_into


class BlockRecipe:
    """How to compute one input block inside a write task, from its own small graph.

    Used for blocks that several write tasks overlap: if Dask computed such a block
    once and shared it, the scheduler would keep it alive until every task overlapping
    it had run, and with input chunks that do not line up with shards that becomes a
    whole slab of blocks. Each task computes the part it needs instead, one block at a
    time, so a task holds its box and one block. A block read from an array (a volume
    opened lazily, or any ``da.from_array`` source) is read for that part only; other
    blocks are computed whole and cut.
    """

    def __init__(self, graph: dict, key, shape: Sequence[int]):
        self.graph = graph
        self.key = key
        self.shape = tuple(shape)

    def compute(self, part: tuple[slice, ...] | None) -> np.ndarray:
        """The block's ``part`` (x, y, z, channel slices), or the whole block if ``None``."""
        if part is None:
            return np.asarray(get_sync(self.graph, self.key))
        name = ("write-input-part", *self.key[1:])
        task = _read_of_part(self.graph[self.key], name, part)
        if task is None:  # not a plain read: compute the block, keep the part
            task = Task(name, operator.getitem, TaskRef(self.key), part)
        return np.asarray(get_sync({**self.graph, name: task}, name))

    @property
    def reads_part(self) -> bool:
        """Whether a part of the block is read alone (a ``from_array`` read), not cut
        from the whole block computed."""
        whole = tuple(slice(None) for _ in self.shape)
        return _read_of_part(self.graph[self.key], "probe", whole) is not None


def _read_of_part(task, name, part: tuple[slice, ...]) -> Task | None:
    """``task`` reading ``part`` of its block, if it is a ``from_array`` read of a
    block of unit-step slices (what xarray's ``chunks=`` and ``da.from_array`` make)."""
    if not isinstance(task, Task) or task.func not in (getter, getter_nofancy, getter_inline):
        return None
    if len(task.args) < 2 or not isinstance(task.args[1], DataNode):
        return None
    block = task.args[1].value
    if not isinstance(block, tuple) or len(block) != len(part):
        return None
    fused = []
    for b, p in zip(block, part):
        if not isinstance(b, slice) or b.step not in (None, 1) or b.start is None:
            return None
        start, stop, _ = p.indices(b.stop - b.start)
        fused.append(slice(b.start + start, b.start + stop))
    return Task(name, task.func, task.args[0], DataNode(None, tuple(fused)), *task.args[2:],
                **task.kwargs)  # fmt: skip


def part_of(offset: Sequence[int], block_shape: Sequence[int], box_shape: Sequence[int]):
    """The slices (x, y, z) of a block at ``offset`` from a box that fall inside the box.

    >>> part_of((-2, 0, 3), (4, 4, 4), (8, 8, 5))
    (slice(2, 4, None), slice(0, 4, None), slice(0, 2, None))
    """
    return tuple(
        slice(
            max(0, offset[d]) - offset[d], min(box_shape[d], offset[d] + block_shape[d]) - offset[d]
        )
        for d in range(3)
    )


def assemble_box(
    shape: Sequence[int], pieces, origin: Sequence[int], chunk_size: Sequence[int], space=None,
    link=None,
) -> ChunkedBox:  # fmt: skip
    """A task's box from its pieces, computing recipes one block at a time.

    ``pieces`` holds (block or recipe, offset of the block from the box's origin);
    ``origin`` is the box's position in the scale and ``chunk_size`` the scale's chunk
    size: the box is kept as one x-fastest array per storage chunk, so that encoding
    can free each chunk's voxels as it goes (:meth:`ChunkedBox.take`). With ``space``
    (a :class:`.write_tasks.ShardSpace`) whole chunks are assembled in the shard's buffer.
    With ``link`` (a :class:`.block_reuse.ChainLink`) recipes' parts kept by earlier
    tasks of the chain are taken, and parts for later ones kept.
    """
    out = None
    for index, (piece, off) in enumerate(pieces):
        src = part_of(off, piece.shape, shape)
        lo = [off[d] + src[d].start for d in range(3)]
        if isinstance(piece, BlockRecipe):
            if link is not None:
                array = link.part(index, piece, src)
            else:
                array = piece.compute((*src, slice(None)))
        else:
            array = np.asarray(piece)[src]
        if out is None:
            out = ChunkedBox(shape, array.dtype, origin, chunk_size, space)
        out.write(lo, array)
        del array
    assert out is not None, "a write task's box overlaps at least one input block"
    return out


class ChunkedBox:
    """A write task's box (x, y, z, channel) held as one x-fastest array per storage chunk.

    A task that computes its input blocks itself copies each into the chunks it overlaps
    and frees it; encoding then takes the chunks one by one (:meth:`take`), so the box's
    memory is given back while the shard's bytes are appended: a task holds about one
    shard, not its box and its shard at once.

    >>> box = ChunkedBox((4, 2, 2, 1), np.dtype("uint8"), (2, 0, 0), (4, 4, 4))
    >>> box.write((0, 0, 0), np.arange(16, dtype="uint8").reshape(4, 2, 2, 1))
    >>> sorted(box.parts)  # x is cut at 4 (scale coordinates): box x 0-2 and 2-4
    [(0, 0, 0), (1, 0, 0)]
    >>> box.take((slice(2, 4), slice(0, 2), slice(0, 2)))[:, 0, 0, 0].tolist()
    [8, 12]
    >>> sorted(box.parts)
    [(0, 0, 0)]
    """

    def __init__(self, shape, dtype, origin, chunk_size, space=None):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.origin = tuple(int(o) for o in origin)
        self.chunk_size = tuple(int(c) for c in chunk_size)
        self.space = space
        self.cuts = []  # per axis: where chunks start and end, in box coordinates
        for d in range(3):
            c, o, n = int(chunk_size[d]), int(origin[d]), self.shape[d]
            inner = range((o // c + 1) * c - o, n, c)
            self.cuts.append([0, *inner, n])
        self.parts: dict[tuple[int, int, int], np.ndarray] = {}
        if space is not None:
            space.held = self.parts  # not the box itself: no reference cycle

    def _cells(self, lo, hi):
        """(cell, its part's lo, its part's hi) of the cells overlapping [lo, hi)."""
        spans = []
        for d in range(3):
            cuts = self.cuts[d]
            first = int(np.searchsorted(cuts, lo[d], side="right")) - 1
            spans.append([(i, cuts[i], cuts[i + 1]) for i in range(max(first, 0), len(cuts) - 1)
                          if cuts[i] < hi[d]])  # fmt: skip
        for i, x0, x1 in spans[0]:
            for j, y0, y1 in spans[1]:
                for k, z0, z1 in spans[2]:
                    yield (i, j, k), (x0, y0, z0), (x1, y1, z1)

    def write(self, lo: Sequence[int], array: np.ndarray) -> None:
        """Copy ``array`` into the box at ``lo``."""
        hi = [lo[d] + array.shape[d] for d in range(3)]
        for cell, c0, c1 in self._cells(lo, hi):
            part = self.parts.get(cell)
            if part is None:
                shape = (*(c1[d] - c0[d] for d in range(3)), self.shape[3])
                if self.space is not None:
                    at = [(self.origin[d] + c0[d]) // self.chunk_size[d] for d in range(3)]
                    part = self.space.part(at, shape)
                if part is None:
                    part = np.empty(shape, self.dtype, order="F")
                self.parts[cell] = part
            a = [max(lo[d], c0[d]) for d in range(3)]
            b = [min(hi[d], c1[d]) for d in range(3)]
            dst = tuple(slice(a[d] - c0[d], b[d] - c0[d]) for d in range(3))
            src = tuple(slice(a[d] - lo[d], b[d] - lo[d]) for d in range(3))
            copy_into(part[dst], array[src])

    def _whole_part(self, sel: Sequence[slice]):
        """The cells ``sel`` overlaps, and the one cell whose whole part ``sel`` is (or None)."""
        lo = [s.start for s in sel]
        hi = [s.stop for s in sel]
        cells = list(self._cells(lo, hi))
        whole = len(cells) == 1 and list(cells[0][1]) == lo and list(cells[0][2]) == hi
        return cells, cells[0][0] if whole else None

    def get(self, sel: Sequence[slice]) -> np.ndarray:
        """``box[sel]`` (x, y, z slices), x-fastest; do not modify it."""
        _, cell = self._whole_part(sel)
        if cell is not None:
            return self.parts[cell]
        out = np.empty((*(s.stop - s.start for s in sel), self.shape[3]), self.dtype, order="F")
        self.copy_to(sel, out)
        return out

    def copy_to(self, sel: Sequence[slice], out: np.ndarray, release: bool = False) -> None:
        """Copy ``box[sel]`` into ``out``; with ``release``, forget the chunk when ``sel``
        is exactly one chunk's part (for a task that will not read it again)."""
        cells, whole = self._whole_part(sel)
        for cell, c0, c1 in cells:
            a = [max(sel[d].start, c0[d]) for d in range(3)]
            b = [min(sel[d].stop, c1[d]) for d in range(3)]
            dst = tuple(slice(a[d] - sel[d].start, b[d] - sel[d].start) for d in range(3))
            src = tuple(slice(a[d] - c0[d], b[d] - c0[d]) for d in range(3))
            target, part = out[dst], self.parts[cell][src]
            if not np.may_share_memory(target, part):
                copy_into(target, part)
            elif target.__array_interface__ != part.__array_interface__:
                np.copyto(target, part)  # moved down in the shard: NumPy copies overlaps safely
        if release and whole is not None:
            del self.parts[whole]

    def take(self, sel: Sequence[slice]) -> np.ndarray:
        """:meth:`get`, and forget the chunk when ``sel`` is exactly one chunk's part
        (for a task that will not read it again)."""
        _, cell = self._whole_part(sel)
        if cell is not None:
            return self.parts.pop(cell)
        return self.get(sel)


class InputPieces:
    """The part of the input a write task owns, as the input blocks that overlap it.

    Chunks are copied out of the blocks one at a time into x-fastest buffers, so a
    task never assembles its whole box (no shard-sized copy, and no dask rechunk,
    whose concatenation would produce C order and cost a transpose per chunk).
    """

    def __init__(self, shape: Sequence[int], pieces: Sequence[tuple[np.ndarray, Sequence[int]]]):
        self.shape = tuple(int(n) for n in shape)
        self.pieces = [(np.asarray(a), tuple(int(o) for o in off)) for a, off in pieces]
        first = self.pieces[0][0] if self.pieces else np.empty((0, 0, 0, 0))
        self.dtype = first.dtype

    def get(self, sel: Sequence[slice]) -> np.ndarray:
        """An x-fastest copy of ``block[sel]`` (x, y, z slices of this task's box)."""
        shape = tuple(s.stop - s.start for s in sel) + (self.shape[3],)
        if len(self.pieces) == 1 and self.pieces[0][1] == (0, 0, 0):
            return fortran_order(self.pieces[0][0][tuple(sel)])
        out = np.empty(shape, self.dtype, order="F")
        self.copy_to(sel, out)
        return out

    def copy_to(self, sel: Sequence[slice], out: np.ndarray, release: bool = False) -> None:
        """Copy ``block[sel]`` into ``out`` (the blocks belong to Dask: nothing to release)."""
        for array, off in self.pieces:
            lo = [max(sel[d].start, off[d]) for d in range(3)]
            hi = [min(sel[d].stop, off[d] + array.shape[d]) for d in range(3)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            src = tuple(slice(lo[d] - off[d], hi[d] - off[d]) for d in range(3))
            dst = tuple(slice(lo[d] - sel[d].start, hi[d] - sel[d].start) for d in range(3))
            copy_into(out[dst], array[src])

    def take(self, sel: Sequence[slice]) -> np.ndarray:
        """:meth:`get` (the blocks belong to Dask: nothing to free)."""
        return self.get(sel)


def fortran_order(array: np.ndarray) -> np.ndarray:
    """``array`` (x, y, z, channel) as an x-fastest array: itself if it already is one.

    Chunks are stored x-fastest; a C-ordered input (what reads return) is transposed
    by ``layout.copy_into``'s tiled copy.

    >>> a = np.arange(24, dtype="uint8").reshape(2, 3, 4, 1)
    >>> f = fortran_order(a)
    >>> bool(f.flags.f_contiguous and (f == a).all())
    True
    """
    if array.flags.f_contiguous:
        return array
    out = np.empty(array.shape, array.dtype, order="F")
    copy_into(out, array)
    return out
