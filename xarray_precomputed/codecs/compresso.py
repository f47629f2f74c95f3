"""``compresso`` (spec 3.7), seung-lab's variant, via the ``compresso`` package."""

from __future__ import annotations

import compresso
import numpy as np

from ..errors import CorruptDataError
from .base import Codec

_MAGIC = b"cpso"
_HEADER = 36


class CompressoCodec(Codec):
    """Single-channel unsigned labels; the stream's data width must match the dtype."""

    name = "compresso"

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        if len(data) < _HEADER or data[:4] != _MAGIC:
            raise CorruptDataError(f"{where}: not a compresso stream (bad magic or too short)")
        try:
            header = compresso.header(data)
        except Exception as e:  # compresso.DecodeError: unknown format version, ...
            raise CorruptDataError(f"{where}: invalid compresso header ({e})") from e
        width = header["data_width"]
        dims = (header["sx"], header["sy"], header["sz"])
        if width != self.dtype.itemsize or dims != tuple(shape):
            raise CorruptDataError(
                f"{where}: compresso stream holds {dims} values of {width} bytes, "
                f"expected {tuple(shape)} of {self.dtype.itemsize}"
            )
        steps = (header["xstep"], header["ystep"], header["zstep"])
        # compresso's decoder trusts its header; these values crash it (spec 3.7 limits).
        if (
            min(steps) < 1
            or steps[0] * steps[1] * steps[2] > 64
            or header["connectivity"] not in (4, 6)
            or header["id_size"] < 1
        ):
            raise CorruptDataError(f"{where}: corrupt compresso header {header}")
        if not compresso.valid(data):
            raise CorruptDataError(f"{where}: compresso stream is truncated or corrupt")
        try:
            labels = compresso.decompress(data)
        except Exception as e:
            raise CorruptDataError(f"{where}: cannot decode compresso chunk ({e})") from e
        labels = np.asarray(labels).reshape(shape, order="F")
        return labels.view(self.dtype)[..., np.newaxis]

    def encode(self, array: np.ndarray) -> bytes:
        return bytes(compresso.compress(np.asfortranarray(array[..., 0], dtype=self.dtype)))
