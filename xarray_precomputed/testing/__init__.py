"""Testing helpers shipped with xarray-precomputed.

:mod:`xarray_precomputed.testing.strategies` holds `Hypothesis
<https://hypothesis.readthedocs.io>`_ strategies for chunk grids, sharding specs,
``info`` documents and outer selections; it needs ``hypothesis`` installed, so it
is not imported here.

:func:`write_tensorstore_volume` writes a reference volume with tensorstore (an
independent implementation of the format), to compare this package against.

>>> from xarray_precomputed.testing import strategies  # doctest: +SKIP
>>> strategies.sharding_specs().example()  # doctest: +SKIP
ShardingSpec(preshift_bits=2, hash='identity', minishard_bits=1, shard_bits=3, ...)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["write_tensorstore_volume"]


def write_tensorstore_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    chunk_size: Sequence[int],
    resolution: Sequence[float] = (4, 4, 40),
    voxel_offset: Sequence[int] = (0, 0, 0),
    encoding: str = "raw",
    sharding: Mapping[str, Any] | None = None,
    volume_type: str = "image",
    block_size: Sequence[int] | None = None,
    key: str | None = None,
    jpeg_quality: int | None = None,
) -> Any:
    """Write ``array`` (``(x, y, z, channel)``) as one scale of a local volume with
    tensorstore and return the opened tensorstore.

    Calling it again on the same ``path`` with another ``resolution`` (or ``key``) adds
    a scale. tensorstore does not store chunks equal to 0 (the fill value), nor shard
    files that would hold only such chunks.
    """
    import tensorstore as ts

    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    scale: dict[str, Any] = {
        "resolution": list(resolution),
        "size": list(array.shape[:3]),
        "voxel_offset": list(voxel_offset),
        "chunk_size": list(chunk_size),
        "encoding": encoding,
    }
    if sharding is not None:
        scale["sharding"] = dict(sharding)
    if block_size is not None:
        scale["compressed_segmentation_block_size"] = list(block_size)
    if key is not None:
        scale["key"] = key
    if jpeg_quality is not None:
        scale["jpeg_quality"] = jpeg_quality
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": os.fspath(path)},
        "multiscale_metadata": {
            "type": volume_type,
            "data_type": array.dtype.name,
            "num_channels": int(array.shape[3]),
        },
        "scale_metadata": scale,
    }
    store = ts.open(spec, create=True, open=True).result()
    store.write(array).result()
    return store
