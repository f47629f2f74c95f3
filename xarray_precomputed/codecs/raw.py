"""``raw``: little-endian values in Fortran order (x fastest), channels planar."""

from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError
from .base import Codec


class RawCodec(Codec):
    name = "raw"

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        expected = self.nbytes(shape)
        if len(data) != expected:
            raise CorruptDataError(
                f"{where}: raw chunk has {len(data)} bytes, expected {expected} "
                f"for shape {shape} x {self.num_channels} channel(s) of {self.dtype.name}"
            )
        return np.frombuffer(data, dtype=self.dtype).reshape((*shape, self.num_channels), order="F")

    def encode(self, array: np.ndarray) -> bytes:
        return np.asarray(array, dtype=self.dtype).tobytes(order="F")
