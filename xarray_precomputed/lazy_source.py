"""Which precomputed volume lazily read data still comes from.

``mode="w"`` deletes the old volume before the data is computed, so the writer
refuses to write a volume's own lazy data back to its URL (it would read chunks
that are gone); Neuroglancer links find the volume a DataArray shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dask.highlevelgraph import MaterializedLayer

from .reader import ScaleReader


def _unwrap(value: Any) -> ScaleReader | None:
    """The ScaleReader inside xarray's indexing adapters and the backend array, if any."""
    for _ in range(8):
        if value is None or isinstance(value, ScaleReader):
            return value
        inner = getattr(value, "array", None)
        value = inner if inner is not None else getattr(value, "reader", None)
    return None


def _graph_readers(data: Any) -> Iterator[ScaleReader]:
    """The readers in a Dask array's graph.

    xarray puts the lazily indexed source array in a small materialised layer named
    ``original-...``; Blockwise layers are not looked into (that would build them).
    """
    graph = getattr(data, "__dask_graph__", lambda: None)()
    for layer in getattr(graph, "layers", {}).values():
        if not isinstance(layer, MaterializedLayer) or len(layer) > 64:
            continue
        for value in layer.values():
            reader = _unwrap(value)
            if reader is not None:
                yield reader


def source_reader(array: Any) -> ScaleReader | None:
    """The reader a lazily read DataArray or Variable still reads from, if any
    (through xarray's lazy indexing wrappers, or in its Dask graph)."""
    variable = getattr(array, "variable", array)
    reader = _unwrap(getattr(variable, "_data", None))
    if reader is not None:
        return reader
    return next(_graph_readers(getattr(variable, "data", None)), None)


def reads_from(data: Any, url: str | None) -> bool:
    """Whether a Dask array's graph reads from the precomputed volume at ``url``
    (from any precomputed volume when ``url`` is None)."""
    return any(url is None or r.store.url == url for r in _graph_readers(data))
