"""2-D image encodings: ``jpeg``, ``png`` and ``jxl`` (docs/format.md §3.2-3.5).

A chunk is one image whose pixels, row after row, enumerate the voxels in
Fortran ``(x, y, z)`` order, with the channels as interleaved components.
Writers use width ``x`` and height ``y * z``; readers accept any split.
"""

from __future__ import annotations

from collections.abc import Sequence

import imagecodecs
import numpy as np

from ..errors import CorruptDataError, UnsupportedEncodingError
from .base import Codec


class ImageCodec(Codec):
    max_side: int  # the longest image side the format allows

    @classmethod
    def image_shape(cls, chunk: Sequence[int]) -> tuple[int, int]:
        """(width, height) of the image of a chunk: ``x`` by ``y * z``, or ``x * y`` by
        ``z`` when ``y * z`` is too tall. Refuses chunks neither layout fits."""
        x, y, z = (int(n) for n in chunk[:3])
        width, height = x, y * z
        if height > cls.max_side:
            width, height = x * y, z
        if max(width, height) > cls.max_side:
            raise UnsupportedEncodingError(
                f"chunk shape {(x, y, z)} is too large for a {cls.name} image "
                f"(sides up to {cls.max_side} pixels)"
            )
        return width, height

    @classmethod
    def check_chunk_size(cls, chunk_size: Sequence[int]) -> None:
        cls.image_shape(chunk_size)

    def _decode_image(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def _encode_image(self, image: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
        try:
            image = self._decode_image(data)
        except Exception as e:
            raise CorruptDataError(f"{where}: cannot decode {self.name} chunk ({e})") from e
        channels = image.shape[2] if image.ndim == 3 else 1
        n = shape[0] * shape[1] * shape[2]
        if image.ndim not in (2, 3) or image.shape[0] * image.shape[1] != n:
            raise CorruptDataError(
                f"{where}: {self.name} image is {image.shape[:2]} pixels, expected "
                f"{n} = product of chunk shape {shape}"
            )
        if channels != self.num_channels:
            raise CorruptDataError(
                f"{where}: {self.name} image has {channels} channel(s), expected {self.num_channels}"
            )
        if image.dtype != self.dtype:
            raise CorruptDataError(
                f"{where}: {self.name} image samples are {image.dtype}, expected {self.dtype.name}"
            )
        return image.reshape(shape[2], shape[1], shape[0], channels).transpose(2, 1, 0, 3)

    def encode(self, array: np.ndarray) -> bytes:
        c = array.shape[3]
        width, height = self.image_shape(array.shape)
        image = np.ascontiguousarray(array.transpose(2, 1, 0, 3)).reshape(height, width, c)
        if c == 1:
            image = image[..., 0]
        return self._encode_image(image)


class JpegCodec(ImageCodec):
    """Baseline JPEG (libjpeg-turbo); uint8, 1 or 3 channels. Option: ``quality``."""

    name = "jpeg"
    lossy = True
    data_types = ("uint8",)
    channels = (1, 3)
    max_side = 65535
    defaults = {"quality": 85}
    scale_options = {"quality": "jpeg_quality"}

    def _decode_image(self, data: bytes) -> np.ndarray:
        # libjpeg only warns about a truncated stream and pads the image with grey;
        # tensorstore rejects it ("Premature end of JPEG file"), and so do we. Markers
        # cannot occur inside entropy-coded data, so a complete stream has an
        # end-of-image marker after its last start-of-scan marker.
        data = bytes(data)
        if data.find(b"\xff\xd9", data.rfind(b"\xff\xda")) < 0:
            raise ValueError("truncated JPEG stream (no end-of-image marker after the last scan)")
        return imagecodecs.jpeg8_decode(data)

    def _encode_image(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.jpeg8_encode(image, level=self.params["quality"]))


class PngCodec(ImageCodec):
    """PNG; uint8 or uint16, 1-4 channels. Option: ``level`` (zlib 0-9)."""

    name = "png"
    data_types = ("uint8", "uint16")
    channels = (1, 2, 3, 4)
    max_side = 2**31 - 1
    defaults = {"level": 6}
    scale_options = {"level": "png_level"}

    def _decode_image(self, data: bytes) -> np.ndarray:
        return imagecodecs.png_decode(data)

    def _encode_image(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.png_encode(image, level=self.params["level"]))


class JxlCodec(ImageCodec):
    """JPEG XL (libjxl); uint8, 1 channel, the only interoperable layout (docs/format.md §3.5)."""

    name = "jxl"
    data_types = ("uint8",)
    channels = (1,)
    max_side = 2**30
    defaults = {"quality": 100}

    def _decode_image(self, data: bytes) -> np.ndarray:
        image = imagecodecs.jpegxl_decode(data)
        if image.ndim == 3 and image.shape[0] == 1:
            image = image[0]
        return image

    def _encode_image(self, image: np.ndarray) -> bytes:
        quality = self.params["quality"]
        return bytes(imagecodecs.jpegxl_encode(image, lossless=quality >= 100, level=quality))
