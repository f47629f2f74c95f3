"""``compressed_segmentation`` (docs/format.md §3.6): a compiled decoder of our own,
the ``compressed_segmentation`` package to encode.

The package decodes while holding the GIL, so a thread pool would decode on one
core; :mod:`.cseg_decode` decodes without it (docs/design.md). The channel table
is checked here, every block header and table index by the compiled decoder.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import ModuleType

import compressed_segmentation as cseg
import numpy as np

from ..errors import CorruptDataError
from .base import Codec

_kernel: ModuleType | None = None
_kernel_lock = threading.Lock()


def _decoder() -> ModuleType:
    """The compiled decoder, imported on first use: importing numba takes ~0.3 s, which
    opening a volume or reading another encoding should not pay."""
    global _kernel
    if _kernel is None:
        with _kernel_lock:
            if _kernel is None:
                from . import cseg_decode

                _kernel = cseg_decode
    return _kernel


_ERRORS = {
    1: "block headers are truncated",
    2: "block {b} has an invalid bit width",
    3: "block {b} points beyond the end of the chunk",
    4: "block {b} has a value table beyond the end of the chunk",
    5: "block {b} indexes beyond its value table",
}


class CompressedSegmentationCodec(Codec):
    """uint32/uint64 labels in blocks of ``block_size`` voxels with per-block value tables."""

    name = "compressed_segmentation"
    data_types = ("uint32", "uint64")
    defaults = {"block_size": (8, 8, 8)}
    scale_options = {"block_size": "compressed_segmentation_block_size"}

    def __init__(self, dtype: np.dtype, num_channels: int, **params):
        super().__init__(dtype, num_channels, **params)
        self.block_size = tuple(int(b) for b in self.params["block_size"])

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        out = np.empty((*shape, self.num_channels), dtype=self.dtype, order="F")
        self.decode_into(data, shape, where, out)
        return out

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
        straight into ``out`` (any positive strides), channel ``channels[k]`` into
        ``out[..., k]``: no chunk buffer, no copy.

        >>> import numpy as np
        >>> codec = CompressedSegmentationCodec(np.dtype("uint64"), 1, block_size=(2, 2, 2))
        >>> a = np.arange(60, dtype=np.uint64).reshape((5, 4, 3, 1))
        >>> out = np.zeros((2, 3, 3, 1), np.uint64)  # C-ordered
        >>> codec.decode_into(codec.encode(a), (5, 4, 3), "chunk", out, lo=(3, 1, 0))
        >>> bool((out == a[3:5, 1:4]).all())
        True
        """
        nc = self.num_channels
        channels = range(nc)[channels] if isinstance(channels, slice) else channels
        if out.ndim != 4 or out.shape[3] != len(channels) or out.dtype != self.dtype:
            raise ValueError(f"{where}: cannot decode into {out.dtype} array {out.shape}")
        words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
        if len(data) % 4 or len(words) < nc:
            raise CorruptDataError(f"{where}: compressed_segmentation chunk is truncated")
        offsets = words[:nc].astype(np.int64)
        ends = np.append(offsets[1:], len(words))
        if offsets[0] != nc or np.any(ends < offsets) or np.any(offsets > len(words)):
            raise CorruptDataError(f"{where}: corrupt compressed_segmentation channel offsets")
        if not words.flags.aligned:  # a slice of a shard at an odd byte offset
            words = words.copy()
        words.flags.writeable = False  # one compiled variant for bytes and bytearray input
        kernel = _decoder()
        for k, c in enumerate(channels):
            code, block = kernel.decode_box(
                words, int(offsets[c]), int(ends[c]), shape, self.block_size, lo, out[..., k]
            )
            if code:
                what = _ERRORS[code].format(b=block)
                raise CorruptDataError(f"{where}: compressed_segmentation channel {c}: {what}")

    def encode(self, array: np.ndarray) -> bytes:
        nc = array.shape[3]
        streams = []
        for c in range(nc):
            one = np.asfortranarray(array[..., c], dtype=self.dtype)
            streams.append(cseg.compress(one, block_size=self.block_size, order="F")[4:])
        offsets = np.cumsum([nc] + [len(s) // 4 for s in streams[:-1]]).astype("<u4")
        return offsets.tobytes() + b"".join(streams)
