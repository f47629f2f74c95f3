"""Chunk encodings, one module each, behind one registry keyed by encoding name.

A codec turns the bytes of one stored chunk into an ``(x, y, z, channel)`` array of
the chunk's clipped shape and back. ``decode`` validates sizes and raises
:class:`~xarray_precomputed.errors.CorruptDataError` naming the chunk. Each codec
class declares what it can hold (``data_types``, ``channels``, chunk sizes) and its
options; metadata validation and the writer ask it.

>>> import numpy as np
>>> codec = get_codec("raw", np.dtype("uint16"), 2)
>>> a = np.arange(24, dtype="uint16").reshape((3, 2, 2, 2), order="F")
>>> bool((codec.decode(codec.encode(a), (3, 2, 2), "chunk") == a).all())
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnsupportedEncodingError
from .base import DATA_TYPES, Codec
from .compresso import CompressoCodec
from .cseg import CompressedSegmentationCodec
from .image import JpegCodec, JxlCodec, PngCodec
from .raw import RawCodec

if TYPE_CHECKING:
    from ..metadata import Scale

CODECS: dict[str, type[Codec]] = {
    "raw": RawCodec,
    "jpeg": JpegCodec,
    "png": PngCodec,
    "compressed_segmentation": CompressedSegmentationCodec,
    "compresso": CompressoCodec,
    "jxl": JxlCodec,
}
ENCODINGS = tuple(CODECS)
# Views of the codecs' declarations, by encoding name.
ENCODING_DTYPES = {name: cls.data_types for name, cls in CODECS.items()}
ENCODING_CHANNELS = {name: cls.channels for name, cls in CODECS.items()}
#: scale member (info JSON) -> the encoding whose option it records
OPTION_ENCODING = {m: name for name, cls in CODECS.items() for m in cls.scale_options.values()}


def codec_class(encoding: str) -> type[Codec]:
    """The codec class of ``encoding``.

    >>> codec_class("jpeg").channels
    (1, 3)
    """
    try:
        return CODECS[encoding]
    except KeyError:
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r}; supported: {sorted(CODECS)}"
        ) from None


def get_codec(encoding: str, dtype: np.dtype, num_channels: int, **params: Any) -> Codec:
    """The codec for ``encoding``; ``params`` are its options (block_size, quality, level)."""
    return codec_class(encoding)(np.dtype(dtype), num_channels, **params)


def scale_codec(scale: Scale, dtype: np.dtype, num_channels: int) -> Codec:
    """The codec of a scale, with the options its ``info`` records (reader and writer).

    >>> from xarray_precomputed.metadata import Scale
    >>> s = Scale(key="k", size=(8, 8, 8), resolution=(1, 1, 1), chunk_sizes=((8, 8, 8),),
    ...           encoding="jpeg", jpeg_quality=60)
    >>> scale_codec(s, np.dtype("uint8"), 1).params
    {'quality': 60}
    """
    cls = codec_class(scale.encoding)
    params = {
        option: getattr(scale, member)
        for option, member in cls.scale_options.items()
        if getattr(scale, member) is not None
    }
    return cls(np.dtype(dtype), num_channels, **params)


__all__ = [
    "CODECS",
    "DATA_TYPES",
    "ENCODINGS",
    "ENCODING_CHANNELS",
    "ENCODING_DTYPES",
    "OPTION_ENCODING",
    "Codec",
    "codec_class",
    "get_codec",
    "scale_codec",
]
