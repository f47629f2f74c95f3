"""How a precomputed volume maps onto xarray: names, coordinates and attrs.

The reader (backend) builds Datasets this way, and the writer and ``downsample``
read them back the same way, so every one of these facts lives here:

* dims ``(x, y, z, channel)``; the data variable is named after the info ``type``;
* coordinates are nm at voxel centres: ``(voxel_offset + i + 0.5) * resolution``;
* a scale's key defaults to its resolution joined by ``_``;
* the attrs of a scale (its ``info`` entries, flattened) and which of them say
  where the data is stored rather than what it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .metadata import VolumeInfo

DIMS = ("x", "y", "z", "channel")
SPATIAL_DIMS = DIMS[:3]
#: names of the data variable: the info ``type`` when it is one of the first two
VARIABLE_NAMES = ("image", "segmentation", "data")

#: attrs that tie a Dataset to the stored scale it was read from; a derived scale
#: (``downsample``) drops them, and the writer reads "url" as "this came from storage"
LOCATION_ATTRS = ("url", "scale_index", "sharding")
#: attrs the reader sets from the info; never copied into a written info as extras
RESERVED_ATTRS = frozenset(
    {
        *LOCATION_ATTRS,
        "scale_key", "type", "data_type", "num_channels", "resolution", "voxel_offset", "size",
        "chunk_size", "chunk_sizes", "encoding", "compressed_segmentation_block_size",
        "jpeg_quality", "png_level", "scales", "hidden",
    }
)  # fmt: skip
#: info members other tools use (meshes, skeletons, segment properties) that the
#: writer carries over from attrs, besides any ``neuroglancer*`` attr
INFO_EXTRA_ATTRS = ("mesh", "skeletons", "segment_properties")


def variable_name(volume_type: str) -> str:
    """The data variable's name: the info ``type`` when it is image or segmentation.

    >>> variable_name("Segmentation"), variable_name("mesh")
    ('segmentation', 'data')
    """
    t = volume_type.lower()
    return t if t in VARIABLE_NAMES[:2] else VARIABLE_NAMES[2]


def resolution_key(resolution: Sequence[float]) -> str:
    """The conventional scale key of a resolution: its nm values joined by ``_``.

    >>> resolution_key((8, 8, 40.0)), resolution_key((4.5, 4, 4))
    ('8_8_40', '4.5_4_4')
    """
    return "_".join(str(int(r)) if float(r).is_integer() else str(r) for r in resolution)


def voxel_centres(offset: int, size: int, resolution: float) -> np.ndarray:
    """Coordinates (nm) of ``size`` voxel centres along an axis starting at voxel ``offset``.

    >>> voxel_centres(-1, 3, 4).tolist()
    [-2.0, 2.0, 6.0]
    """
    return (offset + np.arange(size, dtype=np.float64) + 0.5) * resolution


def first_voxel(first_centre: float, resolution: float) -> float:
    """The voxel index whose centre is at ``first_centre`` nm (inverse of :func:`voxel_centres`).

    >>> first_voxel(-2.0, 4)
    -1.0
    """
    return first_centre / resolution - 0.5


def coordinate_attrs(dim: str) -> dict[str, str]:
    """Attrs of the coordinate of a spatial dim."""
    return {"units": "nm", "long_name": f"{dim} position of voxel centres"}


def scale_attrs(url: str, info: VolumeInfo, index: int) -> dict[str, Any]:
    """The attrs of scale ``index`` of a volume: its ``info`` members, flattened.

    The scale's members (``chunk_size`` is the first of ``chunk_sizes``, which is only
    kept when there are several), then the volume's extra members, never overwriting.
    """
    members = info.scales[index].to_json()
    chunk_sizes = members.pop("chunk_sizes")
    attrs: dict[str, Any] = {
        "url": url,
        "scale_key": members.pop("key"),
        "scale_index": index,
        "type": info.type,
        "data_type": info.data_type,
        "num_channels": info.num_channels,
        "chunk_size": chunk_sizes[0],
    }
    if len(chunk_sizes) > 1:
        attrs["chunk_sizes"] = chunk_sizes
    for k, v in [*members.items(), *info.extra.items()]:
        attrs.setdefault(k, v)
    return attrs


def volume_attrs(url: str, info: VolumeInfo) -> dict[str, Any]:
    """The attrs of a volume's root group (DataTree): volume members and all scales."""
    attrs: dict[str, Any] = {"url": url}
    for k, v in info.to_json().items():
        if k != "@type":
            attrs.setdefault(k, v)
    return attrs


def derived_attrs(
    attrs: Mapping[str, Any],
    resolution: Sequence[float],
    voxel_offset: Sequence[int],
    size: Sequence[int],
) -> dict[str, Any]:
    """The attrs of a scale derived from one with ``attrs`` (e.g. downsampled): the
    location attrs dropped, the geometry and the key replaced.

    >>> derived_attrs({"url": "/v", "type": "image"}, (8, 8, 40), (0, 0, 0), (4, 4, 2))["scale_key"]
    '8_8_40'
    """
    out = {k: v for k, v in attrs.items() if k not in LOCATION_ATTRS}
    out.update(
        resolution=[int(r) if float(r).is_integer() else r for r in resolution],
        voxel_offset=list(voxel_offset),
        size=list(size),
        scale_key=resolution_key(resolution),
    )
    return out
