"""The xarray backend: ``xr.open_dataset(url, engine="precomputed")``.

The entrypoint is thin; :func:`open_info` reads metadata, :func:`scale_dataset`
builds one scale's Dataset around a lazily indexed :class:`PrecomputedArray`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from .chunk_grid import preferred_chunks
from .conventions import (
    DIMS,
    SPATIAL_DIMS,
    coordinate_attrs,
    scale_attrs,
    variable_name,
    volume_attrs,
    voxel_centres,
)
from .errors import InfoError, InfoNotFoundError
from .metadata import VolumeInfo
from .reader import ScaleReader
from .storage import Store
from .urls import normalize_url


def open_info(
    url: str | os.PathLike, storage_options: dict[str, Any] | None = None
) -> tuple[Store, VolumeInfo]:
    """Read and validate a volume's ``info``.

    >>> # store, info = open_info("gs://neuroglancer-public-data/flyem_fib-25/image",
    >>> #                         {"token": "anon"})
    """
    store = Store(url, storage_options)
    raw = store.get("info")
    if raw is None:
        raise InfoNotFoundError(
            f"no 'info' file at {store.url_of('info')}: not a precomputed volume, or a wrong "
            "URL (check the path, and storage_options such as {'anon': True} for public data)"
        )
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InfoError(f"info at {store.url}: not valid JSON ({e})") from e
    return store, VolumeInfo.from_json(obj, store.url)


class PrecomputedArray(BackendArray):
    """A lazily read scale; xarray hands it outer indexers (slices, ints, 1-D arrays)."""

    def __init__(self, reader: ScaleReader):
        self.reader = reader
        self.shape = reader.shape
        self.dtype = reader.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self.reader.read
        )


def scale_dataset(
    store: Store, info: VolumeInfo, index: int, fill_missing: bool = True
) -> xr.Dataset:
    """The Dataset of one scale: one lazy variable and nm coordinates at voxel centres."""
    s = info.scales[index]
    reader = ScaleReader(store, info, index, fill_missing=fill_missing)
    data = indexing.LazilyIndexedArray(PrecomputedArray(reader))
    pref = preferred_chunks(s, info.dtype.itemsize * info.num_channels)
    variable = xr.Variable(
        DIMS,
        data,
        encoding={
            "preferred_chunks": dict(zip(DIMS, (*pref, info.num_channels))),
            "chunks": (*s.chunk_size, info.num_channels),  # the storage chunk
        },
    )
    coords: dict[str, Any] = {
        name: xr.Variable(
            name,
            voxel_centres(s.voxel_offset[d], s.size[d], s.resolution[d]),
            coordinate_attrs(name),
        )
        for d, name in enumerate(SPATIAL_DIMS)
    }
    coords["channel"] = xr.Variable("channel", np.arange(info.num_channels))
    return xr.Dataset(
        {variable_name(info.type): variable},
        coords=coords,
        attrs=scale_attrs(store.url, info, index),
    )


def _url(filename_or_obj: Any) -> str:
    if hasattr(filename_or_obj, "read"):
        raise TypeError("engine='precomputed' needs a URL or path, not a file object")
    return os.fspath(filename_or_obj)


class PrecomputedBackendEntrypoint(BackendEntrypoint):
    """Open Neuroglancer precomputed volumes (local, gs://, s3://, http(s)://).

    >>> # import xarray as xr
    >>> # ds = xr.open_dataset("gs://bucket/vol", engine="precomputed", scale=0, chunks={},
    >>> #                      storage_options={"token": "anon"})
    """

    description = "Neuroglancer precomputed volumes (images and segmentations)"
    url = "https://github.com/google/neuroglancer/tree/master/src/datasource/precomputed"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "scale", "storage_options",
                               "fill_missing")  # fmt: skip

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        scale: int | str | Sequence[float] = 0,
        storage_options: dict[str, Any] | None = None,
        fill_missing: bool = True,
    ) -> xr.Dataset:
        store, info = open_info(_url(filename_or_obj), storage_options)
        ds = scale_dataset(store, info, info.scale_index(scale, store.url), fill_missing)
        return ds.drop_vars(_names(drop_variables), errors="ignore")

    def open_groups_as_dict(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        fill_missing: bool = True,
    ) -> dict[str, xr.Dataset]:
        store, info = open_info(_url(filename_or_obj), storage_options)
        groups = {"/": xr.Dataset(attrs=volume_attrs(store.url, info))}
        for i, s in enumerate(info.scales):
            ds = scale_dataset(store, info, i, fill_missing)
            # Group names cannot hold "/"; the real key stays in the scale_key attr.
            name = "/" + s.key.strip("/").replace("/", "_")
            if name in groups:
                name = f"{name}_scale{i}"
            groups[name] = ds.drop_vars(_names(drop_variables), errors="ignore")
        return groups

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> xr.DataTree:
        return xr.DataTree.from_dict(self.open_groups_as_dict(filename_or_obj, **kwargs))

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        try:
            url = os.fspath(filename_or_obj)
        except TypeError:
            return False
        return isinstance(url, str) and url.startswith("precomputed://")


def _names(drop: str | Iterable[str] | None) -> list[str]:
    if drop is None:
        return []
    return [drop] if isinstance(drop, str) else list(drop)


__all__ = ["PrecomputedBackendEntrypoint", "normalize_url", "open_info", "scale_dataset"]
