"""Neuroglancer links: a viewer state showing volumes, encoded into a URL.

The state has one layer per volume (``image``, or ``segmentation`` when the
volume's ``type`` says so), a coordinate space whose voxel size is the
resolution of the first volume (nm), and a position at the centre of the first
volume, or of the selection when a Dataset or DataArray is given.

The host defaults to :data:`DEFAULT_HOST`, the public Neuroglancer demo
deployment; pass ``host=`` or set the ``XARRAY_PRECOMPUTED_NEUROGLANCER``
environment variable to use another deployment (e.g. one inside your network).
The volumes must be reachable from the browser: ``gs://``, ``s3://`` and
``http(s)://`` URLs are; a local directory is not, so serve it first with
``precomputed serve DIR`` and link the ``http://`` URL that prints.

>>> state = viewer_state("gs://bucket/em", resolution=(8, 8, 40), size=(1000, 1000, 100))
>>> state["dimensions"]["z"], state["position"], state["layers"][0]["source"]
([4e-08, 'm'], [500.0, 500.0, 50.0], 'precomputed://gs://bucket/em')
>>> url = neuroglancer_url("gs://bucket/em", resolution=(8, 8, 40), size=(1000, 1000, 100))
>>> decode_url(url) == state
True
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import xarray as xr

from .backend import open_info
from .conventions import DIMS
from .errors import LinkError
from .urls import normalize_url

DEFAULT_HOST = "https://neuroglancer-demo.appspot.com/"
"""The public Neuroglancer deployment links point to unless told otherwise."""

HOST_VARIABLE = "XARRAY_PRECOMPUTED_NEUROGLANCER"
_BROWSER_PROTOCOLS = ("gs://", "s3://", "http://", "https://")
# Characters left as they are in the fragment; the same set Neuroglancer's own
# Python package leaves unquoted, so its links and ours look alike.
_SAFE = "~@#$&()*!+=:;,.?/'"

Source = str | os.PathLike | xr.Dataset | xr.DataArray


def neuroglancer_url(
    *sources: Source,
    host: str | None = None,
    layout: str = "4panel",
    storage_options: dict[str, Any] | None = None,
    **geometry: Any,
) -> str:
    """A Neuroglancer URL showing ``sources`` (volume URLs, or what the reader opened).

    ``host`` defaults to the ``XARRAY_PRECOMPUTED_NEUROGLANCER`` environment
    variable, then to :data:`DEFAULT_HOST`. ``geometry`` (``resolution``,
    ``size``, ``voxel_offset``, ``position``) is passed to :func:`viewer_state`.

    >>> url = neuroglancer_url("s3://bucket/seg", resolution=(4, 4, 40), size=(8, 8, 8),
    ...                        host="https://ng.example.org/")
    >>> url.startswith("https://ng.example.org/#!%7B")
    True
    """
    state = viewer_state(*sources, layout=layout, storage_options=storage_options, **geometry)
    base = host or os.environ.get(HOST_VARIABLE) or DEFAULT_HOST
    if not base.endswith("/"):
        base += "/"
    text = json.dumps(state, separators=(",", ":"))
    return f"{base}#!{urllib.parse.quote(text, safe=_SAFE)}"


def decode_url(url: str) -> dict[str, Any]:
    """The viewer state of a Neuroglancer URL made by :func:`neuroglancer_url`."""
    _, sep, fragment = url.partition("#!")
    if not sep:
        raise LinkError(f"not a Neuroglancer state URL (no '#!' fragment): {url[:80]}")
    return json.loads(urllib.parse.unquote(fragment))


def viewer_state(
    *sources: Source,
    layout: str = "4panel",
    storage_options: dict[str, Any] | None = None,
    resolution: Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    voxel_offset: Sequence[int] | None = None,
    position: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The Neuroglancer viewer state (a JSON-ready dict) showing ``sources``.

    A URL source has its ``info`` read (with ``storage_options``) for its type and
    finest scale, unless ``resolution`` and ``size`` are given. ``position`` is in
    voxels of the first source (default: the centre of its selection).
    """
    if not sources:
        raise LinkError("neuroglancer_url needs at least one volume (a URL or an opened Dataset)")
    layers = []
    names: set[str] = set()
    first: dict[str, Any] | None = None
    for source in sources:
        layer = _describe(source, storage_options, resolution, size, voxel_offset)
        name = layer["name"]
        n = 2
        while name in names:  # two volumes with the same last path part
            name = f"{layer['name']}-{n}"
            n += 1
        names.add(name)
        layers.append({"type": layer["type"], "source": layer["source"], "name": name})
        first = first or layer
    assert first is not None
    res = first["resolution"]
    lo, hi = first["box"]  # nm
    centre = [(lo[d] + hi[d]) / 2 / res[d] for d in range(3)]
    if position is not None:
        if len(position) != 3:
            raise LinkError(f"position must be 3 numbers (x, y, z voxels), got {position!r}")
        centre = [float(p) for p in position]
    extent = max((hi[d] - lo[d]) / res[d] for d in range(2))
    return {
        "dimensions": {dim: [res[d] * 1e-9, "m"] for d, dim in enumerate(DIMS[:3])},
        "position": centre,
        # about the whole selection across a ~1000 pixel panel, and in the 3D view
        "crossSectionScale": max(1.0, extent / 1000),
        "projectionScale": max(64.0, 1.5 * extent),
        "layers": layers,
        "layout": layout,
    }


def browser_source(url: str | os.PathLike) -> str:
    """The ``precomputed://`` source string Neuroglancer opens for a volume URL.

    >>> browser_source("gs://bucket/vol/")
    'precomputed://gs://bucket/vol'
    >>> browser_source("/data/vol")
    Traceback (most recent call last):
    ...
    xarray_precomputed.errors.LinkError: /data/vol is a local path, which a browser cannot open: serve its directory with `precomputed serve /data` and link the http:// URL it prints
    """
    text = normalize_url(str(url) if isinstance(url, PurePath) else url)
    if not text.startswith(_BROWSER_PROTOCOLS):
        parent = str(PurePath(text).parent)
        raise LinkError(
            f"{text} is a local path, which a browser cannot open: serve its directory with "
            f"`precomputed serve {parent}` and link the http:// URL it prints"
        )
    return "precomputed://" + text


def _describe(
    source: Source,
    storage_options: dict[str, Any] | None,
    resolution: Sequence[float] | None,
    size: Sequence[int] | None,
    voxel_offset: Sequence[int] | None,
) -> dict[str, Any]:
    """Layer type, source string, name, resolution (nm) and box (nm) of one source."""
    if isinstance(source, xr.Dataset | xr.DataArray):
        return _describe_opened(source)
    if not isinstance(source, str | os.PathLike):
        raise LinkError(
            f"cannot link a {type(source).__name__}: give a volume URL, or a Dataset or "
            "DataArray opened with engine='precomputed'"
        )
    ng_source = browser_source(source)
    url = ng_source[len("precomputed://") :]
    name = url.rstrip("/").rsplit("/", 1)[-1] or url
    if resolution is not None and size is not None:
        res = tuple(float(r) for r in resolution)
        offset = tuple(voxel_offset or (0, 0, 0))
        vtype = "image"
        shape = tuple(size)
    else:
        _, info = open_info(url, storage_options)
        scale = info.scales[0]
        res, offset, shape = scale.resolution, scale.voxel_offset, scale.size
        vtype = info.type
    box = (
        [offset[d] * res[d] for d in range(3)],
        [(offset[d] + shape[d]) * res[d] for d in range(3)],
    )
    layer_type = "segmentation" if vtype == "segmentation" else "image"
    return {"type": layer_type, "source": ng_source, "name": name, "resolution": res, "box": box}


def _describe_opened(obj: xr.Dataset | xr.DataArray) -> dict[str, Any]:
    attrs = obj.attrs
    if "url" in attrs and "resolution" in attrs:  # a Dataset as the reader made it
        url, res, vtype = attrs["url"], attrs["resolution"], attrs.get("type")
    else:  # a variable or a selection of it: the volume it is still read from
        from .lazy_source import source_reader  # imports dask

        arrays = obj.data_vars.values() if isinstance(obj, xr.Dataset) else [obj]
        reader = next((r for r in map(source_reader, arrays) if r is not None), None)
        if reader is None:
            raise LinkError(
                "this object is not read from a precomputed volume (not opened with "
                "engine='precomputed', or already loaded into memory): write it with "
                "to_precomputed and link the written URL"
            )
        url, res, vtype = reader.store.url, reader.scale.resolution, reader.info.type
    ng_source = browser_source(url)
    res = tuple(float(r) for r in res)
    lo, hi = [], []
    for d, dim in enumerate(DIMS[:3]):
        if dim not in obj.coords or obj.coords[dim].size == 0:
            raise LinkError(f"the selection has no {dim!r} coordinate (or is empty) to centre on")
        values = obj.coords[dim].values
        # coordinates are voxel centres: the selection spans half a voxel further each way
        lo.append(float(values.min()) - res[d] / 2)
        hi.append(float(values.max()) + res[d] / 2)
    name = str(url).rstrip("/").rsplit("/", 1)[-1]
    layer_type = "segmentation" if vtype == "segmentation" else "image"
    return {"type": layer_type, "source": ng_source, "name": name, "resolution": res,
            "box": (lo, hi)}  # fmt: skip


__all__ = ["DEFAULT_HOST", "browser_source", "decode_url", "neuroglancer_url", "viewer_state"]
