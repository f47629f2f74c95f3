"""Chunk encodings, one module each, behind one registry keyed by encoding name.

A codec turns the bytes of one stored chunk into an ``(x, y, z, channel)`` array of
the chunk's clipped shape and back. ``decode`` validates sizes and raises
:class:`~xarray_precomputed.errors.CorruptDataError` naming the chunk.

>>> import numpy as np
>>> codec = get_codec("raw", np.dtype("uint16"), 2)
>>> a = np.arange(24, dtype="uint16").reshape((3, 2, 2, 2), order="F")
>>> bool((codec.decode(codec.encode(a), (3, 2, 2), "chunk") == a).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedEncodingError
from .base import Codec
from .compresso import CompressoCodec
from .cseg import CompressedSegmentationCodec
from .image import JpegCodec, JxlCodec, PngCodec
from .raw import RawCodec

CODECS: dict[str, type[Codec]] = {
    "raw": RawCodec,
    "jpeg": JpegCodec,
    "png": PngCodec,
    "jxl": JxlCodec,
    "compressed_segmentation": CompressedSegmentationCodec,
    "compresso": CompressoCodec,
}


def get_codec(encoding: str, dtype: np.dtype, num_channels: int, **params: Any) -> Codec:
    """The codec for ``encoding``; ``params`` are its options (block_size, quality, level)."""
    try:
        cls = CODECS[encoding]
    except KeyError:
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r}; supported: {sorted(CODECS)}"
        ) from None
    return cls(np.dtype(dtype), num_channels, **params)


__all__ = ["CODECS", "Codec", "get_codec"]
