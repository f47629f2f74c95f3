"""The write graph for sharding whose shards are not boxes (murmurhash3, or identity
specs with too few bits): two stages.

A shard of such a layout gathers chunks from all over the volume, so no task can cut
its shard out of the input. Instead:

1. one task per block of whole chunks (the input rechunked to chunk-aligned blocks
   near its own, at most a chunk group)
   encodes its chunks, applies the shard's ``data_encoding`` and returns them grouped
   by the shard they hash to;
2. one task per shard takes its part from every stage-1 task that has one and
   assembles and stores the shard.

Each task holds one block of input or one shard's encoded chunks. A stage-1 result is
kept until the last shard needing it is written; with murmurhash every block feeds
every shard, so until then the scheduler holds the encoded volume (spilled to disk by
dask.distributed when large). Whole scales only: region writes into such layouts are
refused by :mod:`.write_plan`.
"""

from __future__ import annotations

from collections import defaultdict

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .chunk_grid import chunk_group, morton_encode
from .codecs import scale_codec
from .metadata import VolumeInfo
from .sharding import assemble_shard, encode_chunk_data, shard_and_minishard, shard_key
from .storage import Store
from .write_plan import WritePlan


def two_stage_graph(
    store: Store,
    info: VolumeInfo,
    plan: WritePlan,
    write_empty: bool,
    after: Delayed | None,
    task_prefix: str,
) -> Delayed:
    """Encode per chunk-aligned block, then assemble one shard per task.

    Stage-2 keys start with ``task_prefix`` (progress bars count shards). The returned
    object computes the number of shards stored.
    """
    scale = info.scales[plan.scale_index]
    spec = scale.sharding
    data = plan.array.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=data.shape, inline_array=True)
    # blocks of whole chunks near the input's own blocks (so that rechunking moves
    # little), at most a chunk group each
    group = chunk_group(scale, info.dtype.itemsize * info.num_channels)
    c = scale.chunk_size
    unit = [min(group[d], max(c[d], data.chunksize[d] // c[d] * c[d])) for d in range(3)]
    blocks = tuple(tuple(_split(data.shape[d], unit[d])) for d in range(3))
    data = data.rechunk(blocks + (data.shape[3],))
    grid = scale.grid_shape
    token = dask.base.tokenize(
        store.url, scale.key, data.name, None if after is None else after.key
    )
    encode_name, shard_name = f"encode-chunks-{token}", f"{task_prefix}{token}"
    encoder = _Encoder(store, info, plan.scale_index, write_empty)
    layer: dict = {}
    feeds: dict[int, list] = defaultdict(list)  # shard -> stage-1 keys with chunks for it
    starts = [np.cumsum((0,) + blocks[d]) for d in range(3)]
    for index in np.ndindex(*data.numblocks[:3]):
        lo = [int(starts[d][index[d]]) for d in range(3)]
        hi = [int(starts[d][index[d] + 1]) for d in range(3)]
        ranges = [range(lo[d] // c[d], -(-hi[d] // c[d])) for d in range(3)]
        cells = np.array([(x, y, z) for z in ranges[2] for y in ranges[1] for x in ranges[0]])
        shards, _ = shard_and_minishard(morton_encode(cells, grid), spec)
        key = (encode_name, *index)
        layer[key] = (encoder.encode, (data.name, *index, 0), lo)
        for s in np.unique(shards).tolist():
            feeds[int(s)].append(key)
    for s, keys in feeds.items():
        parts = [(_part, k, s) for k in keys]
        layer[(shard_name, s)] = (
            encoder.store_shard,
            s,
            parts,
            None if after is None else after.key,
        )
    total = f"shards-written-{token}"
    layer[total] = (sum, [(shard_name, s) for s in feeds])
    deps = [data] if after is None else [data, after]
    graph = HighLevelGraph.from_collections(shard_name, layer, dependencies=deps)
    return Delayed(total, graph, layer=shard_name)


def _split(n: int, unit: int) -> list[int]:
    return [min(unit, n - i) for i in range(0, n, unit)] or [0]


def _part(encoded: dict, shard: int) -> list:
    return encoded.get(shard, [])


class _Encoder:
    """What the tasks run: small and picklable (a Store and the metadata)."""

    def __init__(self, store: Store, info: VolumeInfo, scale_index: int, write_empty: bool):
        self.store = store
        self.info = info
        self.scale_index = scale_index
        self.write_empty = write_empty

    def encode(self, block: np.ndarray, lo) -> dict[int, list[tuple[int, bytes]]]:
        """Stage 1: the block's chunks encoded, by shard: ``{shard: [(chunk id, bytes)]}``."""
        scale = self.info.scales[self.scale_index]
        spec = scale.sharding
        codec = scale_codec(scale, self.info.dtype, self.info.num_channels)
        c = scale.chunk_size
        out: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        shape = block.shape
        cells, chunks = [], []
        for z in range(0, shape[2], c[2]):
            for y in range(0, shape[1], c[1]):
                for x in range(0, shape[0], c[0]):
                    chunk = np.asfortranarray(block[x : x + c[0], y : y + c[1], z : z + c[2]])
                    if not self.write_empty and not chunk.any():
                        continue
                    cells.append(((lo[0] + x) // c[0], (lo[1] + y) // c[1], (lo[2] + z) // c[2]))
                    chunks.append(chunk)
        if not cells:
            return {}
        ids = morton_encode(np.array(cells), scale.grid_shape)
        shards, _ = shard_and_minishard(ids, spec)
        for cid, s, chunk in zip(ids.tolist(), shards.tolist(), chunks):
            out[int(s)].append((int(cid), encode_chunk_data(codec.encode(chunk), spec)))
        return dict(out)

    def store_shard(self, shard: int, parts: list[list], after=None) -> int:
        """Stage 2: assemble one shard from its encoded chunks and store it."""
        spec = self.info.scales[self.scale_index].sharding
        entries = [(cid, lambda b=b: b) for part in parts for cid, b in part]
        data = assemble_shard(entries, spec)
        if data is None:
            return 0
        key = f"{self.info.scales[self.scale_index].key}/{shard_key(shard, spec)}"
        self.store.put(key, data)
        return 1


__all__ = ["two_stage_graph"]
