"""xarray-precomputed: Neuroglancer precomputed volumes as xarray Datasets.

>>> import xarray as xr
>>> # ds = xr.open_dataset("gs://bucket/volume", engine="precomputed", chunks={})
>>> # xp.to_precomputed(result, "s3://bucket/out", encoding="compressed_segmentation")
"""

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
from .neuroglancer import neuroglancer_url
from .pyramid import downsample
from .retry import RetryPolicy
from .scale_plan import auto_sharding
from .shard_index import clear_index_caches
from .writer import to_precomputed

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
