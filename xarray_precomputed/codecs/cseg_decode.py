"""A compiled ``compressed_segmentation`` decoder that runs without the GIL.

The ``compressed_segmentation`` package holds the GIL while it decodes, so a
thread pool decodes on one core. This kernel is compiled with numba
(``nogil=True``), so the reader's threads decode chunks in parallel. It writes a
box of one channel straight into the caller's array, whatever its strides
(x-fastest or C-ordered output, a window of a larger array), iterating the
destination's fastest axis innermost.

It trusts nothing in the stream: all block headers are checked before any voxel
is decoded (bit widths, value words and table starts inside the stream), and in
the few blocks whose table could end past the stream every index is checked as
it is read. Corrupt input yields an error code, never a read out of bounds.
Destination bounds are the caller's: :func:`decode_box` checks them.

This module imports numba (~0.3 s), so :mod:`.cseg` imports it when a chunk is
first decoded. Compiled code is cached on disk (``cache=True``) where numba finds
a writable cache directory; otherwise each process compiles on first use.

>>> import numpy as np
>>> words = np.array([1, 0x01000009, 8, 11, 11, 11, 12, 0x0100000D, 12, 3, 7, 9, 7,
...                   1, 5, 7], dtype="<u4")  # docs/format.md §3.6 worked example, block (4, 2, 2)
>>> out = np.empty((5, 3, 2), np.uint32)  # C-ordered works too
>>> decode_box(words, 1, len(words), (5, 3, 2), (4, 2, 2), (0, 0, 0), out)
(0, -1)
>>> int(out[0, 0, 0]), int(out[2, 0, 0]), int(out[4, 2, 1])
(9, 7, 5)
"""

from __future__ import annotations

import numba
import numpy as np
from numba import uint64 as u64
from numpy.lib.stride_tricks import as_strided

# Error codes returned with the offending block (or -1).
OK = 0
HEADERS_TRUNCATED = 1
BAD_BIT_WIDTH = 2
VALUES_BEYOND_END = 3
TABLE_BEYOND_END = 4
INDEX_BEYOND_TABLE = 5


def decode_box(words, start, end, shape, block, lo, dst) -> tuple[int, int]:
    """Decode the stream ``words[start:end]`` of a chunk of ``shape`` (x, y, z) with
    blocks of ``block``, writing its voxels ``lo + [0, dst.shape)`` into ``dst``.

    ``words`` is a uint32 array, ``dst`` a 3-D uint32 or uint64 array with positive
    strides. Returns ``(code, block)``: ``(OK, -1)`` or an error code and block.
    """
    n = dst.shape
    if len(n) != 3 or any(lo[d] < 0 or lo[d] + n[d] > shape[d] for d in range(3)):
        raise ValueError(f"window {lo} + {n} does not fit a chunk of {shape}")
    if not 0 <= start <= end <= len(words) or words.dtype != np.uint32:
        raise ValueError("stream bounds outside the words array")
    item = dst.itemsize
    if any(s <= 0 or s % item for s in dst.strides) or not dst.flags.writeable:
        raise ValueError("destination must be writable with positive strides")
    if dst.size == 0:
        return OK, -1
    strides = tuple(s // item for s in dst.strides)
    # A 1-D view from the first to the last element the box covers.
    span = 1 + sum((k - 1) * s for k, s in zip(n, strides))
    flat = as_strided(dst, shape=(span,), strides=(item,))
    return _decode(words, start, end, *shape, *block, *lo, *n, flat, *strides)


def _jit(fn):
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # numba finds no writable cache directory: compile per process
        return numba.njit(nogil=True)(fn)


@_jit
def _decode(words, start, end, sx, sy, sz, bx, by, bz, lx, ly, lz, nx, ny, nz,
            dst, ox, oy, oz):  # fmt: skip  # pragma: no cover - compiled
    # Index arithmetic is unsigned: numba then skips negative-index wraparound.
    zero, one = u64(0), u64(1)
    start, end = u64(start), u64(end)
    bx, by, bz = u64(bx), u64(by), u64(bz)
    width = u64(2) if dst.itemsize == 8 else one
    n = end - start
    gx = (u64(sx) + bx - one) // bx
    gy = (u64(sy) + by - one) // by
    gz = (u64(sz) + bz - one) // bz
    nblocks = gx * gy * gz
    if u64(2) * nblocks > n:
        return HEADERS_TRUNCATED, -1
    block_voxels = bx * by * bz
    for b in range(nblocks):
        h = u64(words[start + u64(2) * b])
        bits = h >> u64(24)
        if bits > u64(32) or (bits & (bits - one)) != zero:  # 0 or a power of two
            return BAD_BIT_WIDTH, np.int64(b)
        if u64(words[start + u64(2) * b + one]) + (bits * block_voxels + u64(31)) // u64(32) > n:
            return VALUES_BEYOND_END, np.int64(b)
        if (h & u64(0xFFFFFF)) + width > n:
            return TABLE_BEYOND_END, np.int64(b)

    # The window [l, l + n) of the chunk, and the blocks it touches.
    lx, ly, lz = u64(lx), u64(ly), u64(lz)
    hx, hy, hz = lx + u64(nx), ly + u64(ny), lz + u64(nz)
    ox, oy, oz = u64(ox), u64(oy), u64(oz)
    lut = np.empty(256, dst.dtype)
    for kz in range(lz // bz, (hz + bz - one) // bz):
        z0 = max(kz * bz, lz)
        z1 = min(kz * bz + bz, hz)
        for ky in range(ly // by, (hy + by - one) // by):
            y0 = max(ky * by, ly)
            y1 = min(ky * by + by, hy)
            for kx in range(lx // bx, (hx + bx - one) // bx):
                x0 = max(kx * bx, lx)
                x1 = min(kx * bx + bx, hx)
                b = kx + gx * (ky + gy * kz)
                h = u64(words[start + u64(2) * b])
                bits = h >> u64(24)
                table = h & u64(0xFFFFFF)
                capacity = (n - table) // width  # table entries the stream can hold
                table += start
                values = start + u64(words[start + u64(2) * b + one])
                # Loop order: the destination's fastest axis innermost.
                c0, c1, c2 = x1 - x0, y1 - y0, z1 - z0
                s0, s1, s2 = ox, oy, oz
                t0, t1, t2 = bits, bits * bx, bits * bx * by
                if oz < s0 and oz <= oy:
                    c0, c2, s0, s2, t0, t2 = c2, c0, s2, s0, t2, t0
                elif oy < s0:
                    c0, c1, s0, s1, t0, t1 = c1, c0, s1, s0, t1, t0
                if s2 < s1:
                    c1, c2, s1, s2, t1, t2 = c2, c1, s2, s1, t2, t1
                # now s0 is the smallest stride: make it the inner loop
                o_start = (x0 - lx) * ox + (y0 - ly) * oy + (z0 - lz) * oz
                bit_start = bits * ((x0 - kx * bx) + bx * ((y0 - ky * by) + by * (z0 - kz * bz)))
                if bits == zero:
                    v = u64(words[table])
                    if width == u64(2):
                        v |= u64(words[table + one]) << u64(32)
                    for i2 in range(c2):
                        for i1 in range(c1):
                            o = o_start + i2 * s2 + i1 * s1
                            for _ in range(c0):
                                dst[o] = v
                                o += s0
                    continue
                mask = (one << bits) - one
                if bits <= u64(8) and (one << bits) <= capacity:
                    # Small tables: look values up in a local copy, no index check needed.
                    for i in range(one << bits):
                        if width == u64(2):
                            lut[i] = u64(words[table + u64(2) * i]) | (
                                u64(words[table + u64(2) * i + one]) << u64(32)
                            )
                        else:
                            lut[i] = words[table + i]
                    for i2 in range(c2):
                        for i1 in range(c1):
                            o = o_start + i2 * s2 + i1 * s1
                            bit = bit_start + i2 * t2 + i1 * t1
                            for _ in range(c0):
                                dst[o] = lut[(u64(words[values + (bit >> u64(5))])
                                              >> (bit & u64(31))) & mask]  # fmt: skip
                                o += s0
                                bit += t0
                    continue
                for i2 in range(c2):
                    for i1 in range(c1):
                        o = o_start + i2 * s2 + i1 * s1
                        bit = bit_start + i2 * t2 + i1 * t1
                        for _ in range(c0):
                            i = (u64(words[values + (bit >> u64(5))]) >> (bit & u64(31))) & mask
                            if i >= capacity:
                                return INDEX_BEYOND_TABLE, np.int64(b)
                            if width == u64(2):
                                dst[o] = u64(words[table + u64(2) * i]) | (
                                    u64(words[table + u64(2) * i + one]) << u64(32)
                                )
                            else:
                                dst[o] = words[table + i]
                            o += s0
                            bit += t0
    return OK, -1
