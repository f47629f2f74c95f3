"""Sharded format: Morton codes, hashing, shard geometry and shard files (docs/format.md §4 and §5).

Oracles: a straightforward reference implementation of the spec's pseudo-code,
cloud-volume's ``compressed_morton_code`` / ``ShardingSpecification`` /
``synthesize_shard_file`` / ``ShardReader``, tensorstore-written shard files, and the
worked examples E1-E3 of docs/format.md §7 (exact numbers and bytes).
"""

from __future__ import annotations

import itertools
import struct
import types

import mmh3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarray_precomputed.chunk_grid import (
    compressed_morton_bits,
    minishard_box_chunks,
    morton_bit_dims,
    morton_decode,
    morton_encode,
    shard_box_chunks,
)
from xarray_precomputed.codecs import get_codec
from xarray_precomputed.errors import CorruptDataError
from xarray_precomputed.metadata import ShardingSpec
from xarray_precomputed.sharding import (
    decode_chunk_data,
    decode_minishard_index,
    encode_shard,
    lookup,
    parse_shard_index,
    read_shard_chunks,
    shard_and_minishard,
    shard_index_size,
    shard_key,
)
from xarray_precomputed.testing import strategies as pst

from . import peers
from .helpers import sharding_dict

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_of(pre, mini, shard, hash="identity", mi_enc="raw", data_enc="raw") -> ShardingSpec:
    d = sharding_dict(pre, mini, shard, hash=hash, mi_enc=mi_enc, data_enc=data_enc)
    return ShardingSpec.from_json(d)


@pytest.fixture(scope="module")
def cv():
    """cloud-volume's sharding and Morton code modules (a peer): tests using them skip
    without cloud-volume."""
    sharding = pytest.importorskip("cloudvolume.datasource.precomputed.sharding")
    common = pytest.importorskip("cloudvolume.datasource.precomputed.common")
    return types.SimpleNamespace(sharding=sharding, common=common)


def cv_spec(cv, spec: ShardingSpec):
    return cv.sharding.ShardingSpecification(
        type="neuroglancer_uint64_sharded_v1",
        preshift_bits=spec.preshift_bits,
        hash=spec.hash,
        minishard_bits=spec.minishard_bits,
        shard_bits=spec.shard_bits,
        minishard_index_encoding=spec.minishard_index_encoding,
        data_encoding=spec.data_encoding,
    )


def ref_morton(cell, grid) -> int:
    """Spec 4.1 pseudo-code, verbatim."""
    bits = [int(n - 1).bit_length() for n in grid]
    out = j = 0
    for i in range(max(bits)):
        for d in range(3):
            if i < bits[d]:
                out |= ((int(cell[d]) >> i) & 1) << j
                j += 1
    return out


def ref_location(chunk_id: int, spec: ShardingSpec) -> tuple[int, int]:
    """Spec 4.2 pseudo-code: (shard, minishard)."""
    h = chunk_id >> spec.preshift_bits if spec.preshift_bits < 64 else 0
    if spec.hash == "murmurhash3_x86_128":
        h = mmh3.hash128(struct.pack("<Q", h), seed=0, x64arch=False) & (2**64 - 1)
    return (h >> spec.minishard_bits) & ((1 << spec.shard_bits) - 1), h & (
        (1 << spec.minishard_bits) - 1
    )


def all_cells(grid) -> np.ndarray:
    return np.array(list(itertools.product(*(range(g) for g in grid))), dtype=np.int64)


# -- compressed Morton codes ---------------------------------------------------------


@FAST
@given(st.data())
def test_morton_roundtrip_and_reference(cv, data):
    grid = data.draw(pst.grid_shapes(max_side=2**20))
    cells = data.draw(pst.grid_cells(grid))
    ids = morton_encode(cells, grid)
    assert ids.dtype == np.uint64
    np.testing.assert_array_equal(morton_decode(ids, grid), cells)
    assert [int(i) for i in ids] == [ref_morton(c, grid) for c in cells]
    # cloud-volume's implementation (grid coordinates are uint32 there).
    theirs = np.atleast_1d(cv.common.compressed_morton_code(cells, grid))
    np.testing.assert_array_equal(theirs.astype(np.uint64), ids)
    # Codes are dense: they fit in sum(bits) bits.
    assert int(ids.max()) < 2 ** sum(compressed_morton_bits(grid))


@MEDIUM
@given(pst.grid_shapes(max_side=12, max_cells=300))
def test_morton_is_a_bijection_on_small_grids(grid):
    cells = all_cells(grid)
    ids = morton_encode(cells, grid)
    assert len(np.unique(ids)) == len(cells)
    np.testing.assert_array_equal(morton_decode(ids, grid), cells)


def test_morton_64_bit_grid():
    grid = (2**21, 2**21, 2**22)  # 21 + 21 + 22 = 64 bits
    assert sum(compressed_morton_bits(grid)) == 64
    cells = np.array([[2**21 - 1, 2**21 - 1, 2**22 - 1], [1, 0, 2**21]], dtype=np.int64)
    ids = morton_encode(cells, grid)
    assert int(ids[0]) == 2**64 - 1
    assert [int(i) for i in ids] == [ref_morton(c, grid) for c in cells]
    np.testing.assert_array_equal(morton_decode(ids, grid), cells)


def test_e1_worked_example(cv):
    """Spec 7, E1: grid (5, 3, 8)."""
    grid = (5, 3, 8)
    assert compressed_morton_bits(grid) == (3, 2, 3)
    assert morton_bit_dims(grid) == [0, 1, 2, 0, 1, 2, 0, 2]
    assert int(morton_encode(np.array([[3, 1, 2]]), grid)[0]) == 43
    first = {
        0: (0, 0, 0),
        1: (1, 0, 0),
        2: (0, 1, 0),
        3: (1, 1, 0),
        4: (0, 0, 1),
        8: (2, 0, 0),
        9: (3, 0, 0),
    }
    decoded = morton_decode(np.array(sorted(first), dtype=np.uint64), grid)
    assert [tuple(c) for c in decoded.tolist()] == [first[k] for k in sorted(first)]
    # All 120 cells agree with cloud-volume.
    cells = all_cells(grid)
    np.testing.assert_array_equal(
        morton_encode(cells, grid), cv.common.compressed_morton_code(cells, grid)
    )
    # The verified shard file: chunk 1^3 uint16, one shard, raw: 16 + 240 + 2880 bytes.
    spec = spec_of(0, 0, 0)
    codec = get_codec("raw", np.dtype("uint16"), 1)
    ids = morton_encode(cells, grid)
    chunks = {
        int(i): codec.encode(np.full((1, 1, 1, 1), k, dtype=np.uint16)) for k, i in enumerate(ids)
    }
    shard = encode_shard(chunks, spec)
    assert len(shard) == 3136
    assert struct.unpack("<QQ", shard[:16]) == (0xF0, 0xC30)


# -- hashing, shard and minishard numbers --------------------------------------------

E2_ROWS = [
    # chunk id, identity (minishard, shard), murmur low64(h_in), murmur (minishard, shard)
    (0, (0, 0), 0x4772B084E028AE41, (1, 0)),
    (2, (1, 0), 0xE8BD67D616D4CE9A, (2, 6)),
    (43, (1, 5), 0xA05CB26366BAC2CF, (3, 3)),
    (1000, (0, 5), 0x5A4C8F612E36FE74, (0, 5)),
    (123456789, (2, 2), 0x2D199754D234FCA6, (2, 1)),
    (2**63 + 5, (2, 0), 0x77EDC3AB30189215, (1, 5)),
]


@pytest.mark.parametrize("chunk_id, ident, murmur64, murmur", E2_ROWS)
def test_e2_worked_example(chunk_id, ident, murmur64, murmur):
    """Spec 7, E2: preshift 1, minishard 2, shard 3."""
    ids = np.array([chunk_id], dtype=np.uint64)
    for hash_, (ms, sh) in (("identity", ident), ("murmurhash3_x86_128", murmur)):
        spec = spec_of(1, 2, 3, hash_, "gzip", "gzip")
        shard, minishard = shard_and_minishard(ids, spec)
        assert (int(minishard[0]), int(shard[0])) == (ms, sh), hash_
        assert shard_key(int(shard[0]), spec) == f"{sh}.shard"
    h_in = chunk_id >> 1
    low64 = mmh3.hash128(struct.pack("<Q", h_in), seed=0, x64arch=False) & (2**64 - 1)
    assert low64 == murmur64
    hashed = shard_and_minishard(ids, spec_of(1, 32, 32, "murmurhash3_x86_128"))
    assert (int(hashed[0][0]) << 32) | int(hashed[1][0]) == murmur64


@FAST
@given(
    pst.sharding_specs(max_preshift=63, max_minishard=32, max_shard=32),
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20),
)
def test_shard_and_minishard_match_reference_and_cloudvolume(cv, spec, ids):
    shard, minishard = shard_and_minishard(np.array(ids, dtype=np.uint64), spec)
    theirs = cv_spec(cv, spec)
    for i, s, m in zip(ids, shard, minishard):
        assert (int(s), int(m)) == ref_location(i, spec)
        loc = theirs.compute_shard_location(i)
        assert int(loc.minishard_number) == int(m)
        # cloud-volume gives the shard number as the file-name stem.
        assert loc.shard_number + ".shard" == shard_key(int(s), spec)
        assert int(loc.shard_number, 16) == int(s)


def test_preshift_64_hashes_zero():
    spec = spec_of(64, 2, 3)
    shard, minishard = shard_and_minishard(np.array([2**64 - 1, 12345], dtype=np.uint64), spec)
    assert shard.tolist() == [0, 0] and minishard.tolist() == [0, 0]


@pytest.mark.parametrize(
    "shard, bits, name",
    [
        (0, 0, "0.shard"),
        (10, 5, "0a.shard"),
        (10, 9, "00a.shard"),
        (5, 3, "5.shard"),
        (0xABC, 12, "abc.shard"),
    ],
)
def test_shard_key(shard, bits, name):
    assert shard_key(shard, spec_of(0, 0, bits)) == name


# -- shard geometry (docs/format.md §5.1) -------------------------------------------------------


@pytest.mark.parametrize(
    "pre, mini, shard, hash_, box",
    [
        (1, 2, 5, "identity", (2, 2, 2)),
        (1, 2, 3, "identity", None),
        (1, 2, 5, "murmurhash3_x86_128", None),
        (0, 3, 5, "identity", (2, 2, 2)),
        (2, 2, 4, "identity", (4, 2, 2)),
        (6, 0, 2, "identity", (4, 3, 4)),
    ],
)
def test_shard_box_worked_examples(pre, mini, shard, hash_, box):
    """Spec 5.1 (exp10/exp17): grid (5, 3, 8)."""
    assert shard_box_chunks((5, 3, 8), spec_of(pre, mini, shard, hash_)) == box


def test_shard_box_exp17_shard_5():
    """With pre1/mini2/shard5, shard 5 holds exactly x in [2,4), y in [0,2), z in [2,4)
    and its minishards are x-pairs."""
    grid, spec = (5, 3, 8), spec_of(1, 2, 5)
    cells = all_cells(grid)
    shard, minishard = shard_and_minishard(morton_encode(cells, grid), spec)
    in5 = cells[shard == 5]
    assert sorted(map(tuple, in5.tolist())) == [
        (x, y, z) for x in (2, 3) for y in (0, 1) for z in (2, 3)
    ]
    assert minishard_box_chunks(grid, spec) == (2, 1, 1)
    n_shards = len(np.unique(shard))
    assert n_shards == 24  # = prod(ceil(grid / box)) = 3 * 2 * 4


def _shard_sets(grid, spec, with_minishard=False):
    cells = all_cells(grid)
    shard, minishard = shard_and_minishard(morton_encode(cells, grid), spec)
    labels = shard.astype(object)
    if with_minishard:
        labels = np.array([(int(s), int(m)) for s, m in zip(shard, minishard)], dtype=object)
    groups: dict = {}
    for cell, label in zip(map(tuple, cells.tolist()), labels.tolist()):
        groups.setdefault(label if not isinstance(label, list) else tuple(label), []).append(cell)
    return groups


def _is_box(cells) -> bool:
    a = np.array(cells)
    lo, hi = a.min(axis=0), a.max(axis=0) + 1
    return int(np.prod(hi - lo)) == len(cells)


def _check_box_partition(grid, groups, box):
    """Every group is exactly one grid-aligned box of shape ``box`` (clipped)."""
    seen = set()
    for cells in groups.values():
        origin = tuple(c // b * b for c, b in zip(cells[0], box))
        assert origin not in seen, "two shards share a box"
        seen.add(origin)
        expected = set(
            itertools.product(*(range(o, min(o + b, g)) for o, b, g in zip(origin, box, grid)))
        )
        assert set(cells) == expected
    n_boxes = int(np.prod([-(-g // b) for g, b in zip(grid, box)]))
    assert len(seen) == n_boxes


@settings(max_examples=400, deadline=None)
@given(
    pst.grid_shapes(max_side=16, max_cells=256),
    pst.sharding_specs(hashes=("identity",), max_preshift=5, max_minishard=4, max_shard=6),
)
def test_shard_box_chunks_brute_force_identity(grid, spec):
    """For identity hashing, a box is claimed exactly when every shard's chunk set is an
    axis-aligned box, and then the boxes partition the grid with the claimed shape."""
    groups = _shard_sets(grid, spec)
    box = shard_box_chunks(grid, spec)
    all_boxes = all(_is_box(c) for c in groups.values())
    assert (box is not None) == all_boxes, (grid, spec, box)
    if box is not None:
        assert all(1 <= b <= g for b, g in zip(box, grid))
        _check_box_partition(grid, groups, box)
    mbox = minishard_box_chunks(grid, spec)
    mgroups = _shard_sets(grid, spec, with_minishard=True)
    if mbox is not None:
        _check_box_partition(grid, mgroups, mbox)
        assert all(b % m == 0 or b == g for b, m, g in zip(box, mbox, grid))


@MEDIUM
@given(
    pst.grid_shapes(max_side=16, max_cells=256), pst.sharding_specs(hashes=("murmurhash3_x86_128",))
)
def test_shard_box_chunks_murmur_is_never_a_box(grid, spec):
    assert shard_box_chunks(grid, spec) is None
    assert minishard_box_chunks(grid, spec) is None


# -- shard files -----------------------------------------------------------------------


def _decode_via_index(shard: bytes, spec: ShardingSpec, ids):
    """Look chunks up the way a reader does: shard index -> minishard index -> bytes."""
    isize = shard_index_size(spec)
    index = parse_shard_index(shard[:isize], spec, "test")
    _, minishards = shard_and_minishard(np.array(ids, dtype=np.uint64), spec)
    out = {}
    for cid, m in zip(ids, minishards):
        s, e = (int(v) for v in index[int(m)])
        mindex = decode_minishard_index(shard[s:e], spec, "test")
        found, starts, ends = lookup(np.array([cid], dtype=np.uint64), mindex)
        assert found[0]
        out[cid] = decode_chunk_data(shard[int(starts[0]) : int(ends[0])], spec, 10**6, "test")
    return out


def _cv_reader(cv, spec: ShardingSpec):
    reader = cv.sharding.ShardReader.__new__(cv.sharding.ShardReader)
    reader.spec = cv_spec(cv, spec)
    return reader


@MEDIUM
@given(pst.sharding_specs(max_minishard=4), pst.chunk_dicts())
def test_encode_read_shard_roundtrip(cv, spec, chunks):
    shard = encode_shard(chunks, spec)
    got = dict(read_shard_chunks(shard, spec, "test"))
    assert got == chunks
    assert _decode_via_index(shard, spec, list(chunks)) == chunks
    # cloud-volume reads our shards ...
    assert _cv_reader(cv, spec).disassemble_shard(shard) == chunks
    # ... and we read cloud-volume's layout (all data, then all minishard indexes).
    cv_shard = cv.sharding.synthesize_shard_file(cv_spec(cv, spec), dict(chunks))
    assert dict(read_shard_chunks(cv_shard, spec, "test")) == chunks
    # Only the minishards that hold chunks have non-empty index ranges.
    index = parse_shard_index(shard[: shard_index_size(spec)], spec, "test")
    _, minishards = shard_and_minishard(np.array(list(chunks), dtype=np.uint64), spec)
    nonempty = {m for m in range(len(index)) if index[m, 0] != index[m, 1]}
    assert nonempty == {int(m) for m in minishards}


@MEDIUM
@given(pst.sharding_specs(max_minishard=3), pst.chunk_dicts(max_chunks=6), st.data())
def test_truncated_shard_is_detected(spec, chunks, data):
    shard = encode_shard(chunks, spec)
    cut = data.draw(st.integers(0, len(shard) - 1))
    # Reading a truncated shard could only "succeed" if nothing was lost, which cannot
    # happen: the last byte belongs to a minishard index.
    with pytest.raises(CorruptDataError):
        dict(read_shard_chunks(shard[:cut], spec, "test"))


def test_e3_worked_example_bytes(tmp_path):
    """Spec 7, E3: uint8 4^3, chunk 2^3, value x + 4y + 16z, identity pre1/mini1/shard1."""
    listing = """
    10 00 00 00 00 00 00 00 40 00 00 00 00 00 00 00
    50 00 00 00 00 00 00 00 80 00 00 00 00 00 00 00
    00 01 04 05 10 11 14 15 02 03 06 07 12 13 16 17
    00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    08 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00
    08 09 0c 0d 18 19 1c 1d 0a 0b 0e 0f 1a 1b 1e 1f
    02 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00
    40 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    08 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00
    """
    expected = bytes.fromhex(listing)
    assert len(expected) == 160
    x, y, z = np.meshgrid(np.arange(4), np.arange(4), np.arange(4), indexing="ij")
    volume = (x + 4 * y + 16 * z).astype(np.uint8)[..., None]
    grid, spec = (2, 2, 2), spec_of(1, 1, 1)
    codec = get_codec("raw", np.dtype("uint8"), 1)
    cells = all_cells(grid)
    ids = morton_encode(cells, grid)
    shard_of, minishard_of = shard_and_minishard(ids, spec)
    # id = x | y << 1 | z << 2, minishard = y, shard = z
    assert ids.tolist() == [c[0] | c[1] << 1 | c[2] << 2 for c in cells.tolist()]
    assert minishard_of.tolist() == cells[:, 1].tolist()
    assert shard_of.tolist() == cells[:, 2].tolist()
    chunks = {
        int(i): codec.encode(
            volume[2 * c[0] : 2 * c[0] + 2, 2 * c[1] : 2 * c[1] + 2, 2 * c[2] : 2 * c[2] + 2]
        )
        for c, i, s in zip(cells.tolist(), ids, shard_of)
        if s == 0
    }
    assert encode_shard(chunks, spec) == expected
    assert shard_box_chunks(grid, spec) == (2, 2, 1)
    # tensorstore writes the identical file.
    ts = peers.tensorstore()
    root = tmp_path / "tiny"
    t = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(root)},
            "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
            "scale_metadata": {
                "resolution": [4, 4, 40],
                "size": [4, 4, 4],
                "chunk_size": [2, 2, 2],
                "encoding": "raw",
                "sharding": {**spec.to_json()},
            },
        },
        create=True,
    ).result()
    t.write(volume).result()
    assert (root / "4_4_40" / "0.shard").read_bytes() == expected


def test_decode_chunk_data_gzip_bomb():
    import gzip

    spec = spec_of(0, 0, 0, data_enc="gzip")
    bomb = gzip.compress(bytes(10**6))
    assert len(bomb) < 2000
    with pytest.raises(CorruptDataError, match="expands beyond"):
        decode_chunk_data(bomb, spec, 1000, "shard chunk 7")
    assert decode_chunk_data(bomb, spec, 10**6, "x") == bytes(10**6)
    # A raw data_encoding passes bytes through untouched.
    assert decode_chunk_data(bomb, spec_of(0, 0, 0), 10, "x") == bomb


@pytest.mark.parametrize("mutation", ["not24", "end_before_start", "index_short"])
def test_corrupt_indexes(mutation):
    spec = spec_of(0, 1, 0)
    shard = bytearray(encode_shard({0: b"abc", 1: b"de", 2: b"f"}, spec))
    if mutation == "not24":
        # Make minishard 0's index one byte longer.
        start, end = struct.unpack_from("<QQ", shard, 0)
        struct.pack_into("<QQ", shard, 0, start, end + 1)
        match = "multiple of 24"
    elif mutation == "end_before_start":
        start, end = struct.unpack_from("<QQ", shard, 16)
        struct.pack_into("<QQ", shard, 16, end, start)
        match = "end before start"
    else:
        shard = shard[:20]
        match = "shard index"
    with pytest.raises(CorruptDataError, match=match):
        dict(read_shard_chunks(bytes(shard), spec, "test"))
