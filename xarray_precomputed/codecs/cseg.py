"""``compressed_segmentation`` (docs/format.md §3.6), via the ``compressed_segmentation`` package.

The package handles one channel at a time and trusts its input, so the channel
table and every block header are checked here before it runs.
"""

from __future__ import annotations

import compressed_segmentation as cseg
import numpy as np

from ..errors import CorruptDataError
from .base import Codec


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
        words = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
        nc = self.num_channels
        if len(data) % 4 or len(words) < nc:
            raise CorruptDataError(f"{where}: compressed_segmentation chunk is truncated")
        offsets = words[:nc].astype(np.int64)
        ends = np.append(offsets[1:], len(words))
        if offsets[0] != nc or np.any(ends < offsets) or np.any(offsets > len(words)):
            raise CorruptDataError(f"{where}: corrupt compressed_segmentation channel offsets")
        if nc == 1:
            # A one-channel chunk is already what the package decodes: no copies.
            self._check_stream(words[1:], shape, where)
            labels = cseg.decompress(bytes(data), shape, self.dtype, self.block_size, order="F")
            return labels.reshape((*shape, 1), order="F")
        out = np.empty((*shape, nc), dtype=self.dtype, order="F")
        for c in range(nc):
            stream = words[offsets[c] : ends[c]]
            self._check_stream(stream, shape, where)
            blob = np.concatenate([np.ones(1, "<u4"), stream]).tobytes()
            out[..., c] = cseg.decompress(
                blob, shape, self.dtype, self.block_size, order="F"
            ).reshape(shape, order="F")
        return out

    def _check_stream(self, stream: np.ndarray, shape, where: str) -> None:
        grid = [-(-s // b) for s, b in zip(shape, self.block_size)]
        nblocks = grid[0] * grid[1] * grid[2]
        if len(stream) < 2 * nblocks:
            raise CorruptDataError(f"{where}: compressed_segmentation block headers are truncated")
        headers = stream[: 2 * nblocks].reshape(nblocks, 2)
        table = (headers[:, 0] & 0xFFFFFF).astype(np.int64)
        bits = (headers[:, 0] >> 24).astype(np.int64)
        values = headers[:, 1].astype(np.int64)
        if np.any((bits & (bits - 1)) != 0) or np.any(bits > 32):  # 0 or a power of 2
            raise CorruptDataError(f"{where}: compressed_segmentation block has invalid bit width")
        block_voxels = self.block_size[0] * self.block_size[1] * self.block_size[2]
        value_words = -(-bits * block_voxels // 32)
        width = 2 if self.dtype.itemsize == 8 else 1
        n = len(stream)
        if np.any(values + value_words > n) or np.any(table + width > n):
            raise CorruptDataError(
                f"{where}: compressed_segmentation block points beyond the end of the chunk"
            )
        # The decoder looks every index up in the block's table without a bounds check,
        # so an index past the end of the stream would read foreign memory. Tables that
        # could hold all 2**bits entries are safe; check the (few) others index by index.
        suspect = np.flatnonzero(table + (np.left_shift(1, bits) * width) > n)
        if len(suspect):
            self._check_indexes(stream, shape, grid, suspect, table, bits, values, width, where)

    def _check_indexes(self, stream, shape, grid, blocks, table, bits, values, width, where):
        bs = self.block_size
        px, py, pz = np.unravel_index(np.arange(bs[0] * bs[1] * bs[2]), bs, order="F")
        for b in blocks:
            nbits = int(bits[b])
            if nbits == 0:
                continue  # index 0 only, checked above
            cell = (b % grid[0], b // grid[0] % grid[1], b // (grid[0] * grid[1]))
            valid = (
                (px < shape[0] - cell[0] * bs[0])
                & (py < shape[1] - cell[1] * bs[1])
                & (pz < shape[2] - cell[2] * bs[2])
            )
            pos = np.flatnonzero(valid) * nbits
            words = stream[int(values[b]) + (pos >> 5)].astype(np.uint64)
            idx = (words >> (pos & 31).astype(np.uint64)) & np.uint64((1 << nbits) - 1)
            if int(table[b]) + (int(idx.max()) + 1) * width > len(stream):
                raise CorruptDataError(
                    f"{where}: compressed_segmentation block {b} indexes beyond its value table"
                )

    def encode(self, array: np.ndarray) -> bytes:
        nc = array.shape[3]
        streams = []
        for c in range(nc):
            one = np.asfortranarray(array[..., c], dtype=self.dtype)
            streams.append(cseg.compress(one, block_size=self.block_size, order="F")[4:])
        offsets = np.cumsum([nc] + [len(s) // 4 for s in streams[:-1]]).astype("<u4")
        return offsets.tobytes() + b"".join(streams)
