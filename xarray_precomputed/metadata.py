"""The ``info`` JSON: parsing, validation and serialisation.

Metadata objects are frozen and validated once, when parsed; the rest of the
package trusts them. Unknown members are kept in ``extra`` so that an ``info``
rewritten by the writer loses nothing. The rules enforced here are those of
docs/format.md §1 (checklist in §1.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .chunk_grid import compressed_morton_bits
from .codecs import DATA_TYPES, ENCODINGS, OPTION_ENCODING, codec_class
from .errors import InfoError, ScaleNotFoundError, UnsupportedEncodingError
from .scale_keys import key_problem

MULTISCALE_TYPE = "neuroglancer_multiscale_volume"
SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
HASHES = ("identity", "murmurhash3_x86_128")
SHARD_ENCODINGS = ("raw", "gzip")
_INT64_MAX = 2**63 - 1


def _int3(value: Any, name: str, where: str, minimum: int | None = None) -> tuple[int, int, int]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise InfoError(f"{where}: {name!r} must be a list of 3 integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise InfoError(f"{where}: {name!r} must be a list of 3 integers, got {value!r}")
        iv = int(v)
        if minimum is not None and iv < minimum:
            raise InfoError(
                f"{where}: every {name!r} component must be >= {minimum}, got {value!r}"
            )
        out.append(iv)
    return (out[0], out[1], out[2])


def _num3(value: Any, name: str, where: str) -> tuple[float, float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise InfoError(f"{where}: {name!r} must be a list of 3 numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InfoError(f"{where}: {name!r} must be a list of 3 numbers, got {value!r}")
        if not math.isfinite(v) or v <= 0:
            raise InfoError(f"{where}: {name!r} must be finite and positive, got {value!r}")
        out.append(int(v) if float(v).is_integer() else float(v))
    return (out[0], out[1], out[2])


def _bounded_int(obj: Mapping, name: str, lo: int, hi: int, where: str) -> int:
    if name not in obj:
        raise InfoError(f"{where}: missing required member {name!r}")
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InfoError(f"{where}: {name!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _lower_choice(obj: Mapping, name: str, choices: Sequence[str], where: str, default=None) -> str:
    if name not in obj:
        if default is not None:
            return default
        raise InfoError(f"{where}: missing required member {name!r}")
    v = obj[name]
    if not isinstance(v, str) or v.lower() not in choices:
        raise InfoError(f"{where}: {name!r} must be one of {list(choices)}, got {v!r}")
    return v.lower()


@dataclass(frozen=True)
class ShardingSpec:
    """A ``neuroglancer_uint64_sharded_v1`` sharding specification."""

    preshift_bits: int
    hash: str
    minishard_bits: int
    shard_bits: int
    minishard_index_encoding: str = "raw"
    data_encoding: str = "raw"

    @classmethod
    def from_json(cls, obj: Any, where: str = "sharding") -> ShardingSpec:
        """Parse and validate a sharding spec.

        >>> ShardingSpec.from_json({"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
        ...     "preshift_bits": 3, "minishard_bits": 0, "shard_bits": 9}).shard_bits
        9
        """
        if not isinstance(obj, Mapping):
            raise InfoError(f"{where}: must be a JSON object, got {obj!r}")
        if obj.get("@type") != SHARDING_TYPE:
            raise InfoError(f"{where}: '@type' must be {SHARDING_TYPE!r}, got {obj.get('@type')!r}")
        minishard_bits = _bounded_int(obj, "minishard_bits", 0, 32, where)
        return cls(
            preshift_bits=_bounded_int(obj, "preshift_bits", 0, 64, where),
            hash=_lower_choice(obj, "hash", HASHES, where),
            minishard_bits=minishard_bits,
            shard_bits=_bounded_int(obj, "shard_bits", 0, 64 - minishard_bits, where),
            minishard_index_encoding=_lower_choice(
                obj, "minishard_index_encoding", SHARD_ENCODINGS, where, "raw"
            ),
            data_encoding=_lower_choice(obj, "data_encoding", SHARD_ENCODINGS, where, "raw"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "@type": SHARDING_TYPE,
            "preshift_bits": self.preshift_bits,
            "hash": self.hash,
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": self.minishard_index_encoding,
            "data_encoding": self.data_encoding,
        }


@dataclass(frozen=True)
class Scale:
    """One entry of ``info["scales"]``; axes are always (x, y, z)."""

    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    chunk_sizes: tuple[tuple[int, int, int], ...]
    encoding: str
    voxel_offset: tuple[int, int, int] = (0, 0, 0)
    compressed_segmentation_block_size: tuple[int, int, int] | None = None
    sharding: ShardingSpec | None = None
    jpeg_quality: int | None = None
    png_level: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def chunk_size(self) -> tuple[int, int, int]:
        """The chunk shape used for I/O: the first of ``chunk_sizes``."""
        return self.chunk_sizes[0]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Number of chunks along x, y, z."""
        return tuple(-(-s // c) for s, c in zip(self.size, self.chunk_size))  # type: ignore[return-value]

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Scale:
        if not isinstance(obj, Mapping):
            raise InfoError(f"{where}: must be a JSON object, got {type(obj).__name__}")
        key = obj.get("key")
        if not isinstance(key, str) or not key:
            raise InfoError(f"{where}: 'key' must be a non-empty string, got {key!r}")
        problem = key_problem(key, strict=False)
        if problem is not None:
            # a volume from elsewhere must not make us read (or later write) outside it
            raise InfoError(f"{where}: the scale key {key!r} {problem}; refusing to use it")
        where = f"{where} (key {key!r})"
        for name in ("size", "resolution", "chunk_sizes", "encoding"):
            if name not in obj:
                raise InfoError(f"{where}: missing required member {name!r}")
        size = _int3(obj["size"], "size", where, minimum=1)
        offset = _int3(obj.get("voxel_offset", (0, 0, 0)), "voxel_offset", where)
        for o, s in zip(offset, size):
            if not -_INT64_MAX <= o <= _INT64_MAX or not -_INT64_MAX <= o + s <= _INT64_MAX:
                raise InfoError(f"{where}: voxel_offset + size overflows int64")
        chunk_sizes = obj["chunk_sizes"]
        if (
            not isinstance(chunk_sizes, Sequence)
            or isinstance(chunk_sizes, str)
            or len(chunk_sizes) == 0
        ):
            raise InfoError(f"{where}: 'chunk_sizes' must be a non-empty list of [x, y, z] lists")
        chunks = tuple(_int3(c, "chunk_sizes", where, minimum=1) for c in chunk_sizes)
        encoding = _lower_choice(obj, "encoding", ENCODINGS, where)
        for member, owner in OPTION_ENCODING.items():
            if obj.get(member) is not None and encoding != owner:
                raise InfoError(
                    f"{where}: {member!r} is only allowed with encoding {owner!r}, not {encoding!r}"
                )
        block = obj.get("compressed_segmentation_block_size")
        if encoding == "compressed_segmentation":
            if block is None:
                raise InfoError(
                    f"{where}: compressed_segmentation needs 'compressed_segmentation_block_size'"
                )
            block = _int3(block, "compressed_segmentation_block_size", where, minimum=1)
        sharding = obj.get("sharding")
        if sharding is not None:
            sharding = ShardingSpec.from_json(sharding, f"{where} sharding")
            if len(chunks) != 1:
                raise InfoError(f"{where}: a sharded scale must have exactly one chunk size")
            bits = sum(compressed_morton_bits(-(-s // c) for s, c in zip(size, chunks[0])))
            if bits > 64:
                raise InfoError(
                    f"{where}: the chunk grid needs {bits} Morton bits, more than the 64 allowed"
                )
        jpeg_quality = obj.get("jpeg_quality")
        if jpeg_quality is not None:
            jpeg_quality = _bounded_int(obj, "jpeg_quality", 0, 100, where)
        png_level = obj.get("png_level")
        if png_level is not None:
            png_level = _bounded_int(obj, "png_level", 0, 9, where)
        known = {
            "key", "size", "voxel_offset", "resolution", "chunk_sizes", "encoding",
            "compressed_segmentation_block_size", "sharding", "jpeg_quality", "png_level",
        }  # fmt: skip
        return cls(
            key=key,
            size=size,
            resolution=_num3(obj["resolution"], "resolution", where),
            chunk_sizes=chunks,
            encoding=encoding,
            voxel_offset=offset,
            compressed_segmentation_block_size=block,
            sharding=sharding,
            jpeg_quality=jpeg_quality,
            png_level=png_level,
            extra={k: v for k, v in obj.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "size": list(self.size),
            "voxel_offset": list(self.voxel_offset),
            "resolution": list(self.resolution),
            "chunk_sizes": [list(c) for c in self.chunk_sizes],
            "encoding": self.encoding,
        }
        if self.compressed_segmentation_block_size is not None:
            out["compressed_segmentation_block_size"] = list(
                self.compressed_segmentation_block_size
            )
        if self.sharding is not None:
            out["sharding"] = self.sharding.to_json()
        if self.jpeg_quality is not None:
            out["jpeg_quality"] = self.jpeg_quality
        if self.png_level is not None:
            out["png_level"] = self.png_level
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class VolumeInfo:
    """The whole ``info`` file of a multiscale volume."""

    type: str
    data_type: str
    num_channels: int
    scales: tuple[Scale, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data_type).newbyteorder("<")

    @classmethod
    def from_json(cls, obj: Any, url: str = "<info>") -> VolumeInfo:
        """Parse and validate an ``info`` object (docs/format.md §1.5).

        >>> info = VolumeInfo.from_json({"type": "image", "data_type": "uint8", "num_channels": 1,
        ...     "scales": [{"key": "8_8_8", "size": [64, 64, 64], "resolution": [8, 8, 8],
        ...                 "chunk_sizes": [[32, 32, 32]], "encoding": "raw"}]})
        >>> info.scales[0].grid_shape
        (2, 2, 2)
        """
        where = f"info at {url}"
        if not isinstance(obj, Mapping):
            raise InfoError(f"{where}: must be a JSON object, got {type(obj).__name__}")
        if "@type" in obj and obj["@type"] != MULTISCALE_TYPE:
            raise InfoError(f"{where}: '@type' must be {MULTISCALE_TYPE!r}, got {obj['@type']!r}")
        for name in ("type", "data_type", "num_channels", "scales"):
            if name not in obj:
                raise InfoError(f"{where}: missing required member {name!r}")
        vtype = obj["type"]
        if not isinstance(vtype, str):
            raise InfoError(f"{where}: 'type' must be a string, got {vtype!r}")
        data_type = _lower_choice(obj, "data_type", DATA_TYPES, where)
        nc = obj["num_channels"]
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise InfoError(f"{where}: 'num_channels' must be an integer >= 1, got {nc!r}")
        raw_scales = obj["scales"]
        if not isinstance(raw_scales, Sequence) or isinstance(raw_scales, str) or not raw_scales:
            raise InfoError(f"{where}: 'scales' must be a non-empty list")
        scales = tuple(Scale.from_json(s, f"{where} scales[{i}]") for i, s in enumerate(raw_scales))
        for i, s in enumerate(scales):
            try:
                codec_class(s.encoding).check_holds(data_type, nc)
            except UnsupportedEncodingError as e:
                raise InfoError(f"{where} scales[{i}] (key {s.key!r}): {e}") from e
        keys = [s.key for s in scales]
        if len(set(keys)) != len(keys):
            raise InfoError(f"{where}: duplicate scale keys in {keys}")
        known = {"@type", "type", "data_type", "num_channels", "scales"}
        return cls(
            type=vtype,
            data_type=data_type,
            num_channels=nc,
            scales=scales,
            extra={k: v for k, v in obj.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@type": MULTISCALE_TYPE,
            "type": self.type,
            "data_type": self.data_type,
            "num_channels": self.num_channels,
            "scales": [s.to_json() for s in self.scales],
        }
        out.update(self.extra)
        return out

    def scale_index(self, scale: int | str | Sequence[float], url: str = "<info>") -> int:
        """Find a scale by index, key or resolution (nm, x/y/z).

        >>> info = VolumeInfo.from_json({"type": "image", "data_type": "uint8", "num_channels": 1,
        ...     "scales": [{"key": "8_8_8", "size": [64, 64, 64], "resolution": [8, 8, 8],
        ...                 "chunk_sizes": [[32, 32, 32]], "encoding": "raw"}]})
        >>> info.scale_index("8_8_8"), info.scale_index((8, 8, 8)), info.scale_index(0)
        (0, 0, 0)
        """
        available = ", ".join(
            f"{i}: {s.key!r} ({'x'.join(str(r) for r in s.resolution)} nm)"
            for i, s in enumerate(self.scales)
        )
        if isinstance(scale, (int, np.integer)) and not isinstance(scale, bool):
            n = len(self.scales)
            if -n <= int(scale) < n:
                return int(scale) % n
        elif isinstance(scale, str):
            for i, s in enumerate(self.scales):
                if s.key == scale.strip("/"):
                    return i
        elif isinstance(scale, Sequence) and len(scale) == 3:
            for i, s in enumerate(self.scales):
                if all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(s.resolution, scale)):
                    return i
        raise ScaleNotFoundError(
            f"no scale {scale!r} in {url}; available scales: {available}. "
            "Pass an index, a key or an (x, y, z) resolution in nm."
        )

    def with_scales(self, scales: Sequence[Scale]) -> VolumeInfo:
        return replace(self, scales=tuple(scales))
