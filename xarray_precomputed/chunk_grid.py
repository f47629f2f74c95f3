"""Chunk-grid maths: chunk shapes and names, compressed Morton codes, shard boxes.

All positions here are in array coordinates, i.e. voxels relative to the scale's
``voxel_offset`` (index 0 is the first voxel of the volume). The grid is anchored
at ``voxel_offset`` and the last chunk along each axis is clipped (docs/format.md §2.1).
Chunks are numbered by compressed Morton codes of their grid cell (docs/format.md §4.1); with
the identity hash a shard holds an axis-aligned box of chunks (docs/format.md §5.1).

Pure maths on tuples and metadata objects: this module imports nothing from the
package at run time, so metadata validation can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .metadata import Scale, ShardingSpec

_U64 = np.uint64


def compressed_morton_bits(grid_shape: Sequence[int]) -> tuple[int, int, int]:
    """Bits per axis of the compressed Morton code of a chunk grid (docs/format.md §4.1).

    >>> compressed_morton_bits((5, 3, 8))
    (3, 2, 3)
    """
    b = tuple(max(int(n) - 1, 0).bit_length() for n in grid_shape)
    return (b[0], b[1], b[2])


def morton_bit_dims(grid_shape: Sequence[int]) -> list[int]:
    """The axis (0, 1, 2) that supplies each bit of the compressed Morton code, LSB first.

    >>> morton_bit_dims((5, 3, 8))
    [0, 1, 2, 0, 1, 2, 0, 2]
    """
    bits = compressed_morton_bits(grid_shape)
    return [d for i in range(max(bits, default=0)) for d in range(3) if i < bits[d]]


def morton_encode(cells: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """Compressed Morton codes of grid cells (``cells``: int array of shape (n, 3)).

    >>> morton_encode(np.array([[3, 1, 2]]), (5, 3, 8))
    array([43], dtype=uint64)
    """
    cells = np.asarray(cells, dtype=_U64).reshape(-1, 3)
    out = np.zeros(len(cells), dtype=_U64)
    per_dim = [0, 0, 0]
    for j, d in enumerate(morton_bit_dims(grid_shape)):
        bit = (cells[:, d] >> _U64(per_dim[d])) & _U64(1)
        out |= bit << _U64(j)
        per_dim[d] += 1
    return out


def morton_decode(ids: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """Grid cells (n, 3) of compressed Morton codes; inverse of :func:`morton_encode`.

    >>> morton_decode(np.array([43], dtype=np.uint64), (5, 3, 8)).tolist()
    [[3, 1, 2]]
    """
    ids = np.asarray(ids, dtype=_U64).reshape(-1)
    out = np.zeros((len(ids), 3), dtype=_U64)
    per_dim = [0, 0, 0]
    for j, d in enumerate(morton_bit_dims(grid_shape)):
        out[:, d] |= ((ids >> _U64(j)) & _U64(1)) << _U64(per_dim[d])
        per_dim[d] += 1
    return out.astype(np.int64)


def _aligned_box(grid_shape: Sequence[int], lo: int, hi: int) -> tuple[int, int, int] | None:
    """Box shape of the chunk sets that share Morton bits ``[lo, hi)`` (identity hash).

    Bits below ``lo`` vary inside a set and bits from ``hi`` up are dropped (aliased).
    Per axis, the set is an interval iff no varying bit lies above a fixed one, i.e. the
    axis has no fixed bit or no dropped bit; axes without fixed bits span the grid.
    """
    k = [0, 0, 0]
    fixed = [False, False, False]
    dropped = [False, False, False]
    for j, d in enumerate(morton_bit_dims(grid_shape)):
        if j < lo:
            k[d] += 1
        elif j < hi:
            fixed[d] = True
        else:
            dropped[d] = True
    if any(f and a for f, a in zip(fixed, dropped)):
        return None
    return tuple(  # type: ignore[return-value]
        min(int(grid_shape[d]), 1 << k[d]) if fixed[d] else int(grid_shape[d]) for d in range(3)
    )


def shard_box_chunks(grid_shape: Sequence[int], spec: ShardingSpec) -> tuple[int, int, int] | None:
    """Shape in chunks of the axis-aligned box each shard holds, or ``None`` if shards
    are not boxes (murmurhash, or too few bits so boxes alias) (docs/format.md §5.1).

    Besides tensorstore's rule (identity hash and ``sum(bits) <= preshift + minishard + shard``)
    this also recognises aliasing that still leaves boxes, e.g. ``shard_bits = 0``
    (one shard holds the whole grid).

    >>> from xarray_precomputed.metadata import ShardingSpec
    >>> spec = ShardingSpec(preshift_bits=1, hash="identity", minishard_bits=2, shard_bits=5)
    >>> shard_box_chunks((5, 3, 8), spec)
    (2, 2, 2)
    """
    if spec.hash != "identity":
        return None
    n = spec.preshift_bits + spec.minishard_bits
    return _aligned_box(grid_shape, n, n + spec.shard_bits)


def scattered_shards(scale: Scale) -> bool:
    """Whether ``scale`` is sharded and its shards are not boxes (murmurhash, or too few
    bits): writing part of it needs every shard, and a write cannot be cut at shards."""
    return scale.sharding is not None and shard_box_chunks(scale.grid_shape, scale.sharding) is None


def minishard_box_chunks(
    grid_shape: Sequence[int], spec: ShardingSpec
) -> tuple[int, int, int] | None:
    """Shape in chunks of the box each minishard holds (identity hash only)."""
    if spec.hash != "identity":
        return None
    n = spec.preshift_bits + spec.minishard_bits + spec.shard_bits
    return _aligned_box(grid_shape, spec.preshift_bits, n)


def chunk_shape(scale: Scale, cell: Sequence[int]) -> tuple[int, int, int]:
    """Shape of chunk ``cell`` after clipping to the volume.

    >>> from xarray_precomputed.metadata import Scale
    >>> s = Scale(key="k", size=(10, 7, 5), resolution=(1, 1, 1), chunk_sizes=((4, 4, 4),),
    ...           encoding="raw")
    >>> chunk_shape(s, (2, 1, 1))
    (2, 3, 1)
    """
    c, s = scale.chunk_size, scale.size
    return tuple(min(c[d], s[d] - cell[d] * c[d]) for d in range(3))  # type: ignore[return-value]


def chunk_key(scale: Scale, cell: Sequence[int]) -> str:
    """Unsharded object name of chunk ``cell`` relative to the scale directory (docs/format.md §2.2).

    >>> from xarray_precomputed.metadata import Scale
    >>> s = Scale(key="k", size=(10, 7, 5), resolution=(1, 1, 1), chunk_sizes=((4, 4, 4),),
    ...           encoding="raw", voxel_offset=(-5, 0, 3))
    >>> chunk_key(s, (0, 0, 1))
    '-5--1_0-4_7-8'
    """
    o, c, s = scale.voxel_offset, scale.chunk_size, scale.size
    parts = []
    for d in range(3):
        lo = cell[d] * c[d]
        hi = min(lo + c[d], s[d])
        parts.append(f"{o[d] + lo}-{o[d] + hi}")
    return "_".join(parts)


def shard_box_voxels(scale: Scale, box_chunks: Sequence[int]) -> tuple[int, int, int]:
    """Voxel shape of a shard box of ``box_chunks`` chunks, clipped to the volume."""
    c, s = scale.chunk_size, scale.size
    return tuple(min(box_chunks[d] * c[d], s[d]) for d in range(3))  # type: ignore[return-value]


GROUP_BYTES = 64 * 2**20


def chunk_group(scale: Scale, voxel_bytes: int, target: int = GROUP_BYTES) -> tuple[int, int, int]:
    """A block of whole chunks of about ``target`` bytes, grown along x first.

    Doubling along x, then y, then z keeps a block's chunks close in storage order.

    >>> from xarray_precomputed.metadata import Scale
    >>> s = Scale(key="k", size=(1024, 1024, 1024), resolution=(1, 1, 1),
    ...           chunk_sizes=((64, 64, 64),), encoding="raw")
    >>> chunk_group(s, 1)
    (512, 512, 256)
    """
    c = scale.chunk_size
    chunk_bytes = c[0] * c[1] * c[2] * voxel_bytes
    n = [1, 1, 1]
    grid = scale.grid_shape
    grown = True
    while grown:
        grown = False
        for d in range(3):
            if n[d] < grid[d] and n[0] * n[1] * n[2] * 2 * chunk_bytes <= target:
                n[d] = min(grid[d], n[d] * 2)
                grown = True
    return shard_box_voxels(scale, n)


def preferred_chunks(scale: Scale, voxel_bytes: int) -> tuple[int, int, int]:
    """The block shape (voxels) that Dask should use so tasks align with storage.

    Box-shaped shards (identity hash, docs/format.md §5.1) give one task per shard. Any other
    layout (unsharded, murmurhash) gives blocks of whole storage chunks of about
    64 MiB: one task per 64^3 chunk would spend more time scheduling than reading.
    """
    if scale.sharding is not None:
        box = shard_box_chunks(scale.grid_shape, scale.sharding)
        if box is not None:
            return shard_box_voxels(scale, box)
    return chunk_group(scale, voxel_bytes)
