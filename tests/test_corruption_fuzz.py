"""Corruption stays loud: random mutations of sharded volumes (byte edits, truncations,
zeroed runs in the shard index, the minishard indexes and the chunk data, raw and gzip)
either raise ``CorruptDataError`` or read as some valid reading of the mutated bytes.

The valid readings come from a small reference parser written here from the format
(checking the minishard indexes it decodes whole, and only the data it reads), independent of the package's.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import pytest

import xarray_precomputed as xp
from xarray_precomputed.chunk_grid import morton_encode
from xarray_precomputed.errors import CorruptDataError
from xarray_precomputed.reader import ScaleReader
from xarray_precomputed.shard_index import clear_index_caches

from .helpers import make_array, rand, sharding_dict

SIZE, CHUNK = (20, 16, 10), (8, 8, 5)  # grid 3 x 2 x 2, clipped chunks along x
GRID = tuple(-(-s // c) for s, c in zip(SIZE, CHUNK))
MINISHARD_BITS = 2
ISIZE = 16 << MINISHARD_BITS
CUTOUT = (slice(3, 11), slice(9, 16), slice(0, 4))  # a partial read: index requests
MUTATIONS = 120  # per encoding; about 1 s each


class Invalid(Exception):
    """No valid reading of the bytes gives this chunk."""


def _gunzip(b: bytes) -> bytes:
    try:
        return gzip.decompress(b)
    except (OSError, EOFError, zlib.error) as e:
        raise Invalid(f"gzip: {e}") from e


def reference_chunk(shard: bytes, cid: int, encoding: str, shape) -> np.ndarray | None:
    """The chunk ``cid`` as the format defines it, ``None`` if absent, or ``Invalid``.

    Lenient where a reader need not look (other minishards, other chunks' data), strict
    about the minishard index it decodes."""
    m = cid & ((1 << MINISHARD_BITS) - 1)  # identity hash, preshift 0, one shard
    if len(shard) < ISIZE:
        raise Invalid("shard index truncated")
    s, e = struct.unpack_from("<QQ", shard, 16 * m)
    s, e = s + ISIZE, e + ISIZE
    if s == e:
        return None
    if e < s or e > len(shard):
        raise Invalid("minishard index range")
    index = shard[s:e]
    if encoding == "gzip":
        index = _gunzip(index)
    if len(index) % 24:
        raise Invalid("minishard index length")
    n = len(index) // 24
    cols = [struct.unpack_from(f"<{n}Q", index, 8 * n * k) for k in range(3)]
    found, seen, chunk_id, pos = [], set(), 0, ISIZE
    for delta_id, delta_off, size in zip(*cols):
        chunk_id = (chunk_id + delta_id) % 2**64
        start = pos + delta_off
        pos = start + size
        # every entry of the index must make sense, not only the one looked up: a chunk
        # inside the shard's data region, not inside the index itself, listed once
        if not ISIZE <= start <= pos <= len(shard) or (start < e and pos > s and size):
            raise Invalid(f"chunk {chunk_id} range [{start}, {pos})")
        if chunk_id in seen:
            raise Invalid(f"chunk {chunk_id} listed twice")
        seen.add(chunk_id)
        if chunk_id == cid:
            found.append((start, pos))
    if not found:
        return None
    start, end = found[0]
    data = shard[start:end]
    if encoding == "gzip":
        data = _gunzip(data)
    if len(data) != int(np.prod(shape)) * 2:
        raise Invalid("raw chunk size")
    return np.frombuffer(data, "<u2").reshape(shape, order="F")


def reference_read(shard: bytes, encoding: str, sel) -> np.ndarray:
    """The selection of the volume from the reference parser (raises ``Invalid``)."""
    out = np.zeros(SIZE, "uint16")
    lo = [s.start or 0 for s in sel]
    hi = [s.stop if s.stop is not None else n for s, n in zip(sel, SIZE)]
    for cell in np.ndindex(*GRID):
        box = [(cell[d] * CHUNK[d], min((cell[d] + 1) * CHUNK[d], SIZE[d])) for d in range(3)]
        if any(b[1] <= lo[d] or b[0] >= hi[d] for d, b in enumerate(box)):
            continue
        cid = int(morton_encode(np.array([cell]), GRID)[0])
        chunk = reference_chunk(shard, cid, encoding, tuple(b - a for a, b in box))
        if chunk is not None:
            out[tuple(slice(a, b) for a, b in box)] = chunk
    return out[tuple(sel)]


def mutate(shard: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random mutation of the shard, in its index, a minishard index or chunk data."""
    index_ranges = []
    for m in range(1 << MINISHARD_BITS):
        s, e = struct.unpack_from("<QQ", shard, 16 * m)
        if e > s:
            index_ranges.append((s + ISIZE, e + ISIZE))
    region = rng.choice(["shard index", "minishard index", "chunk data"])
    if region == "shard index":
        lo, hi = 0, ISIZE
    elif region == "minishard index":
        lo, hi = index_ranges[rng.integers(len(index_ranges))]
    else:
        lo, hi = ISIZE, min(s for s, _ in index_ranges)  # the first minishard's chunks
    kind = rng.choice(["edit", "truncate", "zero"])
    b = bytearray(shard)
    at = int(rng.integers(lo, hi))
    if kind == "edit":
        for i in range(at, min(at + int(rng.integers(1, 5)), len(b))):
            b[i] = int(rng.integers(256))
    elif kind == "truncate":
        del b[at:]
    else:
        n = int(rng.integers(1, 17))
        b[at : at + n] = bytes(len(b[at : at + n]))
    return bytes(b), f"{kind} at {at} in the {region}"


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_mutated_shards_raise_or_read_validly(tmp_path, encoding):
    data = rand((*SIZE, 1), "uint16", seed=21)
    url = str(tmp_path / "v")
    spec = sharding_dict(0, MINISHARD_BITS, 0, mi_enc=encoding, data_enc=encoding)
    xp.to_precomputed(make_array(data), url, chunk_size=CHUNK, sharding=spec)
    store, info = xp.open_info(url)
    path = os.path.join(url, info.scales[0].key, "0.shard")
    with open(path, "rb") as f:
        original = f.read()
    assert np.array_equal(reference_read(original, encoding, [slice(None)] * 3), data[..., 0])
    rng = np.random.default_rng(5)
    outcomes = {"raised": 0, "valid": 0}
    for _ in range(MUTATIONS):
        shard, what = mutate(original, rng)
        with open(path, "wb") as f:
            f.write(shard)
        for sel in ([slice(None)] * 3, list(CUTOUT)):
            clear_index_caches()
            try:
                ours = ScaleReader(store, info, 0).read((*sel, slice(None)))[..., 0]
            except CorruptDataError:
                outcomes["raised"] += 1
                continue
            except Exception as e:  # anything else is not a clear report of corruption
                pytest.fail(f"{what}, read {sel}: {type(e).__name__}: {e}")
            try:
                expected = reference_read(shard, encoding, sel)
            except Invalid as e:
                pytest.fail(f"{what}, read {sel}: returned data although {e}")
            assert np.array_equal(ours, expected), f"{what}, read {sel}: not a valid reading"
            outcomes["valid"] += 1
    # the mutations do reach both outcomes (the test can fail either way)
    assert outcomes["raised"] > 20 and outcomes["valid"] > 20, outcomes
