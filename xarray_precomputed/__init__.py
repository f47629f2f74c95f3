"""xarray-precomputed: Neuroglancer precomputed volumes as xarray Datasets.

>>> import xarray as xr
>>> # ds = xr.open_dataset("gs://bucket/volume", engine="precomputed", chunks={})
"""

from .backend import PrecomputedBackendEntrypoint, open_info
from .errors import (
    ChunkNotFoundError,
    CorruptDataError,
    InfoError,
    InfoNotFoundError,
    PrecomputedError,
    ScaleNotFoundError,
    StorageError,
    UnsupportedEncodingError,
    VolumeExistsError,
    WriteError,
)
from .metadata import Scale, ShardingSpec, VolumeInfo

__version__ = "0.1.0"

__all__ = [
    "ChunkNotFoundError",
    "CorruptDataError",
    "InfoError",
    "InfoNotFoundError",
    "PrecomputedBackendEntrypoint",
    "PrecomputedError",
    "Scale",
    "ScaleNotFoundError",
    "ShardingSpec",
    "StorageError",
    "UnsupportedEncodingError",
    "VolumeExistsError",
    "VolumeInfo",
    "WriteError",
    "open_info",
]
