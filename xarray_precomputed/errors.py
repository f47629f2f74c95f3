"""Exceptions raised by xarray-precomputed.

Every exception derives from :class:`PrecomputedError` and from the builtin that
best describes it, so callers may catch either, e.g. ``except FileNotFoundError``
catches a missing ``info`` file as well as a missing chunk.
"""

from __future__ import annotations


class PrecomputedError(Exception):
    """Base class of every error raised by this package."""


class InfoError(PrecomputedError, ValueError):
    """The ``info`` JSON is malformed or violates the format."""


class InfoNotFoundError(PrecomputedError, FileNotFoundError):
    """No ``info`` file exists at the given location."""


class ScaleNotFoundError(PrecomputedError, ValueError):
    """The requested scale is not in ``info["scales"]``."""


class UnsupportedEncodingError(PrecomputedError, ValueError):
    """The chunk encoding cannot hold this data: an unknown encoding, or one whose codec
    does not take the data type, channel count or chunk shape."""


class CorruptDataError(PrecomputedError, ValueError):
    """A chunk, shard index or minishard index is truncated or corrupt."""


class ChunkNotFoundError(PrecomputedError, FileNotFoundError):
    """A chunk is missing and ``fill_missing=False`` was requested."""


class StorageError(PrecomputedError, OSError):
    """The storage backend could not be reached or refused a request."""


class WriteError(PrecomputedError, ValueError):
    """The data or arguments given to the writer cannot be stored as asked."""


class VolumeExistsError(PrecomputedError, FileExistsError):
    """``mode="w-"`` was used and a volume already exists at the target."""


class LinkError(PrecomputedError, ValueError):
    """A volume cannot be shown in Neuroglancer as asked (e.g. a local path)."""
