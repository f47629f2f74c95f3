"""Planning a write: the mode, the existing volume, and where the data goes.

Everything is checked in the calling process, before the ``info`` or any chunk is
written: the mode against what exists, the data against the existing volume, and
for ``mode="r+"`` the region within the scale.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from .chunk_grid import scattered_shards
from .conventions import SPATIAL_DIMS
from .errors import InfoError, VolumeExistsError, WriteError
from .inputs import check_dtype, geometry
from .metadata import VolumeInfo
from .scale_plan import check_write_key, make_scale, new_info, validate_scale
from .storage import Store

Mode = Literal["w-", "w", "a", "r+"]


@dataclass(frozen=True)
class WritePlan:
    """One array to write into one scale of the volume being written."""

    array: xr.DataArray  # (x, y, z, channel)
    scale_index: int
    region_start: tuple[int, int, int]  # array coords of the scale
    merge: bool  # existing data may need to be kept


def read_existing_info(store: Store) -> VolumeInfo | None:
    """The ``info`` already at ``store``, or ``None``; an invalid one is a WriteError."""
    raw = store.get("info")
    if raw is None:
        return None
    try:
        return VolumeInfo.from_json(json.loads(raw), store.url)
    except (ValueError, InfoError) as e:
        raise WriteError(f"the existing info at {store.url_of('info')} is invalid: {e}") from e


def plan_write(
    store: Store,
    array: xr.DataArray,
    mode: Mode,
    options: Mapping[str, Any],
    key: str | None,
    region: Any,
) -> tuple[WritePlan, VolumeInfo]:
    """Plan writing one (x, y, z, channel) array in ``mode``; returns it and the new info."""
    check_dtype(array)
    existing = read_existing_info(store) if mode != "w" else None
    if mode == "w-" and (existing is not None or store.exists("info")):
        raise VolumeExistsError(
            f"a volume already exists at {store.url}; use mode='w' to replace it, 'a' to add a "
            "scale or 'r+' to write into a scale"
        )
    if mode in ("a", "r+") and existing is None:
        raise WriteError(f"mode={mode!r} needs an existing volume, but {store.url} has no info")
    if mode == "r+":
        return _plan_region(store, array, existing, options, key, region)
    if region is not None:
        raise WriteError("region= is only used with mode='r+'")
    scale = make_scale(array, options, key)
    if mode == "a":
        _check_compatible(existing, array, store)
        if any(s.key == scale.key for s in existing.scales):
            raise WriteError(
                f"scale {scale.key!r} already exists in {store.url}; use mode='r+' to write into "
                "it or pass scale_key= for a new key"
            )
        info = existing.with_scales([*existing.scales, scale])
    else:
        info = new_info(array, options, [scale])
    index = len(info.scales) - 1
    validate_scale(info, scale, f"scale {scale.key!r} of {store.url}")
    return WritePlan(array, index, (0, 0, 0), merge=False), info


def _check_compatible(existing: VolumeInfo, array: xr.DataArray, store: Store) -> None:
    if existing.data_type != np.dtype(array.dtype).name:
        raise WriteError(
            f"{store.url} holds {existing.data_type}, the data is {np.dtype(array.dtype).name}"
        )
    if existing.num_channels != array.shape[3]:
        raise WriteError(
            f"{store.url} has {existing.num_channels} channel(s), the data has {array.shape[3]}"
        )


def _plan_region(
    store: Store,
    array: xr.DataArray,
    existing: VolumeInfo,
    options: Mapping[str, Any],
    key: str | None,
    region: Any,
) -> tuple[WritePlan, VolumeInfo]:
    _check_compatible(existing, array, store)
    source = "the scale_key argument"
    if key is None:
        key, source = array.attrs.get("scale_key"), "the 'scale_key' attr"
    if key is not None:
        check_write_key(key, source)
        index = existing.scale_index(key, store.url)
    else:
        resolution, _ = geometry(array, options["resolution"], options["voxel_offset"])
        index = existing.scale_index(resolution, store.url)
    scale = existing.scales[index]
    if scattered_shards(scale):
        raise WriteError(
            f"scale {scale.key!r} of {store.url} uses sharding whose shards are not boxes "
            "(murmurhash or too few bits): writing part of it would need every shard rewritten"
        )
    if region is None or region == "auto":
        _, offset = geometry(array, scale.resolution, options["voxel_offset"])
        start = tuple(o - so for o, so in zip(offset, scale.voxel_offset))
    elif isinstance(region, Mapping):
        start_l = []
        for d, dim in enumerate(SPATIAL_DIMS):
            sl = region.get(dim, slice(None))
            if not isinstance(sl, slice) or sl.step not in (None, 1):
                raise WriteError(f"region[{dim!r}] must be a slice with step 1, got {sl!r}")
            size = scale.size[d]
            ends = [v + size if v is not None and v < 0 else v for v in (sl.start, sl.stop)]
            if any(v is not None and not 0 <= v <= size for v in ends):
                raise WriteError(
                    f"region[{dim!r}] = {sl} lies outside scale {scale.key!r} of {store.url}, "
                    f"which has {size} voxels along {dim!r} (region indices count from its "
                    "voxel_offset)"
                )
            lo, hi, _ = sl.indices(size)
            if hi - lo != array.shape[d]:
                raise WriteError(
                    f"region[{dim!r}] = {sl} spans {max(hi - lo, 0)} voxels, the data has "
                    f"{array.shape[d]}"
                )
            start_l.append(lo)
        start = tuple(start_l)
    else:
        raise WriteError(f"region must be 'auto' or a mapping of dim to slice, not {region!r}")
    for d, dim in enumerate(SPATIAL_DIMS):
        if start[d] < 0 or start[d] + array.shape[d] > scale.size[d]:
            lo = scale.voxel_offset[d] + start[d]
            raise WriteError(
                f"the region along {dim!r} (voxels [{lo}, {lo + array.shape[d]})) lies outside "
                f"scale {scale.key!r} of {store.url}, which spans "
                f"[{scale.voxel_offset[d]}, {scale.voxel_offset[d] + scale.size[d]})"
            )
    return WritePlan(array, index, start, merge=True), existing  # type: ignore[arg-type]


def plan_tree_write(
    store: Store,
    arrays: Sequence[tuple[str, xr.DataArray]],
    mode: Mode,
    options: Mapping[str, Any],
    key: str | None,
) -> tuple[list[WritePlan], VolumeInfo]:
    """Plan writing a DataTree's children, named ``arrays``, as the scales of one volume."""
    for name, _ in arrays:
        check_write_key(name, f"the DataTree node {name!r}")
    first_plan, info = plan_write(store, arrays[0][1], mode, options, _child_key(arrays[0]), None)
    plans = [first_plan]
    for child in arrays[1:]:
        array = child[1]
        _check_compatible(info, array, store)
        scale = make_scale(array, options, _child_key(child), "a DataTree node name")
        if any(s.key == scale.key for s in info.scales):
            raise WriteError(f"two scales would have the key {scale.key!r}")
        info = info.with_scales([*info.scales, scale])
        validate_scale(info, scale, f"scale {scale.key!r} of {store.url}")
        plans.append(WritePlan(array, len(info.scales) - 1, (0, 0, 0), merge=False))
    return plans, info


def _child_key(child: tuple[str, xr.DataArray]) -> str | None:
    name, array = child
    return array.attrs.get("scale_key") if array.attrs.get("scale_key") == name else name
