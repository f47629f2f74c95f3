"""What the writer and ``downsample`` accept: arrays normalised to (x, y, z, channel).

:func:`volume_array` picks the data variable and orders the dims,
:func:`geometry` reads resolution and voxel offset from the coordinates (or the
attrs the reader sets), and :func:`check_dtype` refuses types the format cannot
store. All raise :class:`~xarray_precomputed.errors.WriteError` naming what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .conventions import DIMS, SPATIAL_DIMS, VARIABLE_NAMES, first_voxel
from .errors import WriteError
from .metadata import DATA_TYPES


def volume_array(obj: xr.Dataset | xr.DataArray, variable: Hashable | None = None) -> xr.DataArray:
    """The data to write as a DataArray with dims ``(x, y, z, channel)``.

    A Dataset gives its only data variable, ``variable``, or the one named image,
    segmentation or data; its attrs are merged under the variable's. A missing
    ``channel`` dim is added with length 1.

    >>> import numpy as np, xarray as xr
    >>> a = xr.DataArray(np.zeros((2, 3, 4), "uint8"), dims=("z", "y", "x"))
    >>> volume_array(a).dims
    ('x', 'y', 'z', 'channel')
    """
    if isinstance(obj, xr.DataArray):
        array = obj
    elif isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if variable is not None:
            if variable not in obj.data_vars:
                raise WriteError(f"no data variable {variable!r}; the Dataset has {names}")
            name = variable
        elif len(names) == 1:
            name = names[0]
        else:
            preferred = [n for n in VARIABLE_NAMES if n in names]
            if len(preferred) != 1:
                raise WriteError(f"the Dataset has several data variables {names}; pass variable=")
            name = preferred[0]
        # assign_attrs copies: the caller's Dataset must not be modified
        array = obj[name].assign_attrs({**obj.attrs, **obj[name].attrs})
    else:
        raise WriteError(f"cannot write a {type(obj).__name__}; give a DataArray or Dataset")
    missing = [d for d in SPATIAL_DIMS if d not in array.dims]
    extra = [d for d in array.dims if d not in DIMS]
    if missing or extra:
        raise WriteError(
            f"the array has dims {tuple(array.dims)}; it needs x, y, z and optionally channel"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {extra}: rename or select them away)" if extra else "")
        )
    unknown = [d for d, n in zip(array.dims, array.shape) if not math.isfinite(n)]
    if unknown:  # a Dask array after boolean selection: shape and chunks are NaN
        raise WriteError(
            f"the array's size along {unknown} is unknown (NaN chunk sizes of a Dask array); "
            "call .compute_chunk_sizes() on its Dask array first"
        )
    if "channel" not in array.dims:
        array = array.expand_dims("channel", axis=-1)
    return array.transpose(*DIMS)


def _check_triple(value: Any, name: str, what: str, kind: type) -> None:
    """Refuse a given ``resolution`` / ``voxel_offset`` that is not 3 values of ``kind``
    (a fractional voxel offset would otherwise be truncated without a word)."""
    if value is None:
        return
    try:
        ok = len(value) == 3 and all(float(v) == kind(v) and np.isfinite(float(v)) for v in value)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise WriteError(f"{name} must be 3 {what} in x, y, z order, got {value!r}")


def geometry(
    array: xr.DataArray,
    resolution: Sequence[float] | None = None,
    voxel_offset: Sequence[int] | None = None,
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Resolution (nm) and voxel offset of an (x, y, z, channel) array.

    Given values win; otherwise they come from the x/y/z coordinates (nm at voxel
    centres), then from the ``resolution``/``voxel_offset`` attrs.

    >>> import numpy as np, xarray as xr
    >>> a = xr.DataArray(np.zeros((2, 2, 2)), dims=("x", "y", "z"),
    ...                  coords={"x": [6.0, 10.0], "y": [2.0, 6.0], "z": [60.0, 100.0]})
    >>> geometry(a)
    ((4, 4, 40), (1, 0, 1))
    """
    _check_triple(resolution, "resolution", "numbers (nm)", float)
    _check_triple(voxel_offset, "voxel_offset", "integers (voxels)", int)
    attrs = array.attrs
    res: list[float] = []
    off: list[int] = []
    for d, dim in enumerate(SPATIAL_DIMS):
        # not coords.get(): it invents a 0..n-1 coordinate for a dim that has none
        coord = array.coords[dim] if dim in array.coords else None
        values = None if coord is None else np.asarray(coord.values, dtype=np.float64)
        if resolution is not None:
            r = float(resolution[d])
        elif values is not None and len(values) >= 2:
            steps = np.diff(values)
            r = float(steps[0])
            if r <= 0 or not np.allclose(steps, r, rtol=1e-9, atol=0):
                raise WriteError(
                    f"coordinate {dim!r} is not uniformly increasing (steps {np.unique(steps)[:4]}); "
                    "precomputed volumes need a regular grid"
                )
            known = attrs.get("resolution")
            if known is not None and math.isclose(float(known[d]), r, rel_tol=1e-6):
                # coordinate differences carry rounding error: keep the exact attr value
                r = float(known[d])
        elif "resolution" in attrs:
            r = float(attrs["resolution"][d])
        else:
            raise WriteError(
                f"cannot tell the resolution along {dim!r}: "
                + ("it has a single voxel" if values is not None else "it has no coordinate")
                + "; pass resolution=(x, y, z) in nm"
            )
        if not math.isfinite(r) or r <= 0:
            raise WriteError(f"resolution along {dim!r} must be positive, got {r}")
        res.append(int(r) if float(r).is_integer() else r)
        if voxel_offset is not None:
            off.append(int(voxel_offset[d]))
        elif values is not None and len(values):
            o = first_voxel(values[0], r)
            if not math.isclose(o, round(o), abs_tol=1e-6):
                raise WriteError(
                    f"coordinate {dim!r} starts at {values[0]} nm, not at a voxel centre "
                    f"((offset + 0.5) * {r}); pass voxel_offset= explicitly"
                )
            off.append(int(round(o)))
        elif "voxel_offset" in attrs:
            off.append(int(attrs["voxel_offset"][d]))
        else:
            off.append(0)
    return tuple(res), tuple(off)


def check_dtype(array: xr.DataArray) -> str:
    """The name of ``array``'s dtype if the format can store it.

    >>> import numpy as np, xarray as xr
    >>> check_dtype(xr.DataArray(np.zeros(1, "uint16")))
    'uint16'
    """
    dt = np.dtype(array.dtype)
    if dt.name not in DATA_TYPES:
        hint = {"float64": "float32", "int64": "int32 or uint64", "bool": "uint8"}.get(dt.name)
        raise WriteError(
            f"data type {dt.name} cannot be stored; precomputed allows {list(DATA_TYPES)}"
            + (f" (cast with .astype('{hint.split()[0]}'))" if hint else "")
        )
    return dt.name
