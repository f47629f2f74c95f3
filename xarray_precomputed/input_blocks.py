"""The input a write task owns: the Dask blocks overlapping its box, copied chunk by chunk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .layout import copy_into


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
