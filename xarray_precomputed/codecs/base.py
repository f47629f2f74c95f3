"""The interface every chunk codec implements, and what each codec declares it can hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import UnsupportedEncodingError
from ..layout import copy_into

# Every data type a precomputed volume may have (docs/format.md §1.1).
DATA_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")


class Codec:
    """Encode and decode one chunk: an ``(x, y, z, channel)`` array of the clipped shape.

    A subclass declares what it can hold; metadata validation and the writer ask it
    (:meth:`check_holds`, :meth:`check_chunk_size`) instead of keeping their own tables.
    """

    name = ""
    lossy = False
    #: data types the encoding can hold
    data_types: ClassVar[tuple[str, ...]] = DATA_TYPES
    #: channel counts it can hold; ``None``: any
    channels: ClassVar[tuple[int, ...] | None] = None
    #: constructor options and their defaults
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: constructor option -> the scale member (info JSON) that records it
    scale_options: ClassVar[Mapping[str, str]] = {}

    def __init__(self, dtype: np.dtype, num_channels: int, **params: Any):
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.num_channels = num_channels
        self.check_holds(self.dtype.name, num_channels)
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.name} takes options {sorted(self.defaults)}, got {unknown}")
        self.params = {**self.defaults, **params}

    @classmethod
    def check_holds(cls, data_type: str, num_channels: int) -> None:
        """Raise :class:`UnsupportedEncodingError` unless the encoding can hold
        ``num_channels`` channels of ``data_type``."""
        if data_type not in cls.data_types:
            raise UnsupportedEncodingError(
                f"encoding {cls.name!r} needs data_type in {list(cls.data_types)}, "
                f"got {data_type!r}"
            )
        if cls.channels is not None and num_channels not in cls.channels:
            raise UnsupportedEncodingError(
                f"encoding {cls.name!r} needs num_channels in {list(cls.channels)}, "
                f"got {num_channels}"
            )

    @classmethod
    def check_chunk_size(cls, chunk_size: Sequence[int]) -> None:
        """Raise :class:`UnsupportedEncodingError` if chunks of ``chunk_size`` cannot be
        encoded. Decoding is not limited: readers accept what other writers made."""

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        raise NotImplementedError

    def decode_into(
        self,
        data: bytes,
        shape: tuple[int, int, int],
        where: str,
        out: np.ndarray,
        lo: tuple[int, int, int] = (0, 0, 0),
        channels: slice | Sequence[int] = slice(None),
    ) -> None:
        """Decode the voxels ``lo + [0, out.shape[:3])`` of a chunk of clipped ``shape``
        into ``out``, channel ``channels[k]`` into ``out[..., k]``.

        This default decodes the whole chunk and copies the window; codecs that can
        write the window directly (compressed_segmentation) override it.
        """
        chunk = self.decode(data, shape, where)
        window = tuple(slice(a, a + n) for a, n in zip(lo, out.shape[:3]))
        copy_into(out, chunk[(*window, channels)])

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
