"""The write graph: one Dask task per shard (or group of whole chunks when unsharded).

Task boxes are aligned to the scale's shards, not to the input's chunks; a task
gathers the input blocks that overlap its box, so no two tasks write the same
object and no dask rechunk is needed.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import operator

import dask
import dask.array as da
import numpy as np
from dask._task_spec import Alias, DataNode, GraphNode
from dask.core import get_dependencies, get_deps, istask
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .block_reuse import ChainLink, kept_parts
from .chunk_grid import chunk_group, shard_box_chunks, shard_box_voxels
from .input_blocks import BlockRecipe, InputPieces, assemble_box
from .metadata import VolumeInfo
from .storage import Store
from .write_chains import Chains
from .write_plan import WritePlan
from .write_tasks import shard_space, write_block

TASK_PREFIX = "to-precomputed-"  # key prefix of the write tasks (progress bars count them)
CHAIN_PREFIX = "precomputed-chain-"  # key prefix of the tasks writing a chain of boxes


def write_graph(
    store: Store, info: VolumeInfo, plan: WritePlan, write_empty: bool,
    after: Delayed | None = None, tasks: tuple[slice, slice, slice] | None = None,
) -> Delayed:  # fmt: skip
    """One task per shard box (or group of whole chunks) of ``plan``'s region (only the
    tasks of ``tasks``, index ranges over the task grid along x, y, z, if given: a wave).

    The tasks form one graph layer over the input's graph; each depends on exactly
    the input blocks overlapping its box. Building it costs time linear in the
    number of tasks (no per-task ``dask.delayed`` call, which would merge, cull and
    tokenize the input graph once per shard). The returned object computes the
    number of objects stored or deleted. Every task depends on ``after`` (the
    ``info`` write), so nothing is stored before it.
    """
    with _collector_paused():
        return _build(store, info, plan, write_empty, after, tasks)


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a graph of many small containers is
    built: its full passes over them took half the build time of a 16,384-task graph."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(store, info, plan, write_empty, after, tasks) -> Delayed:
    scale = info.scales[plan.scale_index]
    data = plan.array.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=data.shape, inline_array=True)
    chunks = task_boxes(info, plan.scale_index, plan.region_start, data.shape[:3])
    if len(data.chunks[3]) > 1:
        data = data.rechunk({3: -1})
    starts = [np.cumsum((0,) + data.chunks[d]) for d in range(3)]
    task_starts = [np.cumsum((0,) + chunks[d]) for d in range(3)]
    # the input blocks each task box overlaps, per axis: [first, last) block indices
    first = [np.searchsorted(starts[d], task_starts[d][:-1], side="right") - 1 for d in range(3)]
    last = [np.searchsorted(starts[d], task_starts[d][1:], side="left") for d in range(3)]
    grid = [range(len(c))[tasks[d]] if tasks else range(len(c)) for d, c in enumerate(chunks)]
    sources = _BlockSources(data, chunks, first, last, grid)
    writer = _BlockWriter(store, info, plan.scale_index, plan.region_start, plan.merge, write_empty)
    after_key = None if after is None else after.key
    wave = None if tasks is None else [(r.start, r.stop) for r in grid]
    token = dask.base.tokenize(store.url, scale.key, data.name, plan.region_start, after_key, wave)
    name = f"{TASK_PREFIX}{token}"
    chains = Chains.plan(sources, first, last, grid, chunks, task_starts, starts, data)
    layer: dict = {}
    for index in itertools.product(*grid):
        lo = [int(task_starts[d][index[d]]) for d in range(3)]
        shape = [chunks[d][index[d]] for d in range(3)] + [data.shape[3]]
        blocks = list(itertools.product(*(range(first[d][index[d]], last[d][index[d]])
                                          for d in range(3))))  # fmt: skip
        pieces = [
            # a list, so that Dask finds the block key inside and passes the block
            [sources.source(*b), tuple(int(starts[d][b[d]]) - lo[d] for d in range(3))]
            for b in blocks
        ]
        if (
            chains is not None
            or any(isinstance(block, BlockRecipe) for block, _ in pieces)
            or (len(pieces) > 1 and sources.private(block for block, _ in pieces))
        ):
            # The task computes blocks itself: then all of them, so that Dask does not
            # compute the blocks only it needs ahead of it and keep them waiting. Blocks
            # smaller than the box likewise, when computing one repeats no work shared
            # with other blocks: the task then holds one block at a time, not its box
            # of blocks until it ends. A chain's task computes every block itself.
            for piece in pieces:
                piece[0] = sources.recipe(piece[0])
        if chains is None:
            layer[(name, *index)] = (writer.write_pieces, lo, shape, pieces, after_key)
            continue
        link = chains.link(name, index, blocks, pieces)
        group = (f"{CHAIN_PREFIX}{token}", *link.chain[1:])
        members = layer.setdefault(group, (writer.write_chain, [], after_key))[1]
        # the shard's own key gives its count when the chain has run (progress bars)
        layer[(name, *index)] = (operator.getitem, group, len(members))
        members.append([lo, shape, pieces, link])
    total = f"objects-written-{token}"
    layer[total] = (sum, [k for k in layer if k[0] == name])
    deps = [data] if after is None else [data, after]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    return Delayed(total, graph, layer=name)


class _BlockSources:
    """What a task receives for each input block: the block's key when no other task
    needs it (Dask computes it once and frees it after the task), or a
    :class:`BlockRecipe` when several tasks overlap it (each computes its own part, so
    no block has to be kept alive for the others).
    """

    def __init__(self, data: da.Array, task_chunks, first, last, grid):
        self.data = data
        # the blocks the tasks in ``grid`` overlap, per axis
        self.blocks = [range(first[d][grid[d].start], last[d][grid[d].stop - 1])
                       if len(grid[d]) else range(0) for d in range(3)]  # fmt: skip
        self.shared = []
        for d in range(3):
            count = np.zeros(len(data.chunks[d]), np.int64)
            for t in range(len(task_chunks[d])):
                count[first[d][t] : last[d][t]] += 1
            self.shared.append(count.tolist())
        self._graph: dict | None = None
        self._dependents: dict | None = None
        self._recipes: dict = {}

    def source(self, bi: int, bj: int, bk: int):
        key = (self.data.name, bi, bj, bk, 0)
        tasks = self.shared[0][bi] * self.shared[1][bj] * self.shared[2][bk]
        if tasks <= 1:
            return key
        return self.recipe(key)

    def recipe(self, key) -> BlockRecipe:
        """The :class:`BlockRecipe` of the block ``key`` (itself if already one)."""
        if isinstance(key, BlockRecipe):
            return key
        if key not in self._recipes:
            index = key[1:4]
            shape = [self.data.chunks[d][index[d]] for d in range(3)] + [self.data.shape[3]]
            self._recipes[key] = BlockRecipe(self._subgraph(key), key, shape)
        return self._recipes[key]

    def private(self, keys) -> bool:
        """Whether computing each of the blocks ``keys`` computes nothing another block
        also needs (values that are plain data, such as the array a block is read
        from, may be shared)."""
        graph = self._full_graph()
        if self._dependents is None:
            self._dependents = get_deps(graph)[1]
        for key in keys:
            if isinstance(key, BlockRecipe):
                return False
            sub = self._subgraph(key)
            for k, v in sub.items():
                if k != key and _is_task(v) and not self._dependents[k] <= sub.keys():
                    return False
        return True

    def _full_graph(self) -> dict:
        if self._graph is None:
            # culled to the blocks of these tasks: a wave's input may have millions more
            graph = self.data.__dask_graph__()
            keys = {(self.data.name, *b, 0) for b in itertools.product(*self.blocks)}
            if len(keys) < self.data.npartitions:
                graph = graph.cull(keys)
            self._graph = dict(graph)
        return self._graph

    def _subgraph(self, key) -> dict:
        graph, todo, out = self._full_graph(), [key], {}
        while todo:
            k = todo.pop()
            if k in out:
                continue
            out[k] = graph[k]
            todo.extend(get_dependencies(graph, k))
        return out


def _is_task(value) -> bool:
    """A graph value that computes something (not data, not a key naming other data)."""
    if isinstance(value, GraphNode):
        return not isinstance(value, (DataNode, Alias))
    return istask(value)


def task_boxes(
    info: VolumeInfo, scale_index: int, start: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """The write tasks' boxes over ``shape`` voxels at ``start`` (scale coordinates), as
    Dask-style chunks per axis: cut at shard boxes, or at groups of whole chunks."""
    scale = info.scales[scale_index]
    if scale.sharding is not None:
        unit = shard_box_voxels(scale, shard_box_chunks(scale.grid_shape, scale.sharding))
    else:
        unit = chunk_group(scale, info.dtype.itemsize * info.num_channels)
    return tuple(_aligned_chunks(start[d], shape[d], unit[d]) for d in range(3))


def _aligned_chunks(start: int, length: int, unit: int) -> tuple[int, ...]:
    """Split ``[start, start + length)`` at multiples of ``unit`` (scale coordinates)."""
    out = []
    pos = start
    end = start + length
    while pos < end:
        nxt = min((pos // unit + 1) * unit, end)
        out.append(nxt - pos)
        pos = nxt
    return tuple(out) or (0,)


class _BlockWriter:
    """What each write task runs: small and picklable (a Store and the metadata)."""

    def __init__(self, store, info, scale_index, region_start, merge, write_empty):
        self.store = store
        self.info = info
        self.scale_index = scale_index
        self.region_start = region_start
        self.merge = merge
        self.write_empty = write_empty

    def write_pieces(self, lo, shape, pieces, after=None, link: ChainLink | None = None) -> int:
        """Write the box at ``lo`` (region coordinates) from the input blocks overlapping it.

        ``pieces`` holds ``[block, offset of the block from lo]`` pairs; ``after`` is
        the result of the task this one waits for (unused); ``link`` is the box's
        place in its chain, if it is in one.
        """
        origin = tuple(self.region_start[d] + int(lo[d]) for d in range(3))
        pieces = [(block, tuple(offset)) for block, offset in pieces]
        if any(isinstance(block, BlockRecipe) for block, _ in pieces):
            scale = self.info.scales[self.scale_index]
            space = shard_space(self.store, self.info, self.scale_index, origin, shape,
                                self.merge)  # fmt: skip
            block = assemble_box(shape, pieces, origin, scale.chunk_size, space, link)
        else:
            block = InputPieces(shape, pieces)
        return write_block(
            self.store, self.info, self.scale_index, block, origin,
            merge=self.merge, write_empty=self.write_empty,
        )  # fmt: skip

    def write_chain(self, boxes, after=None) -> list[int]:
        """Write a chain's boxes (``[lo, shape, pieces, link]`` each) one after another,
        passing block parts from box to box; the count per box."""
        link = boxes[0][3]
        with kept_parts().running(link.chain, link.box):
            return [self.write_pieces(lo, shape, pieces, None, link)
                    for lo, shape, pieces, link in boxes]  # fmt: skip
