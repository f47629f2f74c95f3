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

    def compute(self, part: tuple[slice, ...]) -> np.ndarray:
        name = ("write-input-part", *self.key[1:])
        task = _read_of_part(self.graph[self.key], name, part)
        if task is None:  # not a plain read: compute the block, keep the part
            task = Task(name, operator.getitem, TaskRef(self.key), part)
        return np.asarray(get_sync({**self.graph, name: task}, name))


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


def assemble_box(shape: Sequence[int], pieces) -> InputPieces:
    """One x-fastest array of a task's box from its pieces, computing recipes one at a time.

    ``pieces`` holds (block or recipe, offset of the block from the box's origin).
    """
    out = None
    for piece, off in pieces:
        lo = [max(0, off[d]) for d in range(3)]
        hi = [min(shape[d], off[d] + piece.shape[d]) for d in range(3)]
        src = tuple(slice(lo[d] - off[d], hi[d] - off[d]) for d in range(3))
        dst = tuple(slice(lo[d], hi[d]) for d in range(3))
        if isinstance(piece, BlockRecipe):
            array = piece.compute((*src, slice(None)))
        else:
            array = np.asarray(piece)[src]
        if out is None:
            out = np.empty(tuple(shape), array.dtype, order="F")
        copy_into(out[dst], array)
        del array
    assert out is not None, "a write task's box overlaps at least one input block"
    return InputPieces(out.shape, [(out, (0, 0, 0))])


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
        for array, off in self.pieces:
            lo = [max(sel[d].start, off[d]) for d in range(3)]
            hi = [min(sel[d].stop, off[d] + array.shape[d]) for d in range(3)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            src = tuple(slice(lo[d] - off[d], hi[d] - off[d]) for d in range(3))
            dst = tuple(slice(lo[d] - sel[d].start, hi[d] - sel[d].start) for d in range(3))
            copy_into(out[dst], array[src])
        return out


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
