"""The interface every chunk codec implements."""

from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError


class Codec:
    """Encode and decode one chunk: an ``(x, y, z, channel)`` array of the clipped shape."""

    name = ""
    lossy = False

    def __init__(self, dtype: np.dtype, num_channels: int, **params):
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.num_channels = num_channels
        if params:
            raise TypeError(f"{self.name} takes no options, got {sorted(params)}")

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, array: np.ndarray) -> bytes:
        raise NotImplementedError

    def nbytes(self, shape: tuple[int, int, int]) -> int:
        """Size of the decoded chunk in bytes."""
        return shape[0] * shape[1] * shape[2] * self.num_channels * self.dtype.itemsize

    def expand_bound(self, shape: tuple[int, int, int]) -> int:
        """The most bytes a gzip-wrapped chunk of ``shape`` may inflate to: its decoded
        size, plus headroom for encodings whose streams can exceed it."""
        n = self.nbytes(shape)
        return n if self.name == "raw" else 2 * n + (1 << 20)

    def _check_shape(self, array: np.ndarray, shape, where: str, what: str) -> None:
        expected = (*shape, self.num_channels)
        if array.shape != expected:
            raise CorruptDataError(
                f"{where}: {self.name} chunk decodes to {what} {array.shape}, expected {expected}"
            )
