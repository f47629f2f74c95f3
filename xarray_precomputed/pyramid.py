"""Downsampling for multiscale pyramids: the next scale as a lazy Dataset.

The output grid follows the precomputed convention: with factor ``f`` a voxel
``i`` of the new scale covers input voxels ``[f * i, f * (i + 1))`` in absolute
voxel coordinates, so ``voxel_offset' = floor(voxel_offset / f)`` and
``size' = ceil((voxel_offset + size) / f) - voxel_offset'``. Bins that stick out
of the volume are averaged over the voxels they hold (``mean``) or filled by
repeating the edge voxel (``mode``, ``min``, ``max``, ``stride``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import xarray as xr

from .conventions import (
    DIMS,
    SPATIAL_DIMS,
    coordinate_attrs,
    derived_attrs,
    variable_name,
    voxel_centres,
)
from .errors import WriteError
from .inputs import geometry, volume_array

METHODS = ("mean", "mode", "min", "max", "stride")


def _mode(a: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """Most frequent value over ``axis``; ties go to the smallest value."""
    if axis is None:
        axis = tuple(range(a.ndim))
    keep = [d for d in range(a.ndim) if d not in axis]
    moved = np.transpose(a, keep + list(axis))
    out_shape = moved.shape[: len(keep)]
    flat = np.sort(moved.reshape(-1, int(np.prod(moved.shape[len(keep) :]))), axis=1)
    n = flat.shape[1]
    # run lengths: for each position, how many equal values precede it in its run
    starts = np.ones_like(flat, dtype=bool)
    starts[:, 1:] = flat[:, 1:] != flat[:, :-1]
    idx = np.where(starts, np.arange(n), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    run = np.arange(n) - idx + 1
    # the value at the end of the longest run; argmax picks the first maximum
    best = np.argmax(run, axis=1)
    return flat[np.arange(len(flat)), best].reshape(out_shape)


def _masked_mode_block(block: np.ndarray, factors, real, block_info=None) -> np.ndarray:
    """``_mode`` over bins of ``factors`` voxels of an (x, y, z, c) block, counting only
    voxels inside ``real`` (per axis ``[start, stop)`` of the padded array)."""
    loc = block_info[0]["array-location"]
    valid = np.ones(block.shape[:3], dtype=bool)
    for d in range(3):
        pos = np.arange(loc[d][0], loc[d][1])
        shape = [1, 1, 1]
        shape[d] = len(pos)
        valid &= ((pos >= real[d][0]) & (pos < real[d][1])).reshape(shape)
    n = [block.shape[d] // factors[d] for d in range(3)]
    c = block.shape[3]
    split = (n[0], factors[0], n[1], factors[1], n[2], factors[2])
    values = block.reshape(*split, c).transpose(0, 2, 4, 6, 1, 3, 5).reshape(-1, math.prod(factors))
    mask = np.broadcast_to(
        valid.reshape(split).transpose(0, 2, 4, 1, 3, 5)[:, :, :, None],
        (*n, c, *factors),
    ).reshape(values.shape)
    order = np.lexsort((values, ~mask), axis=-1)  # valid voxels first, ascending
    flat = np.take_along_axis(values, order, axis=1)
    ok = np.take_along_axis(mask, order, axis=1)
    width = flat.shape[1]
    starts = np.ones_like(flat, dtype=bool)
    starts[:, 1:] = flat[:, 1:] != flat[:, :-1]
    idx = np.where(starts, np.arange(width), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    run = np.where(ok, np.arange(width) - idx + 1, 0)
    best = np.argmax(run, axis=1)
    return flat[np.arange(len(flat)), best].reshape(*n, c)


def _stride(a: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    if axis is None:
        axis = tuple(range(a.ndim))
    index = tuple(0 if d in axis else slice(None) for d in range(a.ndim))
    return a[index]


def downsample(
    obj: xr.Dataset | xr.DataArray,
    factors: Sequence[int] = (2, 2, 1),
    method: str | None = None,
    variable: str | None = None,
) -> xr.Dataset | xr.DataArray:
    """Downsample by integer ``factors`` along x, y, z; returns the next scale, lazily.

    ``method`` defaults to ``"mean"`` for images and ``"mode"`` (most frequent
    label) for segmentations, judged from the variable name or ``type`` attr.
    The result has the reader's coordinates (nm at voxel centres) and attrs
    updated for the new scale, so it can be written with ``to_precomputed``.

    >>> import numpy as np, xarray as xr
    >>> a = xr.DataArray(np.arange(32, dtype="uint8").reshape(4, 4, 2, 1),
    ...                  dims=("x", "y", "z", "channel"), name="image",
    ...                  coords={"x": np.arange(4) * 4.0 + 2, "y": np.arange(4) * 4.0 + 2,
    ...                          "z": [20.0, 60.0]})
    >>> small = downsample(a, (2, 2, 1))
    >>> small.sizes["x"], float(small.x[0]), int(small[0, 0, 0, 0])
    (2, 4.0, 5)
    """
    factors = tuple(int(f) for f in factors)
    if len(factors) != 3 or min(factors) < 1:
        raise WriteError(f"factors must be 3 positive integers (x, y, z), got {factors}")
    dataset = obj if isinstance(obj, xr.Dataset) else None
    array = volume_array(obj, variable)
    had_channel = "channel" in (obj[array.name].dims if dataset is not None else obj.dims)
    resolution, offset = geometry(array)
    kind = variable_name(str(array.attrs.get("type", array.name or "")))
    if method is None:
        method = "mode" if kind == "segmentation" else "mean"
    if method not in METHODS:
        raise WriteError(f"method must be one of {METHODS}, got {method!r}")

    import dask.array as da  # here, not at import: reading volumes does not need it

    data = array.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(256, 256, 64, -1))
    size = data.shape[:3]
    new_offset = tuple(offset[d] // factors[d] for d in range(3))
    new_end = tuple(-(-(offset[d] + size[d]) // factors[d]) for d in range(3))
    lead = tuple(offset[d] - new_offset[d] * factors[d] for d in range(3))
    trail = tuple(new_end[d] * factors[d] - offset[d] - size[d] for d in range(3))
    new_size = tuple(new_end[d] - new_offset[d] for d in range(3))
    pads = [(lead[d], trail[d]) for d in range(3)] + [(0, 0)]
    axes = {d: factors[d] for d in range(3)}

    def aligned(x: da.Array) -> da.Array:
        return x.rechunk(
            {d: max(factors[d], x.chunksize[d] // factors[d] * factors[d]) for d in range(3)}
        )

    if method == "mean":
        padded = aligned(da.pad(data.astype(np.float64), pads, mode="constant"))
        sums = da.coarsen(np.sum, padded, axes, trim_excess=False)
        for d in range(3):
            counts = np.full(new_size[d], float(factors[d]))
            counts[0] -= lead[d]
            counts[-1] -= trail[d]
            shape = [1, 1, 1, 1]
            shape[d] = new_size[d]
            chunks = tuple(sums.chunks[d] if k == d else (1,) for k in range(4))
            sums = sums / da.from_array(counts.reshape(shape), chunks=chunks)
        if np.issubdtype(data.dtype, np.integer):
            info = np.iinfo(data.dtype)
            result = da.clip(da.round(sums), info.min, info.max).astype(data.dtype)
        else:
            result = sums.astype(data.dtype)
    elif method == "mode" and any(lead + trail):
        # Edge copies would count twice in the vote: mask them out (bins are whole per block).
        padded = aligned(da.pad(data, pads, mode="edge"))
        result = padded.map_blocks(
            _masked_mode_block,
            factors=factors,
            real=tuple((lead[d], lead[d] + size[d]) for d in range(3)),
            chunks=tuple(tuple(n // factors[d] for n in padded.chunks[d]) for d in range(3))
            + (padded.chunks[3],),
            dtype=data.dtype,
        )
    else:
        padded = aligned(da.pad(data, pads, mode="edge") if any(lead + trail) else data)
        reducer = {"mode": _mode, "min": np.min, "max": np.max, "stride": _stride}[method]
        result = da.coarsen(reducer, padded, axes, trim_excess=False).astype(data.dtype)

    new_res = tuple(resolution[d] * factors[d] for d in range(3))
    coords = {
        dim: xr.Variable(
            dim,
            voxel_centres(new_offset[d], new_size[d], new_res[d]),
            array.coords[dim].attrs if dim in array.coords else coordinate_attrs(dim),
        )
        for d, dim in enumerate(SPATIAL_DIMS)
    }
    coords["channel"] = (
        array.coords["channel"] if "channel" in array.coords else np.arange(array.shape[3])
    )
    attrs = derived_attrs(array.attrs, new_res, new_offset, new_size)
    out = xr.DataArray(result, dims=DIMS, coords=coords, name=array.name, attrs=attrs)
    if not had_channel:
        out = out.isel(channel=0, drop=True)
    if dataset is None:
        return out
    ds_attrs = derived_attrs(dataset.attrs, new_res, new_offset, new_size)
    return xr.Dataset({array.name: out}, attrs=ds_attrs)
