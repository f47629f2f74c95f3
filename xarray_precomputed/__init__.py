"""xarray-precomputed: Neuroglancer precomputed volumes as xarray Datasets.

>>> import xarray as xr
>>> # ds = xr.open_dataset("gs://bucket/volume", engine="precomputed", chunks={})
>>> # xp.to_precomputed(result, "s3://bucket/out", encoding="compressed_segmentation")
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import accessor as _accessor  # registers .precomputed
from .backend import PrecomputedBackendEntrypoint, open_info
from .errors import (
    ChunkNotFoundError,
    CorruptDataError,
    InfoError,
    InfoNotFoundError,
    LinkError,
    PrecomputedError,
    ScaleNotFoundError,
    StorageError,
    UnsupportedEncodingError,
    VolumeExistsError,
    WriteError,
)
from .metadata import Scale, ShardingSpec, VolumeInfo
from .retry import RetryPolicy
from .shard_index import clear_index_caches

if TYPE_CHECKING:
    from .neuroglancer import neuroglancer_url
    from .pyramid import downsample
    from .scale_plan import auto_sharding
    from .writer import to_precomputed

# Imported on first use: the writer and pyramids pull in dask.array (~0.3-0.5 s), which a
# process that only reads (xarray loads this package to open a volume) need not pay.
_LAZY = {
    "auto_sharding": "scale_plan",
    "downsample": "pyramid",
    "neuroglancer_url": "neuroglancer",
    "to_precomputed": "writer",
}

__version__ = "0.1.0"

__all__ = [
    "ChunkNotFoundError",
    "CorruptDataError",
    "InfoError",
    "InfoNotFoundError",
    "LinkError",
    "PrecomputedBackendEntrypoint",
    "PrecomputedError",
    "RetryPolicy",
    "Scale",
    "ScaleNotFoundError",
    "ShardingSpec",
    "StorageError",
    "UnsupportedEncodingError",
    "VolumeExistsError",
    "VolumeInfo",
    "WriteError",
    "auto_sharding",
    "clear_index_caches",
    "downsample",
    "neuroglancer_url",
    "open_info",
    "to_precomputed",
]

del _accessor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
