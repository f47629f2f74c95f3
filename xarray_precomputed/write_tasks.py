"""What one write task does: encode chunks into one shard (or whole chunk objects) and store them.

A box that covers a shard or chunk only in part is merged with what is stored:
untouched chunks keep their stored bytes, partly covered chunks are decoded,
updated and re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .chunk_grid import chunk_key, chunk_shape, morton_encode, shard_box_chunks
from .codecs import scale_codec
from .conditional import update_object
from .errors import WriteError
from .input_blocks import ChunkedBox, InputPieces
from .metadata import Scale, VolumeInfo
from .reader import ScaleReader
from .sharding import (
    InPlace,
    assemble_shard,
    decode_chunk_data,
    encode_chunk_data,
    shard_and_minishard,
    shard_capacity,
    shard_key,
    stored_chunks,
)
from .storage import Store


def write_block(
    store: Store,
    info: VolumeInfo,
    scale_index: int,
    block: np.ndarray | InputPieces | ChunkedBox,
    origin: Sequence[int],
    *,
    merge: bool = True,
    write_empty: bool = False,
) -> int:
    """Write ``block`` (x, y, z, channel) at array position ``origin`` of a scale.

    The block must lie within one shard (sharded) or consist of chunks that no
    other block touches. Returns the number of objects stored or deleted.
    """
    scale = info.scales[scale_index]
    expected_dtype = info.dtype
    if not isinstance(block, (InputPieces, ChunkedBox)):
        block = InputPieces(block.shape, [(np.asarray(block), (0, 0, 0))])
    if block.dtype != expected_dtype or block.shape[3] != info.num_channels:
        raise WriteError(
            f"block of {block.dtype} x {block.shape[3]} channel(s) does not match "
            f"{info.data_type} x {info.num_channels} of {store.url}"
        )
    if scale.sharding is not None:
        return _write_shard(store, info, scale_index, block, origin, merge, write_empty)
    return _write_unsharded(store, info, scale_index, block, origin, merge, write_empty)


def _cells_of_block(scale: Scale, origin, shape) -> list[tuple[int, int, int]]:
    c = scale.chunk_size
    ranges = [range(origin[d] // c[d], -(-(origin[d] + shape[d]) // c[d])) for d in range(3)]
    return [(x, y, z) for z in ranges[2] for y in ranges[1] for x in ranges[0]]


def _overlap(scale: Scale, cell, origin, shape):
    """Slices of the chunk and of the block where they overlap, and whether the
    block covers the whole (clipped) chunk."""
    c = scale.chunk_size
    cshape = chunk_shape(scale, cell)
    in_chunk, in_block, whole = [], [], True
    for d in range(3):
        lo = max(cell[d] * c[d], origin[d])
        hi = min(cell[d] * c[d] + cshape[d], origin[d] + shape[d])
        in_chunk.append(slice(lo - cell[d] * c[d], hi - cell[d] * c[d]))
        in_block.append(slice(lo - origin[d], hi - origin[d]))
        whole &= hi - lo == cshape[d]
    return tuple(in_chunk), tuple(in_block), whole, cshape


def _write_unsharded(store, info, scale_index, block, origin, merge, write_empty) -> int:
    scale = info.scales[scale_index]
    codec = scale_codec(scale, info.dtype, info.num_channels)
    reader = ScaleReader(store, info, scale_index) if merge else None
    count = 0
    for cell in _cells_of_block(scale, origin, block.shape):
        in_chunk, in_block, whole, cshape = _overlap(scale, cell, origin, block.shape)
        key = f"{scale.key}/{chunk_key(scale, cell)}"
        if whole:
            chunk = block.take(in_block)  # chunk by chunk: memory stays small
        elif reader is not None:
            # another writer may merge into this chunk at the same time: atomically
            update_object(store, key, _chunk_merger(reader, cell, key, cshape, in_chunk,
                                                    block.get(in_block), write_empty))  # fmt: skip
            count += 1
            continue
        else:
            chunk = _existing_chunk(None, scale, cell, cshape, info)
            chunk[in_chunk] = block.get(in_block)
        if not write_empty and not chunk.any():
            if merge:
                store.delete(key)
                count += 1
            continue
        store.put(key, codec.encode(chunk))
        count += 1
    return count


def _chunk_merger(reader: ScaleReader, cell, key, cshape, in_chunk, part, write_empty):
    """The update of one stored chunk: its stored voxels with ``part`` written at ``in_chunk``."""
    info = reader.info

    def merged(stored: bytes | None) -> bytes | None:
        chunk = np.zeros((*cshape, info.num_channels), dtype=info.dtype, order="F")
        if stored is not None:
            where = f"{reader.store.url_of(key)} (cell {cell})"
            data = reader._content_decoded(stored, cell, where)
            chunk[...] = reader.codec.decode(data, cshape, where)
        chunk[in_chunk] = part
        if not write_empty and not chunk.any():
            return None
        return reader.codec.encode(chunk)

    return merged


def _existing_chunk(reader: ScaleReader | None, scale, cell, cshape, info) -> np.ndarray:
    if reader is None:
        return np.zeros((*cshape, info.num_channels), dtype=info.dtype, order="F")
    c = scale.chunk_size
    sel = tuple(slice(cell[d] * c[d], cell[d] * c[d] + cshape[d]) for d in range(3))
    return np.asfortranarray(reader.read((*sel, slice(None))))


def _write_shard(store, info, scale_index, block, origin, merge, write_empty) -> int:
    scale = info.scales[scale_index]
    spec = scale.sharding
    codec = scale_codec(scale, info.dtype, info.num_channels)
    grid = scale.grid_shape
    box = shard_box_chunks(grid, spec)
    first = tuple(origin[d] // scale.chunk_size[d] for d in range(3))
    box_origin = tuple(first[d] // box[d] * box[d] for d in range(3))
    cells = [
        (x, y, z)
        for z in range(box_origin[2], min(box_origin[2] + box[2], grid[2]))
        for y in range(box_origin[1], min(box_origin[1] + box[1], grid[1]))
        for x in range(box_origin[0], min(box_origin[0] + box[0], grid[0]))
    ]
    ids = morton_encode(np.array(cells), grid)
    shards, _ = shard_and_minishard(ids, spec)
    shard = int(shards[0])
    key = f"{scale.key}/{shard_key(shard, spec)}"
    where = f"{store.url_of(key)} (scale {scale.key!r})"
    covered = [_overlap(scale, cell, origin, block.shape) for cell in cells]
    if merge and not all(cov[2] and _inside(cell, origin, block.shape, scale) for cell, cov in
                         zip(cells, covered)):  # fmt: skip
        # other writers may merge their regions into this shard at the same time:
        # read, merge and write it back atomically (conditional.py)
        def rebuild(stored: bytes | None) -> bytearray | None:
            existing = {} if stored is None else dict(stored_chunks(stored, spec, where))
            args = (block, False, cells, ids, covered, existing, codec, spec, info, write_empty,
                    where)  # fmt: skip
            return assemble_shard(_shard_entries(*args), spec)

        update_object(store, key, rebuild)
        return 1
    # built once: each chunk's input can be freed once it is encoded
    entries = _shard_entries(block, True, cells, ids, covered, {}, codec, spec, info,
                             write_empty, where)  # fmt: skip
    capacity = None
    if store.is_local and codec.name == "raw" and spec.data_encoding == "raw":
        # each chunk's bytes are known in advance: one buffer, never reallocated (for a
        # store that writes a memoryview as is; others would copy it into bytes)
        sizes = [codec.nbytes(cov[3]) for cov in covered]
        capacity = shard_capacity(spec, sizes)
    data = assemble_shard(entries, spec, capacity)
    if data is None:
        if merge:
            store.delete(key)
            return 1
        return 0
    store.put(key, data)
    return 1


def _shard_entries(block, release, cells, ids, covered, existing, codec, spec, info, write_empty,
                   where):  # fmt: skip
    """``(chunk id, producer)`` of every chunk the shard will hold: stored or new.

    With ``release`` each chunk's input may be freed once read (the entries are
    produced once: not for a merge that may be retried).
    """
    entries = []
    for cell, cid, (in_chunk, in_block, whole, cshape) in zip(cells, ids, covered):
        cid = int(cid)
        inside = any(s.stop > s.start for s in in_block) and all(s.stop > s.start for s in in_block)
        if not inside:
            if cid in existing:
                entries.append((cid, lambda b=existing[cid]: b))
            continue
        entries.append(
            (
                cid,
                _chunk_producer(
                    block,
                    release,
                    cell,
                    cid,
                    in_chunk,
                    in_block,
                    whole,
                    cshape,
                    existing,
                    codec,
                    spec,
                    info,
                    write_empty,
                    where,
                ),
            )  # fmt: skip
        )
    return entries


def _inside(cell, origin, shape, scale) -> bool:
    c = scale.chunk_size
    return all(
        origin[d] <= cell[d] * c[d] < origin[d] + shape[d] or shape[d] == 0 for d in range(3)
    )


def _chunk_producer(block, release, cell, cid, in_chunk, in_block, whole, cshape, existing, codec,
                    spec, info, write_empty, where):  # fmt: skip
    read = block.take if release else block.get
    if whole and codec.name == "raw" and spec.data_encoding == "raw":
        # stored as is: copied from the input straight into the shard, no copy of its own
        def fill(dst: np.ndarray) -> bool:
            chunk = dst.view(codec.dtype).reshape((*cshape, info.num_channels), order="F")
            block.copy_to(in_block, chunk, release)
            return write_empty or bool(chunk.any())

        return lambda: InPlace(codec.nbytes(cshape), fill)

    def produce():
        if whole:
            chunk = read(in_block)  # chunk by chunk: memory stays small
        else:
            chunk = np.zeros((*cshape, info.num_channels), dtype=info.dtype, order="F")
            if cid in existing:
                raw = _undo_data_encoding(existing[cid], spec, codec, cshape, where)
                chunk[...] = codec.decode(raw, cshape, f"{where} chunk {cid}")
            chunk[in_chunk] = read(in_block)
        if not write_empty and not chunk.any():
            return None
        return encode_chunk_data(codec.encode(chunk), spec)

    return produce


def _undo_data_encoding(blob, spec, codec, cshape, where) -> bytes:
    return decode_chunk_data(bytes(blob), spec, codec.expand_bound(cshape), where)
