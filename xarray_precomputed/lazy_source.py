"""Whether data to be written is still read lazily from a precomputed volume.

``mode="w"`` deletes the old volume before the data is computed, so writing a
volume's own lazy data back to its URL would read chunks that are gone.
"""

from __future__ import annotations

from typing import Any

from dask.highlevelgraph import MaterializedLayer

from .reader import ScaleReader


def reads_from(data: Any, url: str | None) -> bool:
    """Whether a Dask array's graph reads from the precomputed volume at ``url``
    (from any precomputed volume when ``url`` is None).

    xarray puts the lazily indexed source array in a small materialised layer named
    ``original-...``; Blockwise layers are not looked into (that would build them).
    """
    graph = getattr(data, "__dask_graph__", lambda: None)()
    for layer in getattr(graph, "layers", {}).values():
        if not isinstance(layer, MaterializedLayer) or len(layer) > 64:
            continue
        for value in layer.values():
            for _ in range(8):  # unwrap xarray's indexing adapters, then the backend array
                if isinstance(value, ScaleReader):
                    if url is None or value.store.url == url:
                        return True
                    break
                inner = getattr(value, "array", None)
                value = inner if inner is not None else getattr(value, "reader", None)
    return False
