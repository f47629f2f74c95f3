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
from .shard_buffers import InPlace, ShardFileSink
from .sharding import (
    assemble_shard,
    decode_chunk_data,
    encode_chunk_data,
    minishard_index_bytes,
    shard_and_minishard,
    shard_index_size,
    shard_key,
    stored_chunks,
)
from .storage import Store, StreamedObject


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
    cells, ids, covered = _shard_cells(scale, origin, block.shape)
    shards, _ = shard_and_minishard(ids, spec)
    shard = int(shards[0])
    key = f"{scale.key}/{shard_key(shard, spec)}"
    where = f"{store.url_of(key)} (scale {scale.key!r})"
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
    space = getattr(block, "space", None)  # a shard whose chunks are already in place
    if space is None and store.is_local:
        # written to the file chunk by chunk as they are encoded: never whole in memory
        isize = shard_index_size(spec)

        def write(f) -> bool:
            return assemble_shard(entries, spec, sink=ShardFileSink(f, isize)) is not None

        if store.put(key, StreamedObject(write)):
            return 1
        if merge:
            store.delete(key)
            return 1
        return 0
    data = assemble_shard(entries, spec, space)
    if data is None:
        if merge:
            store.delete(key)
            return 1
        return 0
    store.put(key, data)
    return 1


class ShardSpace:
    """A raw shard's buffer, laid out before the task's input is assembled.

    Offsets assume every chunk is kept (minishard indexes included, encoded as they
    will be); the box's whole chunks are then assembled right where the shard will hold
    them (:meth:`part`), and storing them copies nothing. When a chunk is left out
    (empty), the later ones would move: :meth:`evacuate` then copies the chunks not yet
    stored out of the buffer first (``held``: the box's arrays by chunk, set by the box).
    """

    def __init__(self, buf: np.ndarray, offsets: dict, dtype: np.dtype) -> None:
        self.buf = buf
        self.offsets = offsets  # cell -> (byte offset, chunk shape)
        self.dtype = dtype
        self.held: dict = {}

    def evacuate(self) -> None:
        """Copy the chunks not yet stored out of the buffer; no more chunks go in it."""
        for key, part in self.held.items():
            if np.may_share_memory(part, self.buf):
                self.held[key] = np.array(part, order="F")
        self.offsets = {}

    def part(self, cell, shape) -> np.ndarray | None:
        """The shard's memory for chunk ``cell`` of ``shape`` (x, y, z, channel), if whole."""
        where = self.offsets.get(tuple(cell))
        if where is None or tuple(where[1]) != tuple(shape[:3]):
            return None
        n = int(np.prod(shape)) * self.dtype.itemsize
        return self.buf[where[0] : where[0] + n].view(self.dtype).reshape(shape, order="F")


def shard_space(store, info, scale_index, origin, shape, merge) -> ShardSpace | None:
    """The :class:`ShardSpace` of the shard a box at ``origin`` of ``shape`` writes, when
    its chunks are stored as is (raw chunks, raw data and minishard index encodings, a
    local store, a write that does not merge stored chunks); otherwise ``None``."""
    scale = info.scales[scale_index]
    spec = scale.sharding
    if spec is None or not store.is_local:
        return None
    codec = scale_codec(scale, info.dtype, info.num_channels)
    if codec.name != "raw" or spec.data_encoding != "raw":
        return None
    cells, ids, covered = _shard_cells(scale, origin, shape)
    if merge and not all(cov[2] and _inside(cell, origin, shape, scale) for cell, cov in
                         zip(cells, covered)):  # fmt: skip
        return None
    inside = [all(s.stop > s.start for s in cov[1]) for cov in covered]
    kept = [i for i in range(len(cells)) if inside[i]]
    if not kept:
        return None
    kept_ids = ids[kept]
    _, minishards = shard_and_minishard(kept_ids, spec)
    isize = shard_index_size(spec)
    pos, offsets, current = isize, {}, [None, [], [], []]  # minishard, ids, starts, sizes
    for j in [*np.lexsort((kept_ids, minishards)), None]:  # as assemble_shard lays chunks out
        if j is None or minishards[j] != current[0]:
            if current[1]:  # the previous minishard's index
                pos += len(minishard_index_bytes(*current[1:], spec))
            if j is None:
                break
            current = [minishards[j], [], [], []]
        i = kept[j]
        _, _, whole, cshape = covered[i]
        if whole:
            offsets[cells[i]] = (pos, cshape)
        size = codec.nbytes(cshape)
        current[1].append(int(kept_ids[j]))
        current[2].append(pos - isize)
        current[3].append(size)
        pos += size
    return ShardSpace(np.empty(pos, np.uint8), offsets, codec.dtype)


def _shard_cells(scale, origin, shape):
    """The cells of the shard holding ``origin``, their chunk ids and their overlap with the box."""
    grid = scale.grid_shape
    box = shard_box_chunks(grid, scale.sharding)
    first = tuple(origin[d] // scale.chunk_size[d] for d in range(3))
    box_origin = tuple(first[d] // box[d] * box[d] for d in range(3))
    cells = [
        (x, y, z)
        for z in range(box_origin[2], min(box_origin[2] + box[2], grid[2]))
        for y in range(box_origin[1], min(box_origin[1] + box[1], grid[1]))
        for x in range(box_origin[0], min(box_origin[0] + box[0], grid[0]))
    ]
    ids = morton_encode(np.array(cells), grid)
    return cells, ids, [_overlap(scale, cell, origin, shape) for cell in cells]


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
