"""The write graph: one Dask task per shard (or group of whole chunks when unsharded).

Task boxes are aligned to the scale's shards, not to the input's chunks; a task
gathers the input blocks that overlap its box, so no two tasks write the same
object and no dask rechunk is needed.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from .chunk_grid import chunk_group, shard_box_chunks, shard_box_voxels
from .input_blocks import InputPieces
from .metadata import VolumeInfo
from .storage import Store
from .write_plan import WritePlan
from .write_tasks import write_block


def write_graph(store: Store, info: VolumeInfo, plan: WritePlan, write_empty: bool) -> list:
    """One delayed task per shard box (or group of whole chunks) of ``plan``'s region.

    Each task depends on the input blocks overlapping its box and returns the
    number of objects it stored or deleted.
    """
    scale = info.scales[plan.scale_index]
    data = plan.array.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=data.shape, inline_array=True)
    if scale.sharding is not None:
        unit = shard_box_voxels(scale, shard_box_chunks(scale.grid_shape, scale.sharding))
    else:
        unit = chunk_group(scale, info.dtype.itemsize * info.num_channels)
    chunks = tuple(_aligned_chunks(plan.region_start[d], data.shape[d], unit[d]) for d in range(3))
    if len(data.chunks[3]) > 1:
        data = data.rechunk({3: -1})
    blocks = data.to_delayed()
    starts = [np.cumsum((0,) + data.chunks[d]) for d in range(3)]
    writer = _BlockWriter(store, info, plan.scale_index, plan.region_start, plan.merge, write_empty)
    token = dask.base.tokenize(store.url, scale.key, data.name)
    tasks = []
    for index in np.ndindex(*(len(c) for c in chunks)):
        lo = [sum(chunks[d][: index[d]]) for d in range(3)]
        shape = [chunks[d][index[d]] for d in range(3)]
        pieces = []
        ranges = [
            range(
                int(np.searchsorted(starts[d], lo[d], side="right")) - 1,
                int(np.searchsorted(starts[d], lo[d] + shape[d], side="left")),
            )
            for d in range(3)
        ]
        for bi in ranges[0]:
            for bj in ranges[1]:
                for bk in ranges[2]:
                    origin = (starts[0][bi] - lo[0], starts[1][bj] - lo[1], starts[2][bk] - lo[2])
                    pieces.append((blocks[bi, bj, bk, 0], origin))
        tasks.append(
            dask.delayed(writer.write_pieces, pure=True)(
                tuple(lo),
                (*shape, data.shape[3]),
                pieces,
                dask_key_name=f"to-precomputed-{token}-{len(tasks)}",
            )  # fmt: skip
        )
    return tasks


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

    def write_pieces(self, lo, shape, pieces) -> int:
        """Write the box at ``lo`` (region coordinates) from the input blocks overlapping it."""
        origin = tuple(self.region_start[d] + int(lo[d]) for d in range(3))
        return write_block(
            self.store, self.info, self.scale_index, InputPieces(shape, pieces), origin,
            merge=self.merge, write_empty=self.write_empty,
        )  # fmt: skip
