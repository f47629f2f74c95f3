"""How a precomputed scale maps onto xarray: dimension names and scale keys.

Every module that builds or reads a labelled array (backend, writer, pyramid)
takes these facts from here.
"""

from __future__ import annotations

from collections.abc import Sequence

DIMS = ("x", "y", "z", "channel")
SPATIAL_DIMS = DIMS[:3]


def resolution_key(resolution: Sequence[float]) -> str:
    """The conventional scale key of a resolution: its nm values joined by ``_``.

    >>> resolution_key((8, 8, 40.0)), resolution_key((4.5, 4, 4))
    ('8_8_40', '4.5_4_4')
    """
    return "_".join(str(int(r)) if float(r).is_integer() else str(r) for r in resolution)
