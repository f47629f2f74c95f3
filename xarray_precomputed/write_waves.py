"""Writing in waves: a write cut into regions of at most ``max_tasks`` write tasks, each a
graph of its own, computed one after another.

A graph's size on the client and the scheduler grows with its tasks (about 1 MiB per 1,000
write tasks, before the input's own tasks); a volume with millions of shards is written as
a sequence of bounded graphs instead. Waves are cut at task boxes (shards, or groups of
whole chunks), so no two waves write the same object and each wave is an ordinary write.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from .errors import WriteError
from .metadata import VolumeInfo
from .write_graph import task_boxes
from .write_plan import WritePlan


def waves(info: VolumeInfo, plan: WritePlan, max_tasks: int) -> Iterator[tuple[slice, ...]]:
    """The write tasks of ``plan`` in waves of at most ``max_tasks``, as index ranges over
    the task grid along x, y, z, in storage order (x fastest): whole rows of tasks along
    x, then along y, then slabs along z.

    >>> import dask.array as da, xarray as xr
    >>> from xarray_precomputed.metadata import Scale, VolumeInfo
    >>> scale = Scale(key="s", size=(2048, 2048, 256), resolution=(1, 1, 1),
    ...               chunk_sizes=((64, 64, 64),), encoding="raw")
    >>> info = VolumeInfo(type="image", data_type="uint8", num_channels=1, scales=(scale,))
    >>> a = xr.DataArray(da.zeros((2048, 2048, 256, 1), "uint8"),
    ...                  dims=("x", "y", "z", "channel"))
    >>> plan = WritePlan(a, 0, (0, 0, 0), merge=False)  # 4 x 4 tasks of 512 x 512 x 256
    >>> [(w[0].start, w[0].stop, w[1].start, w[1].stop) for w in waves(info, plan, 8)]
    [(0, 4, 0, 2), (0, 4, 2, 4)]
    """
    counts, group = _grid(info, plan, max_tasks)
    edges = [[slice(i, min(i + group[d], counts[d])) for i in range(0, counts[d], group[d])]
             for d in range(3)]  # fmt: skip
    for z, y, x in itertools.product(edges[2], edges[1], edges[0]):
        yield (x, y, z)


def count_waves(info: VolumeInfo, plan: WritePlan, max_tasks: int) -> int:
    """How many waves :func:`waves` cuts ``plan``'s tasks into."""
    counts, group = _grid(info, plan, max_tasks)
    return -(-counts[0] // group[0]) * -(-counts[1] // group[1]) * -(-counts[2] // group[2])


def _grid(info: VolumeInfo, plan: WritePlan, max_tasks: int):
    """The number of tasks along each axis, and how many of them a wave takes."""
    if not isinstance(max_tasks, int) or max_tasks < 1:
        raise WriteError(f"max_tasks must be a positive integer, got {max_tasks!r}")
    boxes = task_boxes(info, plan.scale_index, plan.region_start, plan.array.shape[:3])
    counts = [len(b) for b in boxes]
    group = [min(counts[0], max_tasks)]
    group.append(min(counts[1], max(1, max_tasks // group[0])))
    group.append(min(counts[2], max(1, max_tasks // (group[0] * group[1]))))
    return counts, group
