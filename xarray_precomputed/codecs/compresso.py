"""``compresso`` (docs/format.md §3.7), seung-lab's variant, via the ``compresso`` package."""

from __future__ import annotations

from collections.abc import Sequence

import compresso
import numpy as np

from ..errors import CorruptDataError, UnsupportedEncodingError
from .base import Codec

_MAGIC = b"cpso"
_HEADER = 36
# Window integer type by the number of voxels in a window (xstep * ystep * zstep).
_WINDOW_TYPES = ((8, "<u1"), (16, "<u2"), (32, "<u4"), (64, "<u8"))


class CompressoCodec(Codec):
    """Single-channel unsigned labels; the stream's data width must match the dtype."""

    name = "compresso"
    data_types = ("uint8", "uint16", "uint32", "uint64")
    channels = (1,)
    max_side = 65535  # the stream header stores each dimension in 16 bits

    @classmethod
    def check_chunk_size(cls, chunk_size: Sequence[int]) -> None:
        if max(chunk_size) > cls.max_side:
            raise UnsupportedEncodingError(
                f"compresso chunks must be at most {cls.max_side} voxels per axis, "
                f"got {tuple(chunk_size)}"
            )

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        data = bytes(data)
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
        # compresso's decoder trusts its header; these values crash it (docs/format.md §3.7 limits).
        if (
            min(steps) < 1
            or steps[0] * steps[1] * steps[2] > 64
            or header["connectivity"] not in (4, 6)
            or header["id_size"] < 1
        ):
            raise CorruptDataError(f"{where}: corrupt compresso header {header}")
        self._check_windows(data, header, dims, steps, where)
        if not compresso.valid(data):
            raise CorruptDataError(f"{where}: compresso stream is truncated or corrupt")
        try:
            labels = compresso.decompress(data)
        except Exception as e:
            raise CorruptDataError(f"{where}: cannot decode compresso chunk ({e})") from e
        labels = np.asarray(labels).reshape(shape, order="F")
        return labels.view(self.dtype)[..., np.newaxis]

    @staticmethod
    def _check_windows(data: bytes, header, dims, steps, where: str) -> None:
        """Check the run-length coded boundary windows before the decoder sees them.

        compresso's decoder writes each decoded window without a bounds check and
        looks it up in the window-value table the same way, so a corrupt windows
        section overwrites memory. Layout: header, ids, window values, locations,
        windows, and (format 1) a z index of ``2 * sz`` integers just wide enough
        for ``2 * sx * sy`` at the end.
        """
        bits = steps[0] * steps[1] * steps[2]
        window = np.dtype(next(t for n, t in _WINDOW_TYPES if bits <= n))
        start = (
            _HEADER
            + (header["id_size"] + header["location_size"]) * header["data_width"]
            + header["value_size"] * window.itemsize
        )
        end = len(data)
        if header["format_version"] == 1:
            z_width = next(n for n in (1, 2, 4, 8) if 2 * dims[0] * dims[1] < 256**n)
            end -= 2 * z_width * dims[2]
        if start > end:
            raise CorruptDataError(f"{where}: compresso stream is shorter than its header says")
        nblocks = 1
        for d, s in zip(dims, steps):
            nblocks *= -(-d // s)
        rle = np.frombuffer(data, window, count=(end - start) // window.itemsize, offset=start)
        rle = rle.astype(np.uint64)
        run = (rle & np.uint64(1)).astype(bool)
        # Zero runs advance the position, other entries write one window there.
        advance = np.where(run, np.minimum(rle >> np.uint64(1), nblocks + 1), 1)
        position = np.cumsum(advance) - advance
        written, values = position[~run], rle[~run] >> np.uint64(1)
        if written.size and (
            int(written.max()) >= nblocks or int(values.max()) >= max(header["value_size"], 1)
        ):
            raise CorruptDataError(f"{where}: corrupt compresso boundary windows")

    def encode(self, array: np.ndarray) -> bytes:
        return bytes(compresso.compress(np.asfortranarray(array[..., 0], dtype=self.dtype)))
