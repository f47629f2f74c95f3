"""Hypothesis strategies for Neuroglancer precomputed volumes.

Everything generated here is *valid* by the rules of docs/format.md
(§1.5 for ``info`` documents, §1.4 for sharding specs), so tests can
mutate it to make it invalid on purpose.

>>> from hypothesis import given
>>> from xarray_precomputed.testing import strategies as pst
>>> @given(pst.grid_shapes(), pst.sharding_specs())
... def test_something(grid_shape, spec): ...

Selections come with :func:`outer_index`, the NumPy reference for xarray's outer
(orthogonal) indexing, so ``ds.image[sel].values`` can be compared with
``outer_index(expected, sel)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ..chunk_grid import compressed_morton_bits
from ..codecs import DATA_TYPES, ENCODING_CHANNELS, ENCODING_DTYPES, ENCODINGS
from ..metadata import (
    HASHES,
    MULTISCALE_TYPE,
    SHARD_ENCODINGS,
    ShardingSpec,
    VolumeInfo,
)

__all__ = [
    "chunk_dicts",
    "grid_cells",
    "grid_shapes",
    "outer_index",
    "outer_selections",
    "scale_jsons",
    "sharding_spec_jsons",
    "sharding_specs",
    "volume_info_jsons",
    "volume_infos",
]

_U64_MAX = 2**64 - 1


# -- chunk grids -----------------------------------------------------------------


@st.composite
def grid_shapes(
    draw: st.DrawFn, max_side: int = 16, max_cells: int | None = None, max_bits: int = 64
) -> tuple[int, int, int]:
    """Chunk-grid shapes ``(gx, gy, gz)``, each side in ``[1, max_side]``.

    ``max_cells`` bounds the number of cells (for brute-force checks); ``max_bits``
    bounds the compressed Morton code length (64 is the format's limit). Sides that
    are powers of two and their neighbours are favoured, since bit widths change there.
    """

    def side() -> st.SearchStrategy[int]:
        exp = max(max_side.bit_length() - 1, 0)
        near_pow2 = st.integers(0, exp).flatmap(
            lambda e: st.sampled_from([2**e - 1, 2**e, 2**e + 1])
        )
        return st.one_of(st.integers(1, min(max_side, 9)), near_pow2, st.integers(1, max_side)).map(
            lambda n: min(max(n, 1), max_side)
        )

    shape = (draw(side()), draw(side()), draw(side()))
    if max_cells is not None:
        # Shrink the largest side until the grid is small enough.
        s = list(shape)
        while s[0] * s[1] * s[2] > max_cells:
            d = int(np.argmax(s))
            s[d] = max(1, s[d] // 2)
        shape = (s[0], s[1], s[2])
    if sum(compressed_morton_bits(shape)) > max_bits:
        s = list(shape)
        while sum(compressed_morton_bits(s)) > max_bits:
            d = int(np.argmax(s))
            s[d] = max(1, s[d] // 2)
        shape = (s[0], s[1], s[2])
    return shape


def grid_cells(grid_shape: Sequence[int], max_cells: int = 50) -> st.SearchStrategy[np.ndarray]:
    """Arrays of shape ``(n, 3)`` (``n >= 1``) of cells inside ``grid_shape``."""
    cell = st.tuples(*(st.integers(0, int(g) - 1) for g in grid_shape))
    return st.lists(cell, min_size=1, max_size=max_cells).map(
        lambda cells: np.array(cells, dtype=np.int64).reshape(-1, 3)
    )


# -- sharding --------------------------------------------------------------------


@st.composite
def sharding_specs(
    draw: st.DrawFn,
    hashes: Sequence[str] = HASHES,
    encodings: Sequence[str] = SHARD_ENCODINGS,
    max_preshift: int = 12,
    max_minishard: int = 8,
    max_shard: int = 12,
) -> ShardingSpec:
    """Valid :class:`ShardingSpec` objects (kept small: ``minishard_bits`` sets the
    shard-index size ``16 << minishard_bits``)."""
    minishard = draw(st.integers(0, min(max_minishard, 32)))
    return ShardingSpec(
        preshift_bits=draw(st.integers(0, min(max_preshift, 64))),
        hash=draw(st.sampled_from(list(hashes))),
        minishard_bits=minishard,
        shard_bits=draw(st.integers(0, min(max_shard, 64 - minishard))),
        minishard_index_encoding=draw(st.sampled_from(list(encodings))),
        data_encoding=draw(st.sampled_from(list(encodings))),
    )


def sharding_spec_jsons(**kwargs: Any) -> st.SearchStrategy[dict[str, Any]]:
    """The JSON form (``info["scales"][i]["sharding"]``) of :func:`sharding_specs`."""
    return sharding_specs(**kwargs).map(lambda s: s.to_json())


def chunk_dicts(
    min_chunks: int = 1,
    max_chunks: int = 20,
    max_bytes: int = 64,
    ids: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[dict[int, bytes]]:
    """``{chunk_id: encoded chunk bytes}`` as given to ``sharding.encode_shard``.

    Chunk ids default to the full uint64 range with small ids favoured; chunk bytes
    may be empty.
    """
    if ids is None:
        ids = st.one_of(st.integers(0, 255), st.integers(0, _U64_MAX))
    return st.dictionaries(
        ids, st.binary(min_size=0, max_size=max_bytes), min_size=min_chunks, max_size=max_chunks
    )


# -- info documents --------------------------------------------------------------


def _encodings_for(data_type: str, num_channels: int, encodings: Sequence[str]) -> list[str]:
    out = []
    for enc in encodings:
        channels = ENCODING_CHANNELS[enc]
        if data_type in ENCODING_DTYPES[enc] and (channels is None or num_channels in channels):
            out.append(enc)
    return out


@st.composite
def scale_jsons(
    draw: st.DrawFn,
    data_type: str = "uint8",
    num_channels: int = 1,
    encodings: Sequence[str] = ENCODINGS,
    key: str | None = None,
    resolution: Sequence[float] | None = None,
    max_side: int = 64,
    sharded: bool | None = None,
) -> dict[str, Any]:
    """One valid entry of ``info["scales"]`` for the given data type and channels.

    ``sharded`` forces (True) or forbids (False) a sharding spec; ``None`` lets
    Hypothesis choose.
    """
    allowed = _encodings_for(data_type, num_channels, encodings)
    if not allowed:
        raise ValueError(f"no encoding in {encodings} holds {num_channels} x {data_type}")
    encoding = draw(st.sampled_from(allowed))
    side = st.integers(1, max_side)
    size = [draw(side) for _ in range(3)]
    offset = [draw(st.integers(-1000, 1000)) for _ in range(3)]
    if resolution is None:
        resolution = [
            draw(st.one_of(st.integers(1, 64), st.floats(0.25, 64.0, allow_subnormal=False)))
            for _ in range(3)
        ]
    if sharded is None:
        sharded = draw(st.booleans())
    n_chunk_sizes = 1 if sharded else draw(st.integers(1, 2))
    chunk_sizes = [[draw(st.integers(1, max(1, s))) for s in size] for _ in range(n_chunk_sizes)]
    if key is None:
        key = "_".join(f"{r:g}" for r in resolution)
    scale: dict[str, Any] = {
        "key": key,
        "size": size,
        "voxel_offset": offset,
        "resolution": list(resolution),
        "chunk_sizes": chunk_sizes,
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [draw(st.integers(1, 8)) for _ in range(3)]
    if encoding == "jpeg" and draw(st.booleans()):
        scale["jpeg_quality"] = draw(st.integers(0, 100))
    if encoding == "png" and draw(st.booleans()):
        scale["png_level"] = draw(st.integers(0, 9))
    if sharded:
        scale["sharding"] = draw(sharding_spec_jsons())
    return scale


@st.composite
def volume_info_jsons(
    draw: st.DrawFn,
    data_types: Sequence[str] = DATA_TYPES,
    encodings: Sequence[str] = ENCODINGS,
    max_scales: int = 3,
    max_channels: int = 4,
    max_side: int = 64,
    sharded: bool | None = None,
) -> dict[str, Any]:
    """Valid ``info`` documents (JSON objects) of 1..``max_scales`` scales.

    Resolutions are non-decreasing along ``scales`` and keys unique; ``@type`` and
    extra members (``mesh``, ``skeletons``, ``segment_properties``) are sometimes present.
    """
    data_type = draw(st.sampled_from(list(data_types)))
    channel_options = [
        n for n in range(1, max_channels + 1) if _encodings_for(data_type, n, encodings)
    ]
    if not channel_options:
        raise ValueError(f"no encoding in {encodings} holds {data_type}")
    num_channels = draw(st.sampled_from(channel_options))
    base = [draw(st.integers(1, 16)) for _ in range(3)]
    n_scales = draw(st.integers(1, max_scales))
    scales = []
    for i in range(n_scales):
        resolution = [b * 2**i for b in base]
        scales.append(
            draw(
                scale_jsons(
                    data_type=data_type,
                    num_channels=num_channels,
                    encodings=encodings,
                    key="_".join(str(r) for r in resolution),
                    resolution=resolution,
                    max_side=max(1, max_side >> i),
                    sharded=sharded,
                )
            )
        )
    volume_type = "segmentation" if data_type in ("uint32", "uint64") else "image"
    info: dict[str, Any] = {
        "type": draw(st.sampled_from([volume_type, "image"])),
        "data_type": data_type,
        "num_channels": num_channels,
        "scales": scales,
    }
    if draw(st.booleans()):
        info["@type"] = MULTISCALE_TYPE
    if draw(st.booleans()):
        info["mesh"] = "mesh"
    if draw(st.booleans()):
        info["skeletons"] = "skeletons"
    if draw(st.booleans()):
        info["segment_properties"] = "segment_properties"
    return info


def volume_infos(**kwargs: Any) -> st.SearchStrategy[VolumeInfo]:
    """Parsed :class:`VolumeInfo` objects of :func:`volume_info_jsons`."""
    return volume_info_jsons(**kwargs).map(VolumeInfo.from_json)


# -- selections ------------------------------------------------------------------


def _axis_selection(n: int, allow_int: bool, allow_list: bool) -> st.SearchStrategy[Any]:
    bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
    step = st.one_of(st.none(), st.integers(1, max(1, n)), st.integers(-max(1, n), -1))
    options: list[st.SearchStrategy[Any]] = [
        st.just(slice(None)),
        st.builds(slice, bound, bound, step),
    ]
    if allow_int:
        options.append(st.integers(-n, n - 1))
    if allow_list:
        # Unsorted, duplicated and negative indices; non-empty (xarray rejects nothing,
        # but empty lists add no coverage).
        options.append(st.lists(st.integers(-n, n - 1), min_size=1, max_size=min(2 * n, 8)))
    return st.one_of(options)


def outer_selections(
    shape: Sequence[int],
    allow_int: bool = True,
    allow_list: bool = True,
) -> st.SearchStrategy[tuple[Any, ...]]:
    """One indexer per axis of ``shape``: slices (any sign of step, bounds out of
    range), integers (negative allowed) and lists of integers (unsorted, duplicated,
    negative). Use as ``dataarray[sel]`` (xarray's outer indexing) and compare with
    :func:`outer_index`."""
    return st.tuples(*(_axis_selection(int(n), allow_int, allow_list) for n in shape))


def outer_index(array: np.ndarray, selection: Sequence[Any]) -> np.ndarray:
    """NumPy reference for outer (orthogonal) indexing: each axis indexed on its own.

    >>> a = np.arange(12).reshape(3, 4)
    >>> outer_index(a, ([2, 0], slice(None, None, -2))).tolist()
    [[11, 9], [3, 1]]
    """
    out = array
    axis = 0
    for sel in selection:
        index: list[Any] = [slice(None)] * out.ndim
        if isinstance(sel, (int, np.integer)):
            index[axis] = int(sel)
            out = out[tuple(index)]
            continue  # the axis is dropped
        index[axis] = np.asarray(sel, dtype=np.int64) if isinstance(sel, list) else sel
        out = out[tuple(index)]
        axis += 1
    return out
