"""The copy between memory orders (layout.copy_into) and the order of what reads return."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from xarray_precomputed import layout

DTYPES = ["uint8", "uint16", "uint32", "uint64", "float32", "int8", "complex128"]


@st.composite
def copy_cases(draw):
    """A source and a destination view of equal shape, each with its own order, offset, steps."""
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 20), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))

    def view(seed):
        steps = tuple(draw(st.lists(st.sampled_from([1, 1, 2, -1, -3]), min_size=ndim,
                                    max_size=ndim)))  # fmt: skip
        base_shape = tuple(n * abs(s) + 3 for n, s in zip(shape, steps))
        base = np.zeros(base_shape, dtype, order=draw(st.sampled_from("CF")))
        lo = [1 if s > 0 else n * abs(s) + 1 for n, s in zip(shape, steps)]
        sel = tuple(
            slice(a, a + n * s, s) if s > 0 else slice(a, a + n * s if a + n * s >= 0 else None, s)
            for a, n, s in zip(lo, shape, steps)
        )
        v = base[sel]
        assert v.shape == shape
        return base, v

    sbase, src = view(0)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    src[...] = rng.integers(0, 100, shape).astype(dtype)
    dbase, dst = view(1)
    return src, dbase, dst


def _check(copy, case):
    src, dbase, dst = case
    before = dbase.copy()
    copy(dst, src)
    np.testing.assert_array_equal(dst, src)
    # nothing outside the destination view was written: undo the view, compare the rest
    dst[...] = 0
    assert not (dbase != before).any(), "copy wrote outside the destination view"


@settings(max_examples=300, deadline=None)
@given(case=copy_cases())
def test_compiled_copy_equals_numpy_assignment(case):
    if not layout.HAVE_COMPILED_COPY:
        pytest.fail("the compiled _layout extension is not built (pip install -e . builds it)")
    _check(layout.copy_into, case)


@settings(max_examples=50, deadline=None)
@given(case=copy_cases())
def test_fallback_copy_equals_numpy_assignment(monkeypatch_module, case):
    _check(layout.copy_into, case)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setattr(layout, "_compiled_copy", None)
    yield mp
    mp.undo()


def test_compiled_copy_checks_shapes():
    if not layout.HAVE_COMPILED_COPY:
        pytest.fail("the compiled _layout extension is not built")
    from xarray_precomputed._layout import copy

    with pytest.raises(ValueError, match="shapes differ on axis 1"):
        copy(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="item size"):
        copy(np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint16))
    readonly = np.zeros((2, 3))
    readonly.setflags(write=False)
    with pytest.raises((ValueError, BufferError)):
        copy(readonly, np.ones((2, 3)))


def test_transposing_uint8_tiles_exactly():
    # 16x16 SIMD tiles plus ragged edges on both plane axes, channel axis of length 1
    rng = np.random.default_rng(1)
    src = np.asfortranarray(rng.integers(0, 256, (37, 5, 50, 1), dtype=np.uint8))
    dst = np.empty(src.shape, np.uint8)
    layout.copy_into(dst, src)
    assert dst.flags.c_contiguous
    np.testing.assert_array_equal(dst, src)


@pytest.mark.parametrize("chunks", [None, {}])
@pytest.mark.parametrize("channels", [1, 3])
def test_reads_return_c_ordered_arrays(tmp_path, chunks, channels):
    """Eager reads and Dask results come back C-ordered, whatever the selection."""
    import xarray_precomputed as xp

    rng = np.random.default_rng(channels)
    data = rng.integers(0, 256, (70, 40, 30, channels), dtype=np.uint8)
    src = xr.DataArray(data, dims=("x", "y", "z", "channel"), name="image")
    xp.to_precomputed(src, tmp_path / "v", chunk_size=(16, 16, 8), sharding={
        "@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 2, "hash": "identity",
        "minishard_bits": 1, "shard_bits": 6, "minishard_index_encoding": "raw",
        "data_encoding": "raw"}, resolution=(4, 4, 40))  # fmt: skip
    ds = xr.open_dataset(tmp_path / "v", engine="precomputed", chunks=chunks)
    with dask.config.set(scheduler="threads"):
        for sel in ({}, {"x": slice(5, 61), "z": slice(3, 29)}, {"y": slice(2, 30, 3)}):
            got = ds.image.isel(sel).values
            assert got.flags.c_contiguous, sel
            np.testing.assert_array_equal(got, data[tuple(sel.get(d, slice(None)) for d in "xyz")])
        loaded = ds.image.isel(x=slice(10, 50)).load()
        assert loaded.values.flags.c_contiguous
        np.testing.assert_array_equal(loaded.values, data[10:50])
