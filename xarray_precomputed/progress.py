"""Progress bars for long Dask computations (writes, copies, downsampling).

On the local schedulers (threads, processes, synchronous) a tqdm bar counts the
tasks whose key starts with a given prefix, e.g. the writer's one task per shard,
so the bar advances in units of real work and its estimate is the average rate so
far, not the rate of the last few (bursty) completions. On a dask.distributed
``Client`` the work runs on the cluster and ``distributed.progress`` shows it.

>>> import dask
>>> compute(dask.delayed(sum)([1, 2, 3]), progress=False)
6
"""

from __future__ import annotations

import sys
from typing import Any

import dask
from dask.base import get_scheduler
from dask.callbacks import Callback
from tqdm import tqdm


def compute(
    obj: Any,
    progress: bool = False,
    *,
    key_prefix: str | None = None,
    description: str = "computing",
    unit: str = "task",
) -> Any:
    """Compute the Dask collection ``obj``, with a progress bar if ``progress``.

    ``key_prefix`` names the tasks the bar counts (all tasks when ``None`` or
    when no task matches); ``description`` and ``unit`` label the bar.
    """
    if not progress:
        return dask.compute(obj)[0]
    client = distributed_client()
    if client is not None:
        from distributed import progress as distributed_progress

        future = client.compute(obj)
        distributed_progress(future)
        print(file=sys.stdout, flush=True)  # the text bar ends without a newline
        return future.result()
    with TaskBar(key_prefix, description, unit):
        return dask.compute(obj)[0]


def distributed_client() -> Any:
    """The dask.distributed Client that ``compute`` would use, if any."""
    scheduler = get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    if owner is not None and type(owner).__name__ == "Client":
        return owner
    return None


class TaskBar(Callback):
    """A tqdm bar over the tasks of one local Dask computation.

    >>> import dask
    >>> with TaskBar(None, "adding", disable=True):
    ...     dask.delayed(sum)([1, 2]).compute()
    3
    """

    def __init__(
        self,
        key_prefix: str | None,
        description: str = "computing",
        unit: str = "task",
        disable: bool = False,
    ):
        super().__init__()
        self.key_prefix = key_prefix
        self.description = description
        self.unit = unit
        self.disable = disable
        self.bar: tqdm | None = None

    def _counts(self, key: Any) -> bool:
        if self.key_prefix is None:
            return True
        name = key[0] if isinstance(key, tuple) else key
        return str(name).startswith(self.key_prefix)

    def _start_state(self, dsk: Any, state: Any) -> None:
        total = sum(1 for key in dsk if self._counts(key))
        if total == 0:  # the prefix matched nothing: count every task instead
            self.key_prefix = None
            total = len(dsk)
        # smoothing=0: the estimate uses the average rate since the start; tasks finish
        # in bursts (one per worker thread), which makes a smoothed rate jump around.
        self.bar = tqdm(
            total=total,
            desc=self.description,
            unit=self.unit,
            smoothing=0,
            dynamic_ncols=True,
            disable=self.disable,
        )

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self.bar is not None and self._counts(key):
            self.bar.update(1)

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["TaskBar", "compute"]
