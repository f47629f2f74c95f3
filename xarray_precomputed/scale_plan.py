"""What a new scale looks like: its chunking, encoding options and sharding.

:func:`make_scale` turns the writer's options (or, where not given, the attrs the
reader sets) into a :class:`~xarray_precomputed.metadata.Scale`; :func:`auto_sharding`
chooses box-shaped shards of a target size; :func:`new_info` makes the ``info`` of
a new volume and :func:`validate_scale` checks a scale before anything is written.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import xarray as xr

from .chunk_grid import morton_bit_dims
from .codecs import ENCODINGS, codec_class
from .conventions import INFO_EXTRA_ATTRS, RESERVED_ATTRS, VARIABLE_NAMES, resolution_key
from .errors import InfoError, UnsupportedEncodingError, WriteError
from .inputs import check_dtype, geometry
from .metadata import Scale, ShardingSpec, VolumeInfo
from .scale_keys import key_problem

DEFAULT_SHARD_BYTES = 256 * 2**20


def make_scale(
    array: xr.DataArray,
    options: Mapping[str, Any],
    key: str | None,
    key_source: str = "the scale_key argument",
) -> Scale:
    """The new scale for ``array`` (x, y, z, channel) from the writer's ``options``.

    Options left ``None`` come from the attrs the reader sets, then from defaults.
    ``key_source`` names where ``key`` came from, for the error of an unsafe key.
    """
    attrs = array.attrs
    resolution, offset = geometry(array, options["resolution"], options["voxel_offset"])
    size = tuple(int(n) for n in array.shape[:3])
    same_shape = list(attrs.get("size", [])) == list(size)

    def pick(name: str, attr: str | None = None, default: Any = None) -> Any:
        if options.get(name) is not None:
            return options[name]
        return attrs.get(attr or name, default)

    encoding = str(pick("encoding", default="raw")).lower()
    if encoding not in ENCODINGS:
        hint = ""
        if encoding == "gzip":  # a sharding data_encoding in this format, not a chunk one
            hint = (
                ". gzip compresses shards, not chunks: encoding='raw' with sharding='auto' "
                "(the default) gzips raw chunk data, or give a sharding spec with "
                "data_encoding 'gzip'"
            )
        raise WriteError(f"unknown encoding {encoding!r}; choose from {list(ENCODINGS)}{hint}")
    chunk = pick("chunk_size", default=(64, 64, 64))
    if (
        not isinstance(chunk, Sequence)
        or len(chunk) != 3
        or any(int(c) != c or c < 1 for c in chunk)
    ):
        raise WriteError(f"chunk_size must be 3 positive integers, got {chunk!r}")
    chunk = tuple(int(c) for c in chunk)
    check_shard_bytes(options["shard_bytes"])  # even when not sharding "auto": a typo shows
    block = None
    if encoding == "compressed_segmentation":
        default = codec_class(encoding).defaults["block_size"]
        block = pick("compressed_segmentation_block_size", default=default)
        if len(block) != 3 or any(int(b) != b or b < 1 for b in block):
            raise WriteError(f"compressed_segmentation_block_size must be 3 positive ints: {block}")
        block = tuple(int(b) for b in block)
    jpeg_quality = pick("jpeg_quality") if encoding == "jpeg" else None
    png_level = pick("png_level") if encoding == "png" else None
    if key is None and list(attrs.get("resolution", [])) == list(resolution):
        key = attrs.get("scale_key")  # the key of the scale it was read from
        key_source = "the 'scale_key' attr"
    if key is not None:
        check_write_key(key, key_source)
    scale = Scale(
        key=key or resolution_key(resolution),
        size=size,  # type: ignore[arg-type]
        resolution=resolution,  # type: ignore[arg-type]
        chunk_sizes=(chunk,),  # type: ignore[arg-type]
        encoding=encoding,
        voxel_offset=offset,  # type: ignore[arg-type]
        compressed_segmentation_block_size=block,  # type: ignore[arg-type]
        jpeg_quality=None if jpeg_quality is None else int(jpeg_quality),
        png_level=None if png_level is None else int(png_level),
    )
    sharding = options["sharding"]
    if sharding == "auto" and options.get("chunk_size") is None and same_shape:
        # A volume read back from storage keeps its own layout unless told otherwise.
        # The reader sets "url" and no "sharding" attr for an unsharded scale.
        if "encoding" in attrs:
            sharding = attrs.get("sharding", None if "url" in attrs else "auto")
    spec = _choose_sharding(scale, sharding, array.dtype.itemsize * array.shape[3], options)
    return replace(scale, sharding=spec)


def check_write_key(key: Any, source: str) -> None:
    """Refuse a scale key that could leave the volume root (see :mod:`.scale_keys`)."""
    problem = key_problem(key)
    if problem is not None:
        raise WriteError(
            f"scale key {key!r} from {source} {problem}: a key must be a relative path "
            "of plain names inside the volume"
        )


def _choose_sharding(
    scale: Scale, sharding: Any, voxel_bytes: int, options: Mapping[str, Any]
) -> ShardingSpec | None:
    if sharding is None or sharding is False:
        return None
    if isinstance(sharding, ShardingSpec):
        spec = sharding
    elif isinstance(sharding, Mapping):
        try:
            spec = ShardingSpec.from_json(dict(sharding), "sharding")
        except InfoError as e:
            raise WriteError(str(e)) from e
    elif sharding == "auto":
        spec = auto_sharding(scale, voxel_bytes, options["shard_bytes"])
        if spec is None:
            return None
    else:
        raise WriteError(f"sharding must be 'auto', None or a sharding spec dict, not {sharding!r}")
    return spec


def check_shard_bytes(shard_bytes: Any) -> None:
    """Refuse a ``shard_bytes`` that is not a positive number of bytes."""
    if (
        isinstance(shard_bytes, bool)
        or not isinstance(shard_bytes, numbers.Real)
        or not (shard_bytes >= 1)
    ):
        raise WriteError(f"shard_bytes must be a positive number of bytes, got {shard_bytes!r}")


def auto_sharding(
    scale: Scale, voxel_bytes: int, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> ShardingSpec | None:
    """Identity-hash sharding whose shards are boxes of about ``shard_bytes``.

    Returns ``None`` (unsharded) when a shard would hold a single chunk.

    >>> s = Scale(key="k", size=(1024, 1024, 1024), resolution=(8, 8, 8),
    ...           chunk_sizes=((64, 64, 64),), encoding="raw")
    >>> from xarray_precomputed.chunk_grid import shard_box_chunks
    >>> spec = auto_sharding(s, 1, 32 * 2**20)
    >>> spec.preshift_bits + spec.minishard_bits, shard_box_chunks(s.grid_shape, spec)
    (7, (8, 4, 4))
    """
    check_shard_bytes(shard_bytes)
    chunk_bytes = math.prod(scale.chunk_size) * voxel_bytes
    total = len(morton_bit_dims(scale.grid_shape))
    bits = max(0, min(total, round(math.log2(max(shard_bytes / chunk_bytes, 1)))))
    if bits == 0:
        return None
    preshift = min(bits, 9)
    minishard = min(bits - preshift, 32)
    preshift = bits - minishard
    return ShardingSpec(
        preshift_bits=preshift,
        hash="identity",
        minishard_bits=minishard,
        shard_bits=total - bits,
        minishard_index_encoding="gzip",
        data_encoding="raw" if scale.encoding in ("jpeg", "png", "jxl") else "gzip",
    )


def new_info(
    array: xr.DataArray, options: Mapping[str, Any], scales: Sequence[Scale]
) -> VolumeInfo:
    vtype = options["type"] or (
        array.name if array.name in VARIABLE_NAMES[:2] else array.attrs.get("type")
    )
    if vtype is None:
        vtype = "segmentation" if array.dtype.name in ("uint32", "uint64") else "image"
    extra = {k: v for k, v in array.attrs.items() if k in INFO_EXTRA_ATTRS}
    extra.update(
        {
            k: v
            for k, v in array.attrs.items()
            if k not in RESERVED_ATTRS
            and _is_json(v)
            and k not in extra
            and k.startswith("neuroglancer")
        }  # fmt: skip
    )
    return VolumeInfo(
        type=str(vtype),
        data_type=check_dtype(array),
        num_channels=int(array.shape[3]),
        scales=tuple(scales),
        extra=extra,
    )


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def validate_scale(info: VolumeInfo, scale: Scale, where: str) -> None:
    """Refuse a scale the format or its encoding cannot hold, before anything is written."""
    codec = codec_class(scale.encoding)
    try:
        codec.check_holds(info.data_type, info.num_channels)
        codec.check_chunk_size(scale.chunk_size)
    except UnsupportedEncodingError as e:
        raise WriteError(f"{where}: {e}") from e
    try:  # the format's own rules (chunk grid within 64 Morton bits, option ranges, ...)
        VolumeInfo.from_json(info.to_json(), where)
    except InfoError as e:
        raise WriteError(str(e)) from e
