"""The compiled compressed_segmentation decoder (codecs/cseg_decode.py).

Bit for bit against the ``compressed_segmentation`` package, tensorstore and a
bounds-checked reference decoder written here; windows and strided destinations;
corrupt and adversarial streams; bounds checked by numba itself in a subprocess;
decoding without the GIL; numba imported only when a chunk is decoded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import compressed_segmentation as cs
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarray_precomputed.codecs import get_codec
from xarray_precomputed.codecs.cseg import CompressedSegmentationCodec
from xarray_precomputed.errors import CorruptDataError

from . import peers

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ROOT = Path(__file__).resolve().parents[1]


def codec(dtype, nc, block) -> CompressedSegmentationCodec:
    return get_codec("compressed_segmentation", np.dtype(dtype), nc, block_size=block)


def header_bits(data: bytes, nc: int, shape, block) -> set[int]:
    """The bit widths used by the blocks of every channel."""
    words = np.frombuffer(data, "<u4")
    nblocks = int(np.prod([-(-s // b) for s, b in zip(shape, block)]))
    return {int(words[words[c] + 2 * b] >> 24) for c in range(nc) for b in range(nblocks)}


def reference_decode(data: bytes, shape, block, dtype, nc) -> np.ndarray:
    """Spec 3.6 in plain NumPy, checking every offset and index it uses."""
    words = np.frombuffer(data, "<u4").astype(np.uint64)
    if len(data) % 4 or len(words) < nc or words[0] != nc:
        raise ValueError("channel table")
    ends = [*(int(w) for w in words[1:nc]), len(words)]
    out = np.empty((*shape, nc), dtype, order="F")
    grid = [-(-s // b) for s, b in zip(shape, block)]
    width = 2 if np.dtype(dtype).itemsize == 8 else 1
    for c in range(nc):
        start, end = int(words[c]), ends[c]
        if not nc <= start <= end <= len(words):
            raise ValueError("channel table")
        stream = words[start:end]
        if len(stream) < 2 * grid[0] * grid[1] * grid[2]:
            raise ValueError("headers")
        for bz in range(grid[2]):
            for by in range(grid[1]):
                for bx in range(grid[0]):
                    b = bx + grid[0] * (by + grid[1] * bz)
                    table, bits = int(stream[2 * b]) & 0xFFFFFF, int(stream[2 * b]) >> 24
                    values = int(stream[2 * b + 1])
                    if bits not in (0, 1, 2, 4, 8, 16, 32):
                        raise ValueError("bits")
                    if values + -(-bits * block[0] * block[1] * block[2] // 32) > len(stream):
                        raise ValueError("values")
                    if table + width > len(stream):
                        raise ValueError("table")
                    lo = [bx * block[0], by * block[1], bz * block[2]]
                    hi = [min(lo[d] + block[d], shape[d]) for d in range(3)]
                    px, py, pz = np.meshgrid(
                        *(np.arange(h - lo_) for lo_, h in zip(lo, hi)), indexing="ij"
                    )
                    pos = (px + block[0] * (py + block[1] * pz)) * bits
                    if bits == 0:
                        idx = np.zeros(pos.shape, np.uint64)
                    else:
                        word = stream[values + (pos >> 5)]
                        idx = (word >> (pos & 31).astype(np.uint64)) & ((1 << bits) - 1)
                    at = table + idx.astype(np.int64) * width
                    if at.size and at.max() + width > len(stream):
                        raise ValueError("index")
                    value = stream[at]
                    if width == 2:
                        value = value | (stream[at + 1] << np.uint64(32))
                    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2], c] = value
    return out


def package_decode(data: bytes, shape, block, dtype, nc) -> np.ndarray:
    """The compressed_segmentation package, one channel at a time."""
    words = np.frombuffer(data, "<u4")
    ends = [*words[1:nc], len(words)]
    out = np.empty((*shape, nc), dtype, order="F")
    for c in range(nc):
        blob = np.concatenate([[1], words[words[c] : ends[c]]]).astype("<u4").tobytes()
        out[..., c] = cs.decompress(blob, shape, dtype, block, order="F")
    return out


@st.composite
def label_chunks(draw, max_side=19):
    """(dtype, block, array (x, y, z, c)): odd sizes, edge blocks, 0-16 bit widths."""
    dtype = np.dtype(draw(st.sampled_from(["uint32", "uint64"])))
    nc = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(3))
    block = tuple(draw(st.integers(1, 8)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = np.iinfo(dtype).max
    distinct = draw(st.sampled_from([1, 2, 3, 4, 5, 16, 17, 200, 256, 257, 600]))
    labels = rng.integers(0, top, distinct, dtype=dtype, endpoint=True)
    array = labels[rng.integers(0, distinct, (*shape, nc))]
    if draw(st.booleans()):  # smooth regions: some blocks of one label
        array[: shape[0] // 2] = labels[0]
    return dtype, block, np.asfortranarray(array)


# -- bit for bit -------------------------------------------------------------------


@SETTINGS
@given(chunk=label_chunks())
def test_matches_package_and_reference(chunk):
    dtype, block, array = chunk
    shape, nc = array.shape[:3], array.shape[3]
    c = codec(dtype, nc, block)
    data = c.encode(array)
    ours = c.decode(data, shape, "chunk")
    assert ours.dtype == dtype and ours.flags.f_contiguous
    np.testing.assert_array_equal(ours, array)
    np.testing.assert_array_equal(ours, package_decode(data, shape, block, dtype, nc))
    np.testing.assert_array_equal(ours, reference_decode(data, shape, block, dtype, nc))


@pytest.mark.parametrize("dtype", ["uint32", "uint64"])
@pytest.mark.parametrize("distinct, bits", [(1, 0), (2, 1), (3, 2), (5, 4), (17, 8), (257, 16)])
def test_every_bit_width(dtype, distinct, bits):
    shape, block = (13, 9, 7), (8, 8, 8)  # one whole block, the rest edge blocks
    rng = np.random.default_rng(distinct)
    labels = rng.integers(0, np.iinfo(dtype).max, distinct, dtype=dtype, endpoint=True)
    labels[0] = np.iinfo(dtype).max
    array = np.zeros((*shape, 2), dtype, order="F")
    for b in np.ndindex(2, 2, 1):  # blocks big enough hold all `distinct` labels
        sl = tuple(slice(i * 8, min(i * 8 + 8, s)) for i, s in zip(b, shape))
        size = tuple(s.stop - s.start for s in sl)
        i = np.arange(int(np.prod(size))).reshape(size)
        if i.size >= distinct:
            array[sl + (0,)] = labels[i % distinct]
            array[sl + (1,)] = labels[(i * 7 + 1) % distinct]
    c = codec(dtype, 2, block)
    data = c.encode(array)
    assert bits in header_bits(data, 2, shape, block)
    np.testing.assert_array_equal(c.decode(data, shape, "chunk"), array)
    np.testing.assert_array_equal(
        c.decode(data, shape, "chunk"), package_decode(data, shape, block, dtype, 2)
    )


def _tensorstore_volume(root: Path, dtype, nc, size, chunk, block, array):
    ts = peers.tensorstore()
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root)},
        "multiscale_metadata": {"type": "segmentation", "data_type": dtype, "num_channels": nc},
        "scale_metadata": {
            "resolution": [1, 1, 1],
            "size": list(size),
            "chunk_size": list(chunk),
            "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": list(block),
        },
    }
    t = ts.open(spec, create=True).result()
    t.write(array).result()
    return ts.open({**spec, "scale_metadata": {}, "multiscale_metadata": {}}, read=True).result()


def test_32_bit_blocks_from_tensorstore(tmp_path):
    """A block of more than 2**16 labels: 32-bit indexes. The package decodes these
    wrongly (its index mask overflows), so tensorstore is the reference."""
    shape, block = (70, 64, 33), (64, 64, 32)
    array = np.arange(np.prod(shape), dtype=np.uint64).reshape(shape, order="F")
    array = (array * 7919 + (1 << 40))[..., None]
    _tensorstore_volume(tmp_path, "uint64", 1, shape, shape, block, array)
    data = (tmp_path / "1_1_1" / "0-70_0-64_0-33").read_bytes()
    assert header_bits(data, 1, shape, block) == {16, 32}
    c = codec("uint64", 1, block)
    np.testing.assert_array_equal(c.decode(data, shape, "chunk"), array)
    np.testing.assert_array_equal(reference_decode(data, shape, block, "uint64", 1), array)
    # A hand-made 32-bit uint32 block: table [10, 20, 30], indexes 2, 0, 1, 2.
    words = np.array([1, 6 | 32 << 24, 2, 2, 0, 1, 2, 10, 20, 30], "<u4").tobytes()
    got = codec("uint32", 1, (2, 2, 1)).decode(words, (2, 2, 1), "chunk")
    assert got.ravel(order="F").tolist() == [30, 10, 20, 30]


@pytest.mark.parametrize(
    "dtype, nc, size, chunk, block",
    [
        ("uint64", 1, (37, 29, 21), (16, 16, 8), (8, 8, 8)),
        ("uint32", 3, (23, 18, 11), (10, 7, 5), (3, 2, 4)),
        ("uint64", 2, (30, 20, 9), (30, 20, 9), (7, 5, 3)),
    ],
)
def test_reads_tensorstore_volumes(tmp_path, dtype, nc, size, chunk, block):
    rng = np.random.default_rng(nc)
    labels = rng.integers(0, np.iinfo(dtype).max, 40, dtype=dtype, endpoint=True)
    array = labels[rng.integers(0, 40, (*size, nc)) % rng.integers(1, 41, (*size, nc))]
    t = _tensorstore_volume(tmp_path, dtype, nc, size, chunk, block, array)
    expected = t.read().result()
    np.testing.assert_array_equal(expected, array)
    ds = xr.open_dataset(tmp_path, engine="precomputed", chunks=None)
    var = next(iter(ds.data_vars))
    np.testing.assert_array_equal(ds[var].values, expected)
    # Windows of chunks decoded straight into the output, and (steps, index lists)
    # through a decoded chunk.
    cases = [
        (dict(x=slice(3, 26), y=slice(1, 17), z=slice(2, 9)), np.s_[3:26, 1:17, 2:9]),
        (dict(x=slice(1, 22, 3), z=[8, 0, 5]), np.s_[1:22:3, :, [8, 0, 5]]),
        (dict(y=5, channel=slice(nc - 1, nc)), np.s_[:, 5, :, nc - 1 : nc]),
        (dict(channel=[nc - 1, 0]), np.s_[:, :, :, [nc - 1, 0]]),
    ]
    for sel, index in cases:
        part = ds[var].isel(sel).values
        np.testing.assert_array_equal(part, expected[index])


# -- windows and destinations ---------------------------------------------------------


@SETTINGS
@given(chunk=label_chunks(max_side=13), data=st.data())
def test_decode_into_windows_and_strided_destinations(chunk, data):
    dtype, block, array = chunk
    shape, nc = array.shape[:3], array.shape[3]
    lo = tuple(data.draw(st.integers(0, s - 1)) for s in shape)
    n = tuple(data.draw(st.integers(1, s - a)) for a, s in zip(lo, shape))
    channels = data.draw(st.lists(st.integers(0, nc - 1), min_size=1, max_size=3))
    order = data.draw(st.sampled_from(["C", "F"]))
    pad = data.draw(st.sampled_from([0, 2]))
    sentinel = np.iinfo(dtype).max
    big = np.full(tuple(k + 2 * pad for k in (*n, len(channels))), sentinel, dtype, order=order)
    inner = tuple(slice(pad, pad + k) for k in (*n, len(channels)))
    dst = big[inner]
    c = codec(dtype, nc, block)
    c.decode_into(c.encode(array), shape, "chunk", dst, lo=lo, channels=channels)
    window = tuple(slice(a, a + k) for a, k in zip(lo, n))
    np.testing.assert_array_equal(dst, array[window][..., channels])
    outside = np.ones(big.shape, bool)
    outside[inner] = False
    assert (big[outside] == sentinel).all()


def test_decode_into_rejects_bad_destinations():
    c = codec("uint64", 1, (2, 2, 2))
    data = c.encode(np.zeros((4, 4, 4, 1), np.uint64))
    with pytest.raises(ValueError, match="does not fit"):
        c.decode_into(data, (4, 4, 4), "c", np.empty((3, 4, 4, 1), np.uint64), lo=(2, 0, 0))
    with pytest.raises(ValueError, match="cannot decode into"):
        c.decode_into(data, (4, 4, 4), "c", np.empty((4, 4, 4, 1), np.uint32))
    with pytest.raises(ValueError, match="positive strides"):
        c.decode_into(data, (4, 4, 4), "c", np.empty((4, 4, 4, 1), np.uint64)[::-1])


def test_unaligned_and_writable_input():
    c = codec("uint64", 2, (3, 3, 3))
    array = np.random.default_rng(5).integers(0, 9, (7, 5, 4, 2)).astype(np.uint64)
    data = c.encode(array)
    shard = bytearray(b"x" + data + b"yz")  # a chunk at an odd offset inside a shard
    np.testing.assert_array_equal(c.decode(memoryview(shard)[1:-2], (7, 5, 4), "c"), array)


# -- corrupt and adversarial input ---------------------------------------------------


def _words(*w):
    return np.array(w, "<u4").tobytes()


@pytest.mark.parametrize(
    "data, shape, block, match, dtype",
    [
        (_words(1, 3 << 24 | 3, 2, 0, 5), (2, 1, 1), (2, 1, 1), "invalid bit width", "uint32"),
        (_words(1, 64 << 24 | 3, 2, 0, 5), (2, 1, 1), (2, 1, 1), "invalid bit width", "uint32"),
        (_words(1, 255 << 24 | 3, 2, 0, 5), (2, 1, 1), (2, 1, 1), "invalid bit width", "uint32"),
        (_words(1, 1 << 24 | 3, 99, 0, 5), (2, 1, 1), (2, 1, 1), "beyond the end", "uint32"),
        (_words(1, 16 << 24 | 3, 4, 0, 5), (2, 1, 1), (2, 1, 1), "beyond the end", "uint32"),
        (_words(1, 0 << 24 | 9, 2, 0, 5), (2, 1, 1), (2, 1, 1), "table beyond", "uint32"),
        (_words(1, 0xFFFFFF, 0xFFFFFFFF), (2, 1, 1), (2, 1, 1), "beyond", "uint32"),
        (_words(1, 1 << 24 | 3, 2), (2, 1, 1), (2, 1, 1), "points beyond the end", "uint32"),
        (_words(1, 1 << 24 | 3, 2, 0b10, 5), (2, 1, 1), (2, 1, 1), "indexes beyond", "uint32"),
        (
            _words(1, 16 << 24 | 3, 2, 0xFFFF0000, 5),
            (2, 1, 1),
            (2, 1, 1),
            "indexes beyond",
            "uint32",
        ),
        (
            _words(1, 32 << 24 | 4, 2, 0, 0xFFFFFFFF, 5),
            (2, 1, 1),
            (2, 1, 1),
            "indexes beyond",
            "uint32",
        ),
        (_words(1, 0, 2), (4, 1, 1), (2, 1, 1), "headers are truncated", "uint32"),
        (_words(1), (1, 1, 1), (1, 1, 1), "headers are truncated", "uint32"),
        (_words(), (1, 1, 1), (1, 1, 1), "truncated", "uint32"),
        (_words(1)[:3], (1, 1, 1), (1, 1, 1), "truncated", "uint32"),
        (_words(2, 0, 2, 0, 5), (1, 1, 1), (1, 1, 1), "channel offsets", "uint32"),
        (_words(1, 0, 2, 0, 5) + b"\0", (1, 1, 1), (1, 1, 1), "truncated", "uint32"),
        # uint64 tables take two words an entry
        (_words(1, 1 << 24 | 3, 2, 0b10, 5, 0), (2, 1, 1), (2, 1, 1), "indexes beyond", "uint64"),
        (_words(1, 0 << 24 | 3, 2, 0, 5), (2, 1, 1), (2, 1, 1), "table beyond", "uint64"),
    ],
)
def test_corrupt_streams_raise(data, shape, block, match, dtype):
    where = "vol/8_8_8/0-2_0-1_0-1"
    with pytest.raises(CorruptDataError, match=match) as excinfo:
        codec(dtype, 1, block).decode(data, shape, where)
    assert where in str(excinfo.value)


def test_bad_channel_tables_raise():
    c = codec("uint32", 2, (2, 2, 2))
    good = np.frombuffer(c.encode(np.ones((2, 2, 2, 2), np.uint32)), "<u4").copy()
    for bad in ([3, good[1]], [2, 999], [2, 1], [2, good[1] + 1]):
        words = good.copy()
        words[:2] = bad
        with pytest.raises(CorruptDataError, match="compressed_segmentation"):
            c.decode(words.tobytes(), (2, 2, 2), "chunk")


@SETTINGS
@given(chunk=label_chunks(max_side=11), data=st.data())
def test_mutated_streams_match_reference_or_raise(chunk, data):
    """Whatever a corrupted stream holds, the decoder agrees with the bounds-checked
    reference: the same labels where both decode, an error where the reference fails."""
    dtype, block, array = chunk
    shape, nc = array.shape[:3], array.shape[3]
    c = codec(dtype, nc, block)
    words = np.frombuffer(c.encode(array), "<u4").copy()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(words) - 1))
        words[i] = data.draw(
            st.one_of(
                st.integers(0, 2**32 - 1),
                st.integers(0, len(words) + 2),
                st.sampled_from(
                    [b << 24 | t for b in (0, 1, 2, 3, 4, 8, 16, 32, 64) for t in (0, 5)]
                ),
            )
        )
    blob = words.tobytes()
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    try:
        expected = reference_decode(blob, shape, block, dtype, nc)
    except (ValueError, IndexError):
        expected = None
    try:
        got = c.decode(blob, shape, "chunk 7")
    except CorruptDataError as e:
        assert "chunk 7" in str(e)
        got = None
    if expected is None:
        assert got is None
    else:
        assert got is not None
        np.testing.assert_array_equal(got, expected)


BOUNDSCHECK_FUZZ = """
import numba.core.caching as caching, numpy as np, sys
(getattr(caching, "CacheImpl", None) or caching._CacheImpl)._locator_classes = []  # compile afresh, with bounds checks
from xarray_precomputed.codecs import get_codec
from xarray_precomputed.errors import CorruptDataError
rng = np.random.default_rng(int(sys.argv[1]))
ok = bad = 0
for it in range(1500):
    dtype = ("uint32", "uint64")[it % 2]
    nc = 1 + it % 3
    shape = tuple(int(n) for n in rng.integers(1, 12, 3))
    block = tuple(int(n) for n in rng.integers(1, 6, 3))
    labels = rng.integers(0, 2**32, int(rng.integers(1, 40))).astype(dtype)
    array = labels[rng.integers(0, len(labels), (*shape, nc))]
    codec = get_codec("compressed_segmentation", np.dtype(dtype), nc, block_size=block)
    words = np.frombuffer(codec.encode(array), "<u4").copy()
    for i in rng.integers(0, len(words), int(rng.integers(0, 4))):
        words[i] = rng.choice([rng.integers(0, 2**32), rng.integers(0, len(words) + 3),
                               int(rng.choice([0, 1, 2, 4, 8, 16, 32, 3, 64])) << 24
                               | int(rng.integers(0, len(words)))])
    blob = words.tobytes()
    if it % 3 == 0:
        blob = blob[: int(rng.integers(0, len(blob)))]
    lo = tuple(int(rng.integers(0, s)) for s in shape)
    n = tuple(int(rng.integers(1, s - a + 1)) for a, s in zip(lo, shape))
    big = np.zeros(tuple(k + 2 for k in n) + (nc,), dtype, order="CF"[it % 2])
    try:
        codec.decode_into(blob, shape, "c", big[1:-1, 1:-1, 1:-1], lo=lo)
        assert not big[0].any() and not big[-1].any() and not big[:, 0].any()
        assert not big[:, -1].any() and not big[:, :, 0].any() and not big[:, :, -1].any()
        ok += 1
    except CorruptDataError:
        bad += 1
# The checks are really compiled in: a destination too small for the box raises.
from xarray_precomputed.codecs import cseg_decode
one = get_codec("compressed_segmentation", np.dtype("uint64"), 1, block_size=(2, 2, 2))
words = np.frombuffer(one.encode(np.ones((4, 4, 4, 1), np.uint64)), "<u4")
try:
    cseg_decode._decode(words, 1, len(words), 4, 4, 4, 2, 2, 2, 0, 0, 0, 4, 4, 4,
                        np.empty(10, np.uint64), 1, 4, 16)
except IndexError:
    print("ok", ok, "corrupt", bad)
"""


def test_fuzz_with_numba_bounds_checks(tmp_path):
    """Corrupt streams, windows and strided destinations, with numba's own bounds
    checking compiled in: an out-of-bounds index would raise IndexError."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", BOUNDSCHECK_FUZZ, "11"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok, corrupt = (int(w) for w in proc.stdout.split()[1::2])
    assert ok > 100 and corrupt > 100


# -- runs without the GIL -------------------------------------------------------------


def _overlaps(work, threads=2, calls=12) -> int:
    """Run ``work()`` ``calls`` times on each of ``threads`` threads, with the GIL handed
    over only when a thread blocks or releases it. Returns how many pairs of calls on
    different threads were in progress at the same time."""
    intervals: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def run(k):
        barrier.wait()
        for _ in range(calls):
            t0 = time_ns()
            work()
            intervals[k].append((t0, time_ns()))

    from time import perf_counter_ns as time_ns

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)  # no forced switches: only GIL-releasing code lets others in
    try:
        pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(old)
    a, b = intervals[0], intervals[1]
    return sum(1 for s0, e0 in a for s1, e1 in b if s0 < e1 and s1 < e0)


def test_decoding_runs_without_the_gil():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2**63, 300, dtype=np.uint64)
    array = np.asfortranarray(labels[rng.integers(0, 300, (128, 128, 64, 1))])
    c = codec("uint64", 1, (8, 8, 8))
    data = c.encode(array)
    out = [np.empty(array.shape, np.uint64, order="F") for _ in range(2)]
    c.decode_into(data, array.shape[:3], "warm-up", out[0])  # compile or load outside the test

    def decode():
        c.decode_into(data, array.shape[:3], "chunk", out[threading.get_ident() % 2])

    def hold_the_gil():  # the control: Python code keeps the GIL while it runs
        sum(range(200_000))

    assert _overlaps(hold_the_gil) == 0
    assert _overlaps(decode) > 0
    np.testing.assert_array_equal(out[0], array)


# -- numba is imported lazily; the on-disk cache is optional ----------------------------

LAZY = """
import sys, numpy as np, xarray as xr
import xarray_precomputed as xp
root = sys.argv[1]
for enc, dtype in [("raw", "uint8"), ("compressed_segmentation", "uint64")]:
    xp.to_precomputed(xr.DataArray(np.arange(64, dtype=dtype).reshape(4, 4, 4),
                      dims=("x", "y", "z")).to_dataset(name="v"), f"{root}/{enc}", encoding=enc, resolution=(1, 1, 1))
for enc in ["raw", "compressed_segmentation"]:
    ds = xr.open_dataset(f"{root}/{enc}", engine="precomputed")
    before = "numba" in sys.modules
    values = ds[next(iter(ds.data_vars))].values
    print(enc, before, "numba" in sys.modules, int(values.sum()))
"""


def test_numba_is_imported_only_to_decode_compressed_segmentation(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", LAZY, str(tmp_path)], capture_output=True, text=True, env=env,
        check=False, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert lines[0] == "raw False False 2016"
    assert lines[1] == "compressed_segmentation False True 2016"


NO_CACHE = """
import numba.core.caching as caching, numpy as np
(getattr(caching, "CacheImpl", None) or caching._CacheImpl)._locator_classes = []  # as if no cache dir were writable
from xarray_precomputed.codecs import get_codec, cseg_decode
codec = get_codec("compressed_segmentation", np.dtype("uint32"), 1, block_size=(2, 2, 2))
a = np.arange(27, dtype=np.uint32).reshape((3, 3, 3, 1))
assert (codec.decode(codec.encode(a), (3, 3, 3), "c") == a).all()
print(cseg_decode._decode._cache.__class__.__name__)
"""


def test_works_without_a_writable_cache_dir(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", NO_CACHE], capture_output=True, text=True, env=env,
        check=False, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "NullCache"


def test_reader_info_roundtrip(tmp_path):
    """A volume written by us is read back through the compiled decoder."""
    import xarray_precomputed as xp

    rng = np.random.default_rng(3)
    data = rng.integers(0, 5, (20, 17, 9, 2)).astype(np.uint32)
    ds = xr.DataArray(data, dims=("x", "y", "z", "channel")).to_dataset(name="seg")
    xp.to_precomputed(
        ds,
        str(tmp_path),
        encoding="compressed_segmentation",
        chunk_size=(8, 8, 4),
        resolution=(4, 4, 40),
    )
    info = json.loads((tmp_path / "info").read_text())
    assert info["scales"][0]["encoding"] == "compressed_segmentation"
    back = xr.open_dataset(tmp_path, engine="precomputed")
    np.testing.assert_array_equal(back[next(iter(back.data_vars))].values, data)
