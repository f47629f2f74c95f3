"""Create Neuroglancer precomputed volumes on local disk with the reference implementations.

Test helper for the read path: every volume is written by a *peer* (tensorstore or
cloud-volume), never by ``xarray_precomputed`` (which this module must not import).

Arrays are always ``(x, y, z, c)`` numpy arrays; the array index ``(0, 0, 0)`` corresponds to
voxel ``voxel_offset`` of the scale.

Main entry points::

    case = cases_tensorstore()[0]
    expected = write_volume(case, str(tmp_path / "vol"))   # what the peer reads back
    np.testing.assert_array_equal(open_with_our_reader(...), expected)

Notes on the peers (see docs/format.md):

* tensorstore never stores chunks equal to the fill value (0); cloud-volume is run with
  ``delete_black_uploads=True`` so that it does not store them either.  ``make_data`` zeroes
  whole chunks (and, for box-sharded cases, a whole shard) so readers see missing chunks and
  missing shard files.
* cloud-volume with ``compress=True`` writes ``<chunk>.gz`` files on local disk (cloud-files
  suffix convention); tensorstore cannot read those (it sees missing chunks).
* cloud-volume's jpeg/png writers are only correct for 1 channel (docs/format.md §8 pitfall 5), so the
  cloud-volume matrix only has 1-channel image encodings.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from .helpers import sharding_dict

RESOLUTION = (4, 4, 40)
SCALE_KEY = "4_4_40"

TS_ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation")
LOSSY_ENCODINGS = ("jpeg", "jxl")
LABEL_ENCODINGS = ("compressed_segmentation", "compresso")


# --------------------------------------------------------------------------------------------
# Case description
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    writer: str  # "tensorstore" or "cloudvolume"
    encoding: str  # raw | jpeg | png | compressed_segmentation | compresso | jxl
    dtype: str  # numpy dtype name
    num_channels: int
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    voxel_offset: tuple[int, int, int]
    sharding: dict | None  # full neuroglancer sharding spec dict or None
    block_size: tuple[int, int, int] | None = None  # compressed_segmentation only
    # cloudvolume only: cloud-files compression of unsharded chunk files (.gz on local disk)
    compress: bool = False

    @property
    def id(self) -> str:
        w = {"tensorstore": "ts", "cloudvolume": "cv"}.get(self.writer, self.writer)
        enc = {"compressed_segmentation": "cseg"}.get(self.encoding, self.encoding)
        parts = [w, enc, self.dtype, f"c{self.num_channels}", _fmt3(self.size, "x")]
        parts.append("k" + _fmt3(self.chunk_size, "x"))
        if any(self.voxel_offset):
            parts.append("o" + _fmt3(self.voxel_offset, "_"))
        if self.block_size is not None:
            parts.append("b" + _fmt3(self.block_size, "x"))
        parts.append(sharding_label(self.sharding))
        if self.compress:
            parts.append("gz")
        return "-".join(parts)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(-(-s // c) for s, c in zip(self.size, self.chunk_size))  # type: ignore[return-value]

    @property
    def is_lossless(self) -> bool:
        return self.encoding not in LOSSY_ENCODINGS

    @property
    def tensorstore_can_read(self) -> bool:
        """tensorstore decodes the encoding *and* finds the files (no .gz suffix)."""
        return self.encoding in TS_ENCODINGS and not self.compress

    @property
    def is_label(self) -> bool:
        """Segmentation-like data (blocky labels) rather than a smooth image."""
        return self.encoding in LABEL_ENCODINGS or self.dtype == "uint64"

    @property
    def layer_type(self) -> str:
        return "segmentation" if self.is_label else "image"


def _fmt3(v, sep: str) -> str:
    return sep.join(str(int(a)) for a in v)


def sharding_label(sharding: dict | None) -> str:
    if sharding is None:
        return "unsharded"
    h = {"identity": "id", "murmurhash3_x86_128": "mm"}[sharding["hash"]]
    enc = "".join(
        "g" if sharding.get(k, "raw") == "gzip" else "r"
        for k in ("minishard_index_encoding", "data_encoding")
    )
    return (
        f"sh{h}p{sharding['preshift_bits']}m{sharding['minishard_bits']}"
        f"s{sharding['shard_bits']}{enc}"
    )


# --------------------------------------------------------------------------------------------
# Sharding helpers (docs/format.md §4.1, §5.1)
# --------------------------------------------------------------------------------------------


def grid_bits(grid) -> list[int]:
    return [int(n - 1).bit_length() for n in grid]


def sharding_layout(kind: str, size, chunk_size) -> dict:
    """Named sharding layouts used by the case matrices.

    box_raw, box_gzip_raw, box_raw_gzip
            identity hash, preshift 2, minishard 1, shard bits cover the rest of the grid
            (shards are axis-aligned boxes); suffix = minishard_index/data encodings.
    box_gzip  identity, preshift 1, minishard 3, shard bits cover the rest, gzip/gzip
            (boxes of 16 chunks, e.g. 4x2x2; one shard with shard_bits 0 on small grids).
    mini0   identity, preshift 3, minishard_bits 0, shard bits cover the rest (box shards).
    murmur  murmurhash3_x86_128, preshift 1, minishard 2, shard 2 (scattered shards).
    one     identity, preshift 0, minishard 3, shard_bits 0 (a single 0.shard file).
    alias   identity, preshift 1, minishard 1, shard 1 with more grid bits than that, so several
            boxes alias into the same shard file (not a box layout).
    """
    total = sum(grid_bits(-(-s // c) for s, c in zip(size, chunk_size)))
    encs = {
        "box_raw": ("raw", "raw"),
        "box_gzip_raw": ("gzip", "raw"),
        "box_raw_gzip": ("raw", "gzip"),
    }
    if kind in encs:
        mi_enc, data_enc = encs[kind]
        return sharding_dict(2, 1, max(0, total - 3), mi_enc=mi_enc, data_enc=data_enc)
    if kind == "box_gzip":
        return sharding_dict(1, 3, max(0, total - 4))
    if kind == "mini0":
        return sharding_dict(3, 0, max(0, total - 3))
    if kind == "murmur":
        return sharding_dict(1, 2, 2, hash="murmurhash3_x86_128", data_enc="raw")
    if kind == "one":
        return sharding_dict(0, 3, 0, mi_enc="raw")
    if kind == "alias":
        if total <= 3:
            raise ValueError(f"grid too small for an aliasing layout ({total} bits)")
        return sharding_dict(1, 1, 1)
    raise ValueError(kind)


def shard_box_chunks(sharding: dict, grid) -> tuple[int, int, int] | None:
    """Shape (in chunks) of the axis-aligned box covered by one shard, or None if the shards
    are not boxes (murmurhash, or too few bits so that several boxes share a shard)."""
    if sharding["hash"] != "identity":
        return None
    bits = grid_bits(grid)
    total = sum(bits)
    pre, mini, sh = sharding["preshift_bits"], sharding["minishard_bits"], sharding["shard_bits"]
    if total > pre + mini + sh:
        return None
    n = min(pre + mini, total)
    k = [0, 0, 0]
    consumed = 0
    i = 0
    while consumed < n:
        for d in range(3):
            if consumed < n and i < bits[d]:
                k[d] += 1
                consumed += 1
        i += 1
    return tuple(min(g, 2**kd) for g, kd in zip(grid, k))  # type: ignore[return-value]


def compressed_morton_code(cell, grid) -> int:
    bits = grid_bits(grid)
    out = j = 0
    for i in range(max(bits, default=0)):
        for d in range(3):
            if i < bits[d]:
                out |= ((int(cell[d]) >> i) & 1) << j
                j += 1
    return out


def shard_number(sharding: dict, chunk_id: int) -> int:
    pre = sharding["preshift_bits"]
    h = chunk_id >> pre if pre < 64 else 0
    if sharding["hash"] == "murmurhash3_x86_128":
        import mmh3

        h = mmh3.hash64(struct.pack("<Q", h), seed=0, x64arch=False)[0] & (2**64 - 1)
    return (h >> sharding["minishard_bits"]) & ((1 << sharding["shard_bits"]) - 1)


def shard_filename(sharding: dict, shard: int) -> str:
    digits = -(-sharding["shard_bits"] // 4)
    return f"{shard:0{digits}x}.shard" if digits else f"{shard:x}.shard"


def chunk_filename(case: Case, cell) -> str:
    return "_".join(
        f"{o + g * c}-{o + min((g + 1) * c, s)}"
        for o, g, c, s in zip(case.voxel_offset, cell, case.chunk_size, case.size)
    )


def expected_files(case: Case, data: np.ndarray) -> set[str]:
    """Names of the files the peer is expected to create in the scale directory: one per
    non-zero chunk (``.gz`` suffix with cloud-volume compression), or one per shard that holds
    a non-zero chunk."""
    grid = case.grid_shape
    names = set()
    for cell in itertools.product(*(range(n) for n in grid)):
        sl = tuple(slice(g * c, (g + 1) * c) for g, c in zip(cell, case.chunk_size))
        if not np.any(data[sl]):
            continue
        if case.sharding is None:
            names.add(chunk_filename(case, cell) + (".gz" if case.compress else ""))
        else:
            shard = shard_number(case.sharding, compressed_morton_code(cell, grid))
            names.add(shard_filename(case.sharding, shard))
    return names


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

_INT_RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
    "uint32": (0, 2**32 - 1),
    "int32": (-(2**31), 2**31 - 1),
}
_FLOAT_RANGE = (-3.75, 5.5)


def _label_palette(dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    bits = dtype.itemsize * 8
    top = 2**bits - 1
    vals = [0, 1, 2, 3, 7, 42, 255]
    if bits >= 16:
        vals += [256, 1000, 65535]
    if bits >= 32:
        vals += [65536, 123456, 2**31 - 1, 2**31, top]
    if bits >= 64:
        vals += [2**32, 2**32 + 1, 2**40 + 12345, 2**53 + 1, 2**63, 2**63 + 5, top - 1]
    n_random = 40 - len(vals)
    rand = rng.integers(1, top, size=n_random, dtype=np.uint64, endpoint=True)
    pal = np.array([v for v in vals if v <= top], dtype=np.uint64)
    pal = np.unique(np.concatenate([pal, rand]))
    return pal.astype(dtype)


def _make_labels(case: Case, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(case.dtype)
    sx, sy, sz = case.size
    out = np.empty((sx, sy, sz, case.num_channels), dtype=dtype)
    for c in range(case.num_channels):
        pal = _label_palette(dtype, rng)
        for bx, by, bz in itertools.product(range(0, sx, 8), range(0, sy, 8), range(0, sz, 8)):
            shape = (min(8, sx - bx), min(8, sy - by), min(8, sz - bz))
            # few distinct values per 8^3 block; occasionally 17 (8-bit cseg indices)
            k = int(rng.choice([1, 1, 2, 2, 3, 4, 5, 17]))
            values = rng.choice(pal, size=k, replace=False)
            # blocky: choose labels on a 2x2x2 sub-grid, then upsample
            coarse = rng.integers(0, k, size=tuple(-(-s // 2) for s in shape))
            idx = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: shape[0], : shape[1], : shape[2]]
            out[bx : bx + shape[0], by : by + shape[1], bz : bz + shape[2], c] = values[idx]
    return out


def _make_image(case: Case, rng: np.random.Generator) -> np.ndarray:
    sx, sy, sz = case.size
    x, y, z = np.meshgrid(
        np.arange(sx, dtype=np.float64),
        np.arange(sy, dtype=np.float64),
        np.arange(sz, dtype=np.float64),
        indexing="ij",
    )
    chans = []
    for c in range(case.num_channels):
        f = (
            0.5
            + 0.28 * np.sin(2 * np.pi * x / 19.0 + c) * np.cos(2 * np.pi * y / 23.0 - 0.7 * c)
            + 0.18 * np.sin(2 * np.pi * z / 7.0 + 0.5 * c)
            + rng.normal(0.0, 0.03, size=x.shape)
        )
        chans.append(np.clip(f, 0.0, 1.0))
    f = np.stack(chans, axis=-1)
    if case.dtype == "float32":
        lo, hi = _FLOAT_RANGE
        return (lo + f * (hi - lo)).astype(np.float32)
    lo, hi = _INT_RANGES[case.dtype]
    return np.round(lo + f * (float(hi) - float(lo))).astype(case.dtype)


def zero_cells(case: Case) -> list[tuple[int, int, int]]:
    """Grid cells (chunk indices relative to voxel_offset) that make_data sets to zero."""
    grid = case.grid_shape
    cells = list(itertools.product(*(range(g) for g in grid)))
    if len(cells) < 2:
        return []
    zero = {g for g in cells if (g[0] + 2 * g[1] + 3 * g[2]) % 5 == 0}
    if case.sharding is not None:
        box = shard_box_chunks(case.sharding, grid)
        n_shards = 0 if box is None else math.prod(-(-g // b) for g, b in zip(grid, box))
        if box is not None and n_shards > 1:
            # the whole shard containing the last cell -> that shard file never exists
            last = tuple(g - 1 for g in grid)
            start = tuple((a // b) * b for a, b in zip(last, box))
            zero |= {g for g in cells if all(s <= a < s + b for a, s, b in zip(g, start, box))}
    if len(zero) >= len(cells):
        zero = {cells[0]}
    return sorted(zero)


def make_data(case: Case, seed: int = 0) -> np.ndarray:
    """Deterministic ``(x, y, z, c)`` test data of ``case.dtype`` for ``case``.

    Images: smooth sinusoids + a little noise spanning (nearly) the full dtype range (negative
    values for signed types, fractional and negative values for float32). Labels (cseg,
    compresso, uint64): blocky labels with few distinct values per 8^3 block, including values
    > 2**32 for uint64. Some whole chunks (see ``zero_cells``) are zero.
    """
    rng = np.random.default_rng([seed, zlib.crc32(case.id.encode())])
    data = _make_labels(case, rng) if case.is_label else _make_image(case, rng)
    for g in zero_cells(case):
        sl = tuple(slice(a * c, (a + 1) * c) for a, c in zip(g, case.chunk_size))
        data[sl] = 0
    return np.asfortranarray(data)


# --------------------------------------------------------------------------------------------
# Writers / readers
# --------------------------------------------------------------------------------------------


def _check_root(root) -> str:
    root = os.fspath(root)
    if os.path.exists(root) and os.listdir(root):
        raise FileExistsError(f"refusing to write into non-empty directory {root}")
    return root


def _check_data(case: Case, data: np.ndarray) -> np.ndarray:
    expected = (*case.size, case.num_channels)
    if data.shape != expected:
        raise ValueError(f"data shape {data.shape} != {expected}")
    if data.dtype != np.dtype(case.dtype):
        raise ValueError(f"data dtype {data.dtype} != {case.dtype}")
    return data


def tensorstore_spec(root, scale_index: int | None = None) -> dict:
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": os.path.abspath(os.fspath(root))},
    }
    if scale_index is not None:
        spec["scale_index"] = scale_index
    return spec


def tensorstore_read(root: str, scale_index: int = 0) -> np.ndarray:
    """Read a whole scale with tensorstore as an ``(x, y, z, c)`` Fortran-ordered array."""
    ts = tensorstore()
    t = ts.open(tensorstore_spec(root, scale_index), open=True, read=True).result()
    return np.asarray(t.read(order="F").result())


def _tensorstore_create(
    root: str,
    *,
    data_type: str,
    num_channels: int,
    layer_type: str,
    resolution,
    size,
    chunk_size,
    voxel_offset,
    encoding: str,
    block_size=None,
    sharding=None,
    key: str | None = None,
):
    ts = tensorstore()
    scale = {
        "resolution": list(resolution),
        "size": list(size),
        "voxel_offset": list(voxel_offset),
        "chunk_size": list(chunk_size),
        "encoding": encoding,
    }
    if key is not None:
        scale["key"] = key
    if block_size is not None:
        scale["compressed_segmentation_block_size"] = list(block_size)
    if sharding is not None:
        scale["sharding"] = dict(sharding)
    spec = tensorstore_spec(root)
    spec["multiscale_metadata"] = {
        "type": layer_type,
        "data_type": data_type,
        "num_channels": num_channels,
    }
    spec["scale_metadata"] = scale
    return ts.open(spec, create=True).result()


def _write_tensorstore(case: Case, root: str, data: np.ndarray) -> np.ndarray:
    t = _tensorstore_create(
        root,
        data_type=case.dtype,
        num_channels=case.num_channels,
        layer_type=case.layer_type,
        resolution=RESOLUTION,
        size=case.size,
        chunk_size=case.chunk_size,
        voxel_offset=case.voxel_offset,
        encoding=case.encoding,
        block_size=case.block_size,
        sharding=case.sharding,
        key=SCALE_KEY,
    )
    t.write(data).result()
    return tensorstore_read(root, 0)


def tensorstore():
    """The tensorstore module; the calling test is skipped when it is not installed."""
    return pytest.importorskip("tensorstore", reason="this test uses the tensorstore peer")


def cloudvolume():
    """The cloudvolume module; the calling test is skipped when it is not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("cloudvolume", reason="this test uses the cloud-volume peer")


def cloudvolume_can_write(encoding: str) -> bool:
    """False if cloud-volume's codec for ``encoding`` is not installed (e.g. png needs
    pyspng-seunglab, jxl needs imagecodecs with JPEG XL).

    Without cloud-volume itself every case is listed (case lists are built while tests are
    collected) and the tests that write them are skipped.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cloudvolume
    except ImportError:
        return True
    cv_chunks = cloudvolume.chunks
    if encoding in cv_chunks.NEEDS_INSTALL:
        return False
    if encoding == "jxl":
        try:
            import imagecodecs

            return bool(imagecodecs.JPEGXL.available)
        except Exception:
            return False
    return True


def _write_cloudvolume(case: Case, root: str, data: np.ndarray) -> np.ndarray:
    CloudVolume = cloudvolume().CloudVolume

    if case.sharding is not None and case.compress:
        raise ValueError("cloud-files compression of shard files is not a valid volume")
    info = CloudVolume.create_new_info(
        num_channels=case.num_channels,
        layer_type=case.layer_type,
        data_type=case.dtype,
        encoding=case.encoding,
        resolution=list(RESOLUTION),
        voxel_offset=list(case.voxel_offset),
        volume_size=list(case.size),
        chunk_size=list(case.chunk_size),
        compressed_segmentation_block_size=list(case.block_size or (8, 8, 8)),
    )
    assert info["scales"][0]["key"] == SCALE_KEY
    if case.encoding != "compressed_segmentation":
        info["scales"][0].pop("compressed_segmentation_block_size", None)
    if case.sharding is not None:
        info["scales"][0]["sharding"] = dict(case.sharding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = CloudVolume(
            "file://" + os.path.abspath(root),
            info=info,
            progress=False,
            compress="gzip" if case.compress else False,
            delete_black_uploads=True,  # do not store all-zero chunks (like tensorstore)
            fill_missing=True,
            parallel=1,
        )
        cv.commit_info()
        if case.sharding is None:
            cv[cv.bounds] = data
        else:
            _cloudvolume_write_sharded(cv, case, data)
        return np.asfortranarray(np.asarray(cv[cv.bounds]))


def _cloudvolume_write_sharded(cv, case: Case, data: np.ndarray) -> None:
    from cloudvolume.datasource.precomputed.common import compressed_morton_code
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    spec = ShardingSpecification.from_dict(case.sharding)
    grid = case.grid_shape
    off = np.array(case.voxel_offset)
    size = np.array(case.size)
    if shard_box_chunks(case.sharding, grid) is not None:
        # Regular cloud-volume write path: one upload per shard box (CV requires every upload
        # to cover exactly one shard; it computes the box itself).
        shape = np.array(spec.image_shard_shape(case.size, case.chunk_size), dtype=np.int64)
        for lo in itertools.product(*(range(0, s, b) for s, b in zip(size, shape))):
            lo = np.array(lo)
            hi = np.minimum(lo + shape, size)
            sub = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            cv[tuple(slice(a + o, b + o) for a, b, o in zip(lo, hi, off))] = sub
        return
    # Shards are not boxes (murmurhash / aliasing): CV's image upload cannot do this (it insists
    # that an upload maps to one shard), so encode the chunks with CV's codec and assemble the
    # shard files with CV's make_shard (which names them by the proper hex shard number;
    # ShardingSpecification.synthesize_shards would name them in decimal - wrong for images).
    cv_chunks = cloudvolume().chunks
    groups: dict[int, dict[int, bytes]] = {}
    for g in itertools.product(*(range(n) for n in grid)):
        lo = np.array(g) * np.array(case.chunk_size)
        hi = np.minimum(lo + np.array(case.chunk_size), size)
        chunk = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if not np.any(chunk):
            continue
        code = int(compressed_morton_code(g, grid))
        blob = cv_chunks.encode(
            chunk,
            case.encoding,
            block_size=cv.meta.compressed_segmentation_block_size(0),
            compression_params=cv.meta.compression_params(0),
        )
        groups.setdefault(spec.compute_shard_location(code).shard_number, {})[code] = blob
    scale_dir = os.path.join(os.fspath(cv.meta.cloudpath).removeprefix("file://"), SCALE_KEY)
    os.makedirs(scale_dir, exist_ok=True)
    for labels in groups.values():
        filename, blob = cv.image.make_shard(labels, cv.bounds, mip=0)
        with open(os.path.join(scale_dir, filename), "wb") as f:
            f.write(blob)


def write_volume(case: Case, root: str, data: np.ndarray | None = None) -> np.ndarray:
    """Write ``data`` (default ``make_data(case)``) at directory ``root`` with the case's peer.

    Returns the ``(x, y, z, c)`` array as the *peer* reads it back (for lossy encodings this is
    the peer's decoded data; for lossless encodings it equals ``data``).
    """
    root = _check_root(root)
    if data is None:
        data = make_data(case)
    data = _check_data(case, np.asarray(data))
    if case.writer == "tensorstore":
        return _write_tensorstore(case, root, data)
    if case.writer == "cloudvolume":
        return _write_cloudvolume(case, root, data)
    raise ValueError(f"unknown writer {case.writer!r}")


# --------------------------------------------------------------------------------------------
# Case matrices
# --------------------------------------------------------------------------------------------

SIZE_A = (37, 29, 11)
SIZE_B = (64, 48, 20)
SIZE_C = (23, 19, 13)


def _case(
    writer, encoding, dtype, nc, size, chunk, offset, block=None, sharding=None, compress=False
):
    return Case(
        writer=writer,
        encoding=encoding,
        dtype=dtype,
        num_channels=nc,
        size=tuple(size),
        chunk_size=tuple(chunk),
        voxel_offset=tuple(offset),
        sharding=sharding,
        block_size=None if block is None else tuple(block),
        compress=compress,
    )


# (encoding, dtype, channels, size, chunk, voxel_offset, cseg block, sharding layout of the
# sharded variant).  Every row is used once unsharded and once sharded.
_TS_BASE = [
    # raw: all 8 data types
    ("raw", "uint8", 1, SIZE_A, (16, 16, 8), (0, 0, 0), None, "box_raw"),
    ("raw", "uint8", 3, SIZE_B, (8, 8, 8), (-5, 3, -2), None, "box_gzip"),
    ("raw", "int8", 1, SIZE_A, (32, 16, 4), (-7, -3, 0), None, "mini0"),
    ("raw", "uint16", 1, SIZE_B, (16, 16, 8), (0, 0, 0), None, "murmur"),
    ("raw", "uint16", 3, SIZE_C, (8, 8, 8), (-8, -8, -8), None, "one"),
    ("raw", "int16", 1, SIZE_A, (16, 16, 8), (3, -2, 5), None, "box_gzip_raw"),
    ("raw", "uint32", 1, SIZE_C, (5, 7, 3), (0, 0, 0), None, "alias"),
    ("raw", "int32", 2, SIZE_A, (16, 16, 8), (-1, 0, 0), None, "box_raw_gzip"),
    ("raw", "uint64", 1, SIZE_B, (8, 8, 8), (-20, 4, -3), None, "box_gzip"),
    ("raw", "float32", 1, SIZE_A, (16, 16, 8), (0, 0, 0), None, "murmur"),
    ("raw", "float32", 3, SIZE_C, (32, 16, 4), (-4, 0, 6), None, "box_raw"),
    # jpeg: uint8, 1 and 3 channels
    ("jpeg", "uint8", 1, SIZE_B, (16, 16, 8), (0, 0, 0), None, "box_raw"),
    ("jpeg", "uint8", 3, SIZE_A, (16, 16, 8), (-5, -5, -5), None, "murmur"),
    # png: uint8 1-4 channels, uint16 1 and 3 channels
    ("png", "uint8", 1, SIZE_A, (16, 16, 8), (0, 0, 0), None, "box_gzip"),
    ("png", "uint8", 2, SIZE_C, (8, 8, 8), (-3, 2, 1), None, "mini0"),
    ("png", "uint8", 3, SIZE_A, (32, 16, 4), (0, 0, 0), None, "one"),
    ("png", "uint8", 4, SIZE_C, (8, 8, 8), (0, 0, 0), None, "box_raw"),
    ("png", "uint16", 1, SIZE_A, (16, 16, 8), (-9, 0, 0), None, "alias"),
    ("png", "uint16", 3, SIZE_C, (8, 8, 8), (0, 0, 0), None, "box_gzip_raw"),
    # compressed_segmentation: uint32/uint64, block sizes incl. odd ones, 1 and 2 channels
    ("compressed_segmentation", "uint32", 1, SIZE_B, (16, 16, 8), (0, 0, 0), (8, 8, 8), "box_gzip"),
    ("compressed_segmentation", "uint64", 1, SIZE_A, (16, 16, 8), (-5, 3, -2), (3, 5, 2), "murmur"),
    ("compressed_segmentation", "uint32", 2, SIZE_C, (8, 8, 8), (0, 0, 0), (3, 5, 2), "mini0"),
    ("compressed_segmentation", "uint64", 2, SIZE_A, (32, 16, 4), (-1, -1, -1), (8, 8, 8), "one"),
    ("compressed_segmentation", "uint64", 1, SIZE_B, (8, 8, 8), (0, 0, 0), (4, 4, 4), "alias"),
]


def cases_tensorstore() -> list[Case]:
    out = []
    for enc, dt, nc, size, chunk, off, block, kind in _TS_BASE:
        out.append(_case("tensorstore", enc, dt, nc, size, chunk, off, block))
        sh = sharding_layout(kind, size, chunk)
        out.append(_case("tensorstore", enc, dt, nc, size, chunk, off, block, sh))
    return out


# cloud-volume: only 1-channel image encodings (CV's multi-channel jpeg/png layout is broken,
# docs/format.md §8 pitfall 5); cseg only 1 channel (CV's cseg writer squeezes the channel axis).
# Negative voxel offsets work with CV (unsharded and sharded).  CV png is dropped when
# pyspng-seunglab is not installed (CV's only png codec); jxl when imagecodecs lacks JPEG XL.
_CV_BASE = [
    ("raw", "uint8", 1, SIZE_A, (16, 16, 8), (-5, 3, 0), None, "box_gzip"),
    ("raw", "uint16", 2, SIZE_B, (8, 8, 8), (0, 0, 0), None, "murmur"),
    ("raw", "uint64", 1, SIZE_A, (32, 16, 4), (-7, -3, -1), None, "alias"),
    ("raw", "float32", 1, SIZE_C, (8, 8, 8), (2, 0, -4), None, "one"),
    ("compressed_segmentation", "uint32", 1, SIZE_A, (16, 16, 8), (0, 0, 0), (8, 8, 8), "box_raw"),
    ("compressed_segmentation", "uint64", 1, SIZE_B, (8, 8, 8), (-5, -5, 0), (3, 5, 2), "mini0"),
    ("compresso", "uint8", 1, SIZE_A, (16, 16, 8), (0, 0, 0), None, "box_gzip_raw"),
    ("compresso", "uint16", 1, SIZE_C, (8, 8, 8), (-3, 0, 0), None, "murmur"),
    ("compresso", "uint32", 1, SIZE_A, (32, 16, 4), (0, 0, 0), None, "box_raw_gzip"),
    ("compresso", "uint64", 1, SIZE_B, (16, 16, 8), (-8, 0, -8), None, "box_gzip"),
    ("jpeg", "uint8", 1, SIZE_B, (16, 16, 8), (0, 0, 0), None, "box_raw"),
    ("png", "uint8", 1, SIZE_A, (16, 16, 8), (0, -4, 0), None, "box_gzip"),
    ("jxl", "uint8", 1, SIZE_A, (16, 16, 8), (-4, 0, 0), None, "mini0"),
]


def cases_cloudvolume() -> list[Case]:
    out = []
    for enc, dt, nc, size, chunk, off, block, kind in _CV_BASE:
        if not cloudvolume_can_write(enc):
            continue
        out.append(_case("cloudvolume", enc, dt, nc, size, chunk, off, block))
        out.append(_case("cloudvolume", enc, dt, nc, size, chunk, off, block, compress=True))
        sh = sharding_layout(kind, size, chunk)
        out.append(_case("cloudvolume", enc, dt, nc, size, chunk, off, block, sh))
    return out


def all_cases() -> list[Case]:
    return cases_tensorstore() + cases_cloudvolume()


# --------------------------------------------------------------------------------------------
# Multiscale
# --------------------------------------------------------------------------------------------

MULTISCALE_RESOLUTIONS = ((4, 4, 40), (8, 8, 40), (16, 16, 40))
MULTISCALE_KEYS = ("4_4_40", "8_8_40", "16_16_40")
# non-default offsets (scale i = floor(scale 0 offset / 2**i) in x, y)
MULTISCALE_VOXEL_OFFSETS = ((-6, 5, 3), (-3, 2, 3), (-2, 1, 3))


def write_multiscale_tensorstore(
    root: str,
    *,
    voxel_offsets=None,
    base_size=(37, 29, 11),
    chunk_size=(16, 16, 8),
    dtype: str = "uint8",
    num_channels: int = 1,
    encoding: str = "raw",
    block_size=None,
    sharding: dict | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Write a 3-scale pyramid with tensorstore (resolutions 4/8/16 x 4/8/16 x 40, keys
    ``"4_4_40"`` etc., x/y sizes ceil-halved per scale, scale i = scale 0 subsampled by 2**i
    in x and y).  ``voxel_offsets``: one offset per scale (default all zero; see
    ``MULTISCALE_VOXEL_OFFSETS``).  ``sharding`` (same spec for every scale) may be a dict or
    a layout name for ``sharding_layout``.  Returns the tensorstore readback of every scale."""
    root = _check_root(root)
    if voxel_offsets is None:
        voxel_offsets = [(0, 0, 0)] * len(MULTISCALE_RESOLUTIONS)
    base_case = _case(
        "tensorstore",
        encoding,
        dtype,
        num_channels,
        base_size,
        chunk_size,
        voxel_offsets[0],
        block_size,
    )
    base = make_data(base_case, seed=seed)
    out = []
    for i, (res, key, off) in enumerate(
        zip(MULTISCALE_RESOLUTIONS, MULTISCALE_KEYS, voxel_offsets)
    ):
        f = 2**i
        data = np.asfortranarray(base[::f, ::f])
        size = data.shape[:3]
        sh = sharding_layout(sharding, size, chunk_size) if isinstance(sharding, str) else sharding
        t = _tensorstore_create(
            root,
            data_type=dtype,
            num_channels=num_channels,
            layer_type=base_case.layer_type,
            resolution=res,
            size=size,
            chunk_size=chunk_size,
            voxel_offset=off,
            encoding=encoding,
            block_size=block_size,
            sharding=sh,
            key=key,
        )
        t.write(data).result()
        out.append(tensorstore_read(root, i))
    return out


def write_multiscale_tensorstore_offsets(root: str, **kwargs) -> list[np.ndarray]:
    """``write_multiscale_tensorstore`` with ``MULTISCALE_VOXEL_OFFSETS`` (one per scale)."""
    return write_multiscale_tensorstore(root, voxel_offsets=MULTISCALE_VOXEL_OFFSETS, **kwargs)
