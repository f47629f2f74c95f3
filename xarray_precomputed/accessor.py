"""``.precomputed`` accessors on Dataset, DataArray and DataTree.

>>> # ds.precomputed.to_precomputed("gs://bucket/out", encoding="jpeg")
>>> # small = ds.precomputed.downsample((2, 2, 1))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xarray as xr


class _Accessor:
    def __init__(self, obj: Any):
        self._obj = obj

    def to_precomputed(self, url: str, **kwargs: Any) -> Any:
        """Write as a precomputed volume; see :func:`xarray_precomputed.to_precomputed`."""
        from .writer import to_precomputed

        return to_precomputed(self._obj, url, **kwargs)


@xr.register_dataset_accessor("precomputed")
@xr.register_dataarray_accessor("precomputed")
class PrecomputedAccessor(_Accessor):
    """``ds.precomputed.to_precomputed(url)``, ``.downsample(factors)`` and ``.neuroglancer_url()``."""

    def downsample(
        self, factors: Sequence[int] = (2, 2, 1), method: str | None = None, **kwargs: Any
    ) -> Any:
        """The next scale; see :func:`xarray_precomputed.downsample`."""
        from .pyramid import downsample

        return downsample(self._obj, factors, method, **kwargs)

    def neuroglancer_url(self, *others: Any, **kwargs: Any) -> str:
        """A Neuroglancer link to this volume (and ``others``), centred on this selection;
        see :func:`xarray_precomputed.neuroglancer_url`.

        >>> # print(ds.image.isel(z=slice(10, 20)).precomputed.neuroglancer_url())
        """
        from .neuroglancer import neuroglancer_url

        return neuroglancer_url(self._obj, *others, **kwargs)


@xr.register_datatree_accessor("precomputed")
class PrecomputedTreeAccessor(_Accessor):
    """``tree.precomputed.to_precomputed(url)`` writes every child as a scale."""
