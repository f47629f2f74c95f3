"""``to_precomputed``: write xarray/Dask data as a precomputed volume.

The plan is made and checked in the calling process (:mod:`.write_plan`); when
computed, one task writes the ``info``, and after it one task per shard (or per group of whole
chunks when unsharded, :mod:`.write_graph`) encodes its chunks and stores each
object with a single put (:mod:`.write_tasks`). No two tasks write the same
object; a shard only partly covered by the data is read, merged and rewritten
by the one task that owns it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import dask
import xarray as xr

from .chunk_grid import scattered_shards
from .errors import VolumeExistsError, WriteError
from .inputs import volume_array
from .lazy_source import reads_from
from .metadata import VolumeInfo
from .progress import compute as compute_with_progress
from .resume import ResumingStore, same_info
from .scale_plan import DEFAULT_SHARD_BYTES
from .shard_graph import two_stage_graph
from .storage import Store
from .write_graph import TASK_PREFIX, write_graph
from .write_plan import Mode, plan_tree_write, plan_write, read_existing_info
from .write_waves import count_waves, waves

INFO_TASK_PREFIX = "precomputed-info-"  # key prefix of the task writing the info


def to_precomputed(
    obj: xr.Dataset | xr.DataArray | xr.DataTree,
    url: str,
    *,
    mode: Mode = "w-",
    chunk_size: Sequence[int] | None = None,
    encoding: str | None = None,
    sharding: str | Mapping[str, Any] | None = "auto",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    compressed_segmentation_block_size: Sequence[int] | None = None,
    jpeg_quality: int | None = None,
    png_level: int | None = None,
    resolution: Sequence[float] | None = None,
    voxel_offset: Sequence[int] | None = None,
    type: str | None = None,
    scale_key: str | None = None,
    region: str | Mapping[str, slice] | None = None,
    variable: Hashable | None = None,
    write_empty_chunks: bool = False,
    storage_options: dict[str, Any] | None = None,
    compute: bool = True,
    progress: bool = False,
    resume: bool = False,
    max_tasks: int | None = None,
) -> Any:
    """Write ``obj`` as a Neuroglancer precomputed volume at ``url``.

    ``obj`` is a DataArray or Dataset with dims ``x, y, z`` and optionally
    ``channel`` (any order), NumPy or Dask backed, or a DataTree whose children
    become the scales. Geometry comes from the ``x/y/z`` coordinates (nm at voxel
    centres, as the reader makes them) unless ``resolution``/``voxel_offset`` are
    given. Options not given are taken from the attrs the reader sets (so an
    opened volume round-trips), then from defaults: 64^3 chunks, ``raw``,
    ``sharding="auto"`` (identity-hash shards that are boxes of about
    ``shard_bytes`` uncompressed bytes).

    Modes: ``"w-"`` create, failing if a volume exists; ``"w"`` replace;
    ``"a"`` add a scale to an existing volume; ``"r+"`` write into an existing
    scale, at ``region`` (``"auto"``: from the coordinates; or a mapping of dim
    to ``slice`` of array indices of that scale).

    ``resume=True`` continues a write that was killed or failed part-way: run the same
    call again and every object already stored with the bytes it would get is left
    alone (compared by size and content, or the S3 ETag / GCS MD5), so only what is
    missing or different is put; with ``mode="w-"`` an existing ``info`` equal to the
    one being written is accepted, and ``mode="w"`` then deletes nothing.

    ``max_tasks`` bounds the graph: the write is cut at shard boxes into waves of at most
    that many write tasks, each a graph of its own computed after the previous one (for
    volumes of millions of shards, whose one graph would not fit on a client or scheduler;
    ``compute=True`` only). The ``info`` is written first; a failed wave leaves the waves
    before it stored, and the same call with ``resume=True`` continues.

    Returns the number of objects written (``compute=True``) or a
    ``dask.delayed`` object that writes when computed: until then nothing is
    written or deleted, then the ``info`` first and the data next. ``progress=True`` shows a
    bar counting the written shards (or chunk groups) with an estimate of the
    time left; on a dask.distributed Client, ``distributed.progress`` instead.

    >>> import numpy as np, xarray as xr, tempfile
    >>> a = xr.DataArray(np.ones((64, 64, 8), "uint8"), dims=("x", "y", "z"), name="image",
    ...                  coords={"x": np.arange(64) * 4.0 + 2, "y": np.arange(64) * 4.0 + 2,
    ...                          "z": np.arange(8) * 40.0 + 20})
    >>> url = tempfile.mkdtemp() + "/vol"
    >>> to_precomputed(a, url, chunk_size=(32, 32, 8))
    1
    >>> float(xr.open_dataset(url, engine="precomputed").image.mean())
    1.0
    """
    options = dict(
        chunk_size=chunk_size,
        encoding=encoding,
        sharding=sharding,
        shard_bytes=shard_bytes,
        compressed_segmentation_block_size=compressed_segmentation_block_size,
        jpeg_quality=jpeg_quality,
        png_level=png_level,
        resolution=resolution,
        voxel_offset=voxel_offset,
        type=type,
        variable=variable,
    )
    if mode not in ("w-", "w", "a", "r+"):
        raise WriteError(f"mode must be 'w-', 'w', 'a' or 'r+', not {mode!r}")
    store = (ResumingStore if resume else Store)(url, storage_options)
    plan_mode = mode
    if resume and mode == "w-" and store.exists("info"):
        plan_mode = "w"  # a run of this same write left its info: continue it (checked below)
    if isinstance(obj, xr.DataTree):
        arrays = [(name, volume_array(node.to_dataset(), variable)) for name, node in
                  obj.children.items() if node.has_data]  # fmt: skip
        if not arrays:
            raise WriteError("the DataTree has no child with data to write as a scale")
        if region is not None or mode == "r+":
            raise WriteError(
                "a DataTree is written whole: use mode 'w-', 'w' or 'a' without region"
            )
        plans, info = plan_tree_write(store, arrays, plan_mode, options, scale_key)
    else:
        array = volume_array(obj, variable)
        plan, info = plan_write(store, array, plan_mode, options, scale_key, region)
        plans = [plan]
    resuming = resume and plan_mode == "w" and same_info(store, info)
    if plan_mode != mode and not resuming:
        raise VolumeExistsError(
            f"a different volume already exists at {store.url}: resume=True continues only "
            "the same write (same data layout and info); use mode='w' to replace it"
        )
    if resuming:
        plan_mode = "r+"  # keep what is stored; the info is already there
    if plan_mode == "w" and any(reads_from(p.array.data, store.url) for p in plans):
        raise WriteError(
            f"the data is read lazily from {store.url}, which mode='w' would delete before "
            "reading it; write to another URL, or use mode='r+' to update it in place"
        )
    if max_tasks is not None:
        if not compute:
            raise WriteError("max_tasks writes wave after wave: it needs compute=True")
        return _write_in_waves(store, info, plans, plan_mode, write_empty_chunks, progress,
                               max_tasks)  # fmt: skip
    # The info write (and mode="w"'s removal of the old scales) is a task every
    # write task depends on: nothing is stored before the graph is computed, and
    # then the info comes first.
    token = dask.base.tokenize(store.url, info.to_json(), plan_mode, [p.scale_index for p in plans])
    prepare = dask.delayed(_write_info, pure=False)(
        store, info, plan_mode, dask_key_name=f"{INFO_TASK_PREFIX}{token}"
    )
    graph = [_graph(store, info, p, write_empty_chunks, prepare) for p in plans]
    # one scale: its graph's own total; wrapping it in another delayed call would
    # convert and cull the whole graph once more while building it
    total = graph[0] if len(graph) == 1 else dask.delayed(sum)(graph)
    if compute:
        scales = [info.scales[p.scale_index] for p in plans]
        unit = "shard" if all(s.sharding is not None for s in scales) else "task"
        what = "writing " + ", ".join(s.key for s in scales)
        return compute_with_progress(total, progress, key_prefix=TASK_PREFIX, description=what,
                                     unit=unit)  # fmt: skip
    return total


def _write_in_waves(store, info, plans, mode, write_empty, progress, max_tasks) -> int:
    for p in plans:
        scale = info.scales[p.scale_index]
        if scattered_shards(scale):
            raise WriteError(
                f"max_tasks cuts a write at shard boxes, and the shards of scale {scale.key!r} "
                "are not boxes (murmurhash or too few bits): write it without max_tasks"
            )
    counts = [count_waves(info, p, max_tasks) for p in plans]  # checks max_tasks first
    _write_info(store, info, mode)
    total = 0
    for p, n in zip(plans, counts):
        key = info.scales[p.scale_index].key
        unit = "shard" if info.scales[p.scale_index].sharding is not None else "task"
        for i, tasks in enumerate(waves(info, p, max_tasks), 1):
            graph = write_graph(store, info, p, write_empty, tasks=tasks)
            total += compute_with_progress(graph, progress, key_prefix=TASK_PREFIX, unit=unit,
                                           description=f"writing {key}, wave {i}/{n}")  # fmt: skip
    return total


def _graph(store: Store, info: VolumeInfo, plan, write_empty: bool, after) -> Any:
    scale = info.scales[plan.scale_index]
    if scattered_shards(scale):
        # shards that are not boxes: encode per block, then assemble per shard
        return two_stage_graph(store, info, plan, write_empty, after, TASK_PREFIX)
    return write_graph(store, info, plan, write_empty, after=after)


def _write_info(store: Store, info: VolumeInfo, mode: Mode) -> int:
    if mode == "w":
        old = _read_existing_quietly(store)
        if old is not None:
            for s in old.scales:
                store.remove_tree(s.key)
    store.put("info", json.dumps(info.to_json(), indent=1).encode())
    return 0


def _read_existing_quietly(store: Store) -> VolumeInfo | None:
    try:
        return read_existing_info(store)
    except WriteError:
        return None


__all__ = ["to_precomputed"]
