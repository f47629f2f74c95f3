"""Builders shared by the test modules: labelled arrays, random data, sharding specs.

Nothing here imports a peer (tensorstore, cloud-volume) or ``xarray_precomputed``, so
``tests/peers.py`` can use it and pure unit tests run without the peers installed.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

DIMS = ("x", "y", "z", "channel")
RES = (4, 4, 40)
SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
GZIP_MAGIC = b"\x1f\x8b"


def make_array(
    data,
    offset=(0, 0, 0),
    res=RES,
    name: str = "image",
    dims=DIMS,
    attrs: dict | None = None,
    channel_coord: bool = False,
) -> xr.DataArray:
    """A DataArray with reader-style coordinates: nm at voxel centres along x, y, z.

    ``channel_coord=True`` also adds the reader's ``channel`` coordinate (0, 1, ...).
    """
    coords = {}
    for axis, dim in enumerate(dims):
        if dim in ("x", "y", "z"):
            d = "xyz".index(dim)
            coords[dim] = (offset[d] + np.arange(data.shape[axis]) + 0.5) * res[d]
        elif dim == "channel" and channel_coord:
            coords[dim] = np.arange(data.shape[axis])
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=dict(attrs or {}))


def rand(shape, dtype="uint8", seed: int = 0, low: int = 1) -> np.ndarray:
    """Random data; integers are drawn from ``[low, min(dtype max, 2**40)]``, so with the
    default ``low=1`` there are no zeros and no chunk is skipped as empty."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(size=shape).astype(dt)
    hi = min(np.iinfo(dt).max, 2**40)
    return rng.integers(low, hi, size=shape, endpoint=True).astype(dt)


def sharding_dict(
    preshift_bits: int,
    minishard_bits: int,
    shard_bits: int,
    *,
    hash: str = "identity",
    mi_enc: str = "gzip",
    data_enc: str = "gzip",
) -> dict:
    """A ``neuroglancer_uint64_sharded_v1`` sharding spec as it appears in ``info``."""
    return {
        "@type": SHARDING_TYPE,
        "preshift_bits": preshift_bits,
        "hash": hash,
        "minishard_bits": minishard_bits,
        "shard_bits": shard_bits,
        "minishard_index_encoding": mi_enc,
        "data_encoding": data_enc,
    }


def grid_shape(size, chunk) -> tuple[int, ...]:
    """Number of chunks along each axis (the last ones may be clipped)."""
    return tuple(-(-s // c) for s, c in zip(size, chunk))
