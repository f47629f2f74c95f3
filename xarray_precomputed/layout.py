"""Copying decoded chunks into arrays of either memory order.

Chunks are stored x-fastest, while the arrays handed to users (and Dask's blocks,
which Dask concatenates into a C-ordered result) are C-ordered. NumPy's assignment
between the two orders copies one strided element at a time; the compiled
``_layout.copy`` transposes in cache-sized tiles without holding the GIL and runs
faster than NumPy's straight copy.
"""

from __future__ import annotations

import mmap

import numpy as np

try:
    from ._layout import copy as _compiled_copy
except ImportError:  # pragma: no cover - a build without a C compiler
    _compiled_copy = None

HAVE_COMPILED_COPY = _compiled_copy is not None


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for arrays of equal shape, whatever their memory orders.

    >>> src = np.arange(24, dtype=np.uint8).reshape(2, 3, 4, order="F")
    >>> dst = np.empty((2, 3, 4), dtype=np.uint8)
    >>> copy_into(dst, src)
    >>> bool((dst == src).all()) and dst.flags.c_contiguous
    True
    """
    if (
        _compiled_copy is not None
        and dst.shape == src.shape
        and dst.dtype == src.dtype
        and not dst.dtype.hasobject
    ):
        _compiled_copy(dst, src)
    else:
        np.copyto(dst, src)


# Measured both ways: Dask blocks (up to ~64 MiB, allocated and freed one after another)
# were faster with NumPy's allocation (huge pages freed by the last block are at hand),
# whole-volume outputs much faster on plain pages.
_PLAIN_PAGES_MIN_BYTES = 256 << 20


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` (C order) for an array that threads fill once.

    Arrays of 256 MiB or more are anonymous memory maps: NumPy asks the kernel for
    transparent huge pages on its large allocations (``madvise(MADV_HUGEPAGE)``), and where
    the kernel then compacts memory to find them (Linux's common ``defrag=madvise``), the
    first touch of each page costs several times more: first-touching 1 GiB took 2.25 s
    with NumPy's allocation and 0.50 s with 4 KiB pages on the test machine. Smaller arrays
    stay NumPy's. The map is freed with the array.

    >>> a = empty((256, 1024, 1024), np.dtype("uint8")); a[:] = 7
    >>> a.flags.c_contiguous and a.flags.writeable and int(a.sum()) == 7 * a.size
    True
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < _PLAIN_PAGES_MIN_BYTES:
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)
