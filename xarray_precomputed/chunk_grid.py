"""Chunk-grid maths: which chunks a selection touches and what they are called.

All positions here are in array coordinates, i.e. voxels relative to the scale's
``voxel_offset`` (index 0 is the first voxel of the volume). The grid is anchored
at ``voxel_offset`` and the last chunk along each axis is clipped (spec 2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metadata import Scale


def chunk_origin(scale: Scale, cell: Sequence[int]) -> tuple[int, int, int]:
    """Array coordinates of the first voxel of chunk ``cell``."""
    c = scale.chunk_size
    return (cell[0] * c[0], cell[1] * c[1], cell[2] * c[2])


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
    """Unsharded object name of chunk ``cell`` relative to the scale directory (spec 2.2).

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


def cells_in_box(
    scale: Scale, start: Sequence[int], stop: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-axis chunk indices overlapping the voxel box ``[start, stop)``."""
    c = scale.chunk_size
    return tuple(  # type: ignore[return-value]
        np.arange(start[d] // c[d], -(-stop[d] // c[d]), dtype=np.int64) for d in range(3)
    )


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

    Box-shaped shards (identity hash, spec 5.1) give one task per shard. Any other
    layout (unsharded, murmurhash) gives blocks of whole storage chunks of about
    64 MiB: one task per 64^3 chunk would spend more time scheduling than reading.
    """
    from .sharding import shard_box_chunks

    if scale.sharding is not None:
        box = shard_box_chunks(scale.grid_shape, scale.sharding)
        if box is not None:
            return shard_box_voxels(scale, box)
    return chunk_group(scale, voxel_bytes)
