"""Which process did the storage I/O: counts of ``Store`` calls in this process and in
every worker of a ``distributed`` cluster.

``client.run`` ships the functions below by reference, so the workers import this module
(``tests`` is a package on their ``sys.path``, inherited from the test process).

    with storage_calls(client) as calls:
        client.compute(...).result()
    assert calls.here == {} and calls.in_workers()["get"] > 0
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator

from xarray_precomputed.storage import Store

METHODS = ("get", "get_reusing_buffer", "get_many", "get_ranges", "put", "delete", "exists")

_counts: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
_depth = threading.local()
_originals: dict[str, object] = {}


def _wrap(name: str, real):
    def counted(store, *args, **kwargs):
        depth = getattr(_depth, "n", 0)
        if depth == 0:  # count the outermost call only (get_many calls get, ...)
            with _lock:
                _counts[name] += 1
        _depth.n = depth + 1
        try:
            return real(store, *args, **kwargs)
        finally:
            _depth.n = depth

    return counted


def install() -> None:
    """Count this process's Store calls from now on (idempotent)."""
    with _lock:
        _counts.clear()
        if _originals:
            return
        for name in METHODS:
            _originals[name] = getattr(Store, name)
            setattr(Store, name, _wrap(name, _originals[name]))


def uninstall() -> None:
    with _lock:
        for name, real in _originals.items():
            setattr(Store, name, real)
        _originals.clear()


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


class Calls:
    """Store calls per method: ``here`` (this process) and ``workers`` (address -> counts)."""

    def __init__(self) -> None:
        self.here: dict[str, int] = {}
        self.workers: dict[str, dict[str, int]] = {}

    def in_workers(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for c in self.workers.values():
            total.update(c)
        return total


@contextlib.contextmanager
def storage_calls(client) -> Iterator[Calls]:
    """Count Store calls here and in every worker of ``client`` while the block runs;
    the yielded ``Calls`` is filled in on exit."""
    calls = Calls()
    client.run(install)
    install()
    try:
        yield calls
        calls.here = counts()
        calls.workers = client.run(counts)
    finally:
        uninstall()
        client.run(uninstall)
