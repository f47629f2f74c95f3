"""The ``neuroglancer_uint64_sharded_v1`` format: chunk ids, hashing, shard files.

docs/format.md §4. Chunk ids are compressed Morton codes of the grid cell
(:mod:`.chunk_grid`); ``chunk_id >> preshift_bits`` is hashed, its low bits pick the
minishard and the next bits the shard. A shard file is a fixed-size shard index
followed by chunk data and minishard indexes at explicit offsets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

import mmh3
import numpy as np

from .compression import gzip_compress, gzip_decompress
from .errors import CorruptDataError
from .metadata import ShardingSpec
from .shard_buffers import InPlace, _ShardBuffer

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


def _murmur64(value: int) -> int:
    return mmh3.hash64(struct.pack("<Q", value), seed=0, x64arch=False)[0] & _MASK64


def hash_ids(ids: np.ndarray, spec: ShardingSpec) -> np.ndarray:
    """The hashed, pre-shifted chunk ids that select minishard and shard."""
    ids = np.asarray(ids, dtype=_U64)
    shifted = ids >> _U64(spec.preshift_bits) if spec.preshift_bits < 64 else np.zeros_like(ids)
    if spec.hash == "identity":
        return shifted
    return np.array([_murmur64(int(v)) for v in shifted], dtype=_U64)


def shard_and_minishard(ids: np.ndarray, spec: ShardingSpec) -> tuple[np.ndarray, np.ndarray]:
    """Shard number and minishard number of each chunk id (docs/format.md §4.2).

    >>> spec = ShardingSpec(preshift_bits=1, hash="identity", minishard_bits=2, shard_bits=3)
    >>> [a.tolist() for a in shard_and_minishard(np.array([43], dtype=np.uint64), spec)]
    [[5], [1]]
    """
    h = hash_ids(ids, spec)
    minishard = h & _U64((1 << spec.minishard_bits) - 1)
    shard = (h >> _U64(spec.minishard_bits)) & _U64((1 << spec.shard_bits) - 1)
    return shard, minishard


def shard_key(shard: int, spec: ShardingSpec) -> str:
    """Object name of a shard (docs/format.md §4.3).

    >>> shard_key(10, ShardingSpec(preshift_bits=0, hash="identity", minishard_bits=0, shard_bits=9))
    '00a.shard'
    """
    width = -(-spec.shard_bits // 4)
    return f"{int(shard):0{width}x}.shard"


def shard_index_size(spec: ShardingSpec) -> int:
    return 16 << spec.minishard_bits


# -- reading -----------------------------------------------------------------


def parse_shard_index(data: bytes, spec: ShardingSpec, where: str) -> np.ndarray:
    """The shard index as an (n_minishards, 2) array of absolute [start, end) byte offsets."""
    n = 1 << spec.minishard_bits
    if len(data) != 16 * n:
        raise CorruptDataError(
            f"{where}: shard index is {len(data)} bytes, expected {16 * n} (truncated shard?)"
        )
    index = np.frombuffer(data, dtype="<u8").reshape(n, 2).astype(_U64)
    if np.any(index[:, 1] < index[:, 0]):
        bad = int(np.argmax(index[:, 1] < index[:, 0]))
        raise CorruptDataError(f"{where}: minishard {bad} index has end before start")
    if np.any(index[:, 1] >= _U64(1 << 63)):
        bad = int(np.argmax(index[:, 1] >= _U64(1 << 63)))
        raise CorruptDataError(f"{where}: minishard {bad} index lies beyond any shard's end")
    return index + _U64(16 * n)


def decode_minishard_index(
    data: bytes,
    spec: ShardingSpec,
    where: str,
    index_range: tuple[int, int] | None = None,
    shard_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a minishard index into sorted (chunk ids, start offsets, end offsets).

    Offsets are absolute within the shard file. Every entry is checked before use
    (docs/format.md §4.4): its chunk lies after the shard index, its offsets do not
    wrap around, it does not overlap the minishard index itself (``index_range``,
    where the index was read from) and it ends within the shard (``shard_size``,
    when known); no chunk id appears twice. A violation is a CorruptDataError.
    """
    if spec.minishard_index_encoding == "gzip":
        data = gzip_decompress(data, None, f"{where} minishard index")
    if len(data) % 24:
        raise CorruptDataError(
            f"{where}: minishard index is {len(data)} bytes, not a multiple of 24"
        )
    a = np.frombuffer(data, dtype="<u8").reshape(3, -1).astype(_U64)
    isize = shard_index_size(spec)
    with np.errstate(over="ignore"):
        # chunk ids may wrap (unsorted ids are delta encoded modulo 2**64); offsets may not
        ids = np.cumsum(a[0], dtype=_U64)
        sizes = a[2]
        gaps = np.cumsum(a[1], dtype=_U64)
        used = np.cumsum(sizes, dtype=_U64)
        ends_before = np.concatenate([[_U64(0)], used[:-1]])
        starts = _U64(isize) + gaps + ends_before
        ends = starts + sizes
    if len(ids):
        _check_entries(gaps, used, starts, ends, isize, index_range, shard_size, ids, where)
    if len(ids) > 1 and np.any(ids[1:] < ids[:-1]):
        order = np.argsort(ids, kind="stable")
        ids, starts, ends = ids[order], starts[order], ends[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        dup = int(ids[1:][ids[1:] == ids[:-1]][0])
        raise CorruptDataError(f"{where}: minishard index lists chunk {dup} twice")
    return ids, starts, ends


def _check_entries(gaps, used, starts, ends, isize, index_range, shard_size, ids, where) -> None:
    limit = _U64(1 << 63)  # no shard is 8 EiB: larger offsets are corrupt
    bad = (
        (gaps[-1] >= limit)
        | (used[-1] >= limit)
        | np.any(gaps[1:] < gaps[:-1])
        | np.any(used[1:] < used[:-1])
    )
    if bad:
        raise CorruptDataError(f"{where}: minishard index offsets or sizes overflow")
    wrong = (starts < _U64(isize)) | (ends < starts) | (ends >= limit)
    if shard_size is not None:
        wrong |= ends > _U64(shard_size)
    if index_range is not None:
        lo, hi = (_U64(v) for v in index_range)
        wrong |= (starts < hi) & (ends > lo) & (ends > starts)
    if np.any(wrong):
        i = int(np.argmax(wrong))
        raise CorruptDataError(
            f"{where}: minishard index gives chunk {int(ids[i])} the byte range "
            f"[{int(starts[i])}, {int(ends[i])}), outside the shard's data region"
        )


def lookup(
    ids: np.ndarray, index: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find chunk ids in a decoded minishard index: (found mask, starts, ends)."""
    mids, starts, ends = index
    if len(mids) == 0:
        z = np.zeros(len(ids), dtype=_U64)
        return np.zeros(len(ids), dtype=bool), z, z
    pos = np.searchsorted(mids, ids)
    pos_c = np.minimum(pos, len(mids) - 1)
    found = mids[pos_c] == ids
    return found, starts[pos_c], ends[pos_c]


def decode_chunk_data(data: bytes, spec: ShardingSpec, max_size: int, where: str) -> bytes:
    """Undo the shard's ``data_encoding`` of one chunk."""
    if spec.data_encoding == "gzip":
        return gzip_decompress(data, max_size, where)
    return data


# -- writing -----------------------------------------------------------------


def encode_shard(chunks: Mapping[int, bytes], spec: ShardingSpec) -> bytes:
    """Assemble a shard file from ``{chunk_id: encoded chunk bytes}``.

    Chunk bytes are the scale-encoded chunks; ``data_encoding`` is applied here.

    >>> spec = ShardingSpec(preshift_bits=0, hash="identity", minishard_bits=0, shard_bits=0)
    >>> len(encode_shard({0: b"ab", 1: b"c"}, spec))  # 16 index + 3 data + 2 * 24 minishard index
    67
    """
    entries = [(i, lambda b=b: encode_chunk_data(b, spec)) for i, b in chunks.items()]
    return bytes(assemble_shard(entries, spec) or b"")


def encode_chunk_data(data: bytes, spec: ShardingSpec) -> bytes:
    """Apply the shard's ``data_encoding`` to one encoded chunk."""
    return gzip_compress(data) if spec.data_encoding == "gzip" else data


def assemble_shard(
    entries: Sequence[tuple[int, Callable[[], bytes | memoryview | None]]],
    spec: ShardingSpec,
    space=None,
    sink=None,
) -> bytearray | memoryview | int | None:
    """Build a shard file, producing each chunk's bytes only when it is appended.

    ``entries`` pairs chunk ids with callables returning the chunk's stored bytes
    (``data_encoding`` already applied) or ``None`` to leave the chunk out. Chunks
    are laid out as tensorstore does: the shard index, then per minishard
    (ascending) its chunks by ascending id, followed by its minishard index. Bytes
    are appended as they are produced, so memory stays near the shard's size.
    Returns ``None`` when no chunk remains (an empty shard is never written).

    With ``space`` (a laid-out shard: ``.buf``, the buffer, with chunks already
    assembled where they will be stored if every chunk is kept; ``.evacuate()``, called
    when one is left out, moves those not yet stored out of the buffer; see
    :class:`.write_tasks.ShardSpace`) the shard is built in that buffer; pages never
    written are never touched. Without it (or should the shard outgrow it), a
    growing bytearray. With ``sink`` (a :class:`.shard_buffers.ShardFileSink`) the shard
    is written to a file as it is assembled, and its size is returned.
    """
    if not entries:
        return None
    ids = np.array([e[0] for e in entries], dtype=_U64)
    _, minishards = shard_and_minishard(ids, spec)
    order = np.lexsort((ids, minishards))
    if len(ids) > 1 and np.any(
        (ids[order][1:] == ids[order][:-1]) & (minishards[order][1:] == minishards[order][:-1])
    ):
        raise ValueError("duplicate chunk ids in one shard")
    isize = shard_index_size(spec)
    out = sink if sink is not None else _ShardBuffer(isize, space)
    header = np.zeros(((1 << spec.minishard_bits), 2), dtype="<u8")
    current: list = [None, [], [], []]  # minishard, ids, relative starts, sizes

    def flush() -> None:
        m, m_ids, m_starts, m_sizes = current
        if m is None or not m_ids:
            return
        index_bytes = minishard_index_bytes(m_ids, m_starts, m_sizes, spec)
        rel = len(out) - isize
        header[m] = (rel, rel + len(index_bytes))
        out.extend(index_bytes)

    for i in order:
        m = int(minishards[i])
        if m != current[0]:
            flush()  # before the chunk's bytes: they may be written in place
            current[:] = [m, [], [], []]
        blob = entries[i][1]()
        if isinstance(blob, InPlace):
            blob = out.fill(blob)
        if blob is None:
            out.dropped()
            continue
        current[1].append(int(ids[i]))
        current[2].append(len(out) - isize)
        current[3].append(len(blob))
        out.extend(blob)  # a no-op for bytes filled in place
    flush()
    if len(out) == isize:
        return None
    return out.finish(header.tobytes())


def minishard_index_bytes(ids, starts, sizes, spec: ShardingSpec) -> bytes:
    """A minishard's index (``minishard_index_encoding`` applied) for chunks of ascending
    ``ids`` stored at ``starts`` (relative to the end of the shard index) with ``sizes``."""
    table = np.zeros((3, len(ids)), dtype="<u8")
    table[0] = np.diff(np.array(ids, dtype=_U64), prepend=_U64(0))
    starts = np.array(starts, dtype=_U64)
    sizes = np.array(sizes, dtype=_U64)
    prev_ends = np.concatenate([[_U64(0)], starts[:-1] + sizes[:-1]])
    table[1] = starts - prev_ends
    table[2] = sizes
    index_bytes = table.tobytes()
    if spec.minishard_index_encoding == "gzip":
        index_bytes = gzip_compress(index_bytes)
    return index_bytes


def stored_chunks(shard: bytes, spec: ShardingSpec, where: str) -> Iterable[tuple[int, memoryview]]:
    """Every (chunk id, stored bytes) in a whole shard file, ``data_encoding`` still applied.

    The bytes are views into ``shard``; every range is checked against its length.
    """
    size = shard_index_size(spec)
    index = parse_shard_index(shard[:size], spec, where)
    view = memoryview(shard)
    for m, (start, end) in enumerate(index):
        if start == end:
            continue
        if end > len(shard):
            raise CorruptDataError(f"{where}: minishard {m} index lies beyond the end of the shard")
        ids, starts, ends = decode_minishard_index(
            shard[int(start) : int(end)], spec, f"{where} minishard {m}",
            index_range=(int(start), int(end)), shard_size=len(shard),
        )  # fmt: skip
        for i, s, e in zip(ids, starts, ends):
            yield int(i), view[int(s) : int(e)]


def read_shard_chunks(shard: bytes, spec: ShardingSpec, where: str) -> Iterable[tuple[int, bytes]]:
    """Every (chunk id, stored chunk bytes) in a whole shard file, data_encoding undone."""
    for cid, blob in stored_chunks(shard, spec, where):
        yield cid, bytes(decode_chunk_data(blob, spec, None, where))
