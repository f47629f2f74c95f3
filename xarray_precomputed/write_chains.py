"""Which write tasks run as chains, and what each shares with the later tasks of its chain.

When input blocks must be computed whole (not read in parts) and several shards overlap
each, the boxes of a line of shards along the axis where blocks are shared most are
written by one task, one after another, so that the parts a box computes for later boxes
can be kept in the process (:mod:`.block_reuse`) rather than computed again. Lines are cut
into chains short enough to leave work for every worker.
"""

from __future__ import annotations

import os
import sys

import dask
import numpy as np

from .block_reuse import ChainLink, Share
from .input_blocks import BlockRecipe, part_of
from .progress import distributed_client

TASKS_PER_WORKER = 2  # chains per worker thread at least, when the grid allows


class Chains:
    """The chains of one write graph: along ``axis``, ``length`` tasks each at most."""

    def __init__(self, axis: int, length: int, first, last, grid, box: int, task_starts,
                 starts) -> None:  # fmt: skip
        self.axis = axis
        self.length = length
        self.grid = grid
        self.box = box
        a = axis
        # the tasks along the axis that overlap each input block: [consumers_lo, consumers_hi)
        blocks = np.arange(int(last[a][-1]) if len(last[a]) else 0)
        self.consumers_lo = np.searchsorted(last[a], blocks, side="right").tolist()
        self.consumers_hi = np.searchsorted(first[a], blocks, side="right").tolist()
        # where tasks and input blocks start, per axis (Python ints: read once per piece)
        self.task_starts = [np.asarray(s).tolist() for s in task_starts]
        self.starts = [np.asarray(s).tolist() for s in starts]

    @classmethod
    def plan(cls, sources, first, last, grid, task_chunks, task_starts, starts,
             data) -> Chains | None:  # fmt: skip
        """The chains for the tasks of ``grid``, or ``None`` when no task would gain:
        blocks are read in parts, or no block feeds two tasks, or too few tasks."""
        if not all(len(g) for g in grid) or data.npartitions == 0:
            return None
        shared = []
        for d in range(3):
            tasks = grid[d]
            pairs = int(
                np.sum(last[d][tasks.start : tasks.stop] - first[d][tasks.start : tasks.stop])
            )
            shared.append(pairs / max(1, len(sources.blocks[d])))
        axis = int(np.argmax(shared))
        if shared[axis] <= 1:
            return None
        n = len(grid[axis])
        lines = int(np.prod([len(grid[d]) for d in range(3) if d != axis]))
        length = min(n, max(1, n * lines // (TASKS_PER_WORKER * _parallelism())))
        if length < 2:
            return None
        # last: it builds the input's graph, which aligned input never needs
        sample = (data.name, *(b.start for b in sources.blocks), 0)
        if sources.recipe(sample).reads_part:
            return None
        box = [max(task_chunks[d][grid[d].start : grid[d].stop]) for d in range(3)]
        box_bytes = int(np.prod(box)) * data.shape[3] * data.dtype.itemsize
        return cls(axis, length, first, last, grid, box_bytes, task_starts, starts)

    def link(self, name, index, blocks, pieces) -> ChainLink:
        """Task ``index``'s :class:`ChainLink` (its chain named after ``name``, the write
        graph's): ``blocks`` are the input block indices of its ``pieces`` (``[recipe, offset]``)."""
        a, t = self.axis, index[self.axis]
        position = (t - self.grid[a].start) % self.length
        c0 = t - position
        c1 = min(c0 + self.length, self.grid[a].stop)
        chain = (name, *index[:a], c0, *index[a + 1 :])
        ts = self.task_starts
        box = [ts[d][index[d] + 1] - ts[d][index[d]] for d in range(3)]
        shares = {}
        for i, (b, (piece, offset)) in enumerate(zip(blocks, pieces)):
            lo = max(self.consumers_lo[b[a]], c0)
            hi = min(self.consumers_hi[b[a]], c1)
            if hi - lo < 2 or not isinstance(piece, BlockRecipe):
                continue
            later = []
            off, other = list(offset), list(box)
            for u in range(t + 1, hi):
                off[a] = self.starts[a][b[a]] - ts[a][u]
                other[a] = ts[a][u + 1] - ts[a][u]
                later.append((u - c0, part_of(off, piece.shape, other)))
            shares[i] = Share(earlier=lo < t, later=tuple(later))
        return ChainLink(chain, position, self.box, shares)


def _parallelism() -> int:
    """Worker threads the write will run on: the distributed cluster's, or the local
    scheduler's."""
    # no client without distributed imported (and importing it here would cost ~0.5 s)
    client = distributed_client() if "distributed" in sys.modules else None
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # a client without a reachable scheduler: no better guess
            pass
    n = dask.config.get("num_workers", None)
    return int(n) if n else (os.cpu_count() or 1)
