"""Copying decoded chunks into arrays of either memory order.

Chunks are stored x-fastest, while the arrays handed to users (and Dask's blocks,
which Dask concatenates into a C-ordered result) are C-ordered. NumPy's assignment
between the two orders copies one strided element at a time; the compiled
``_layout.copy`` transposes in cache-sized tiles without holding the GIL and runs
faster than NumPy's straight copy.
"""

from __future__ import annotations

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
