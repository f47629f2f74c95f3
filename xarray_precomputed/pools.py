"""Process-wide pools: threads for reading and decoding, threads for obstore's requests,
and obstore's clients (:func:`per_process`).

Each is made on first use and made anew in a forked child (a fork copies the pool object
but not its threads, nor a client's connections).

>>> io_pool(local=True) is io_pool(local=True)
True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
FETCH_THREADS = 64  # obstore requests in flight per process, as fsspec's pools allow
_made: dict[Any, Any] = {}
_pid = 0
_lock = threading.Lock()


def per_process(key: Any, make: Callable[[], T]) -> T:
    """What ``make()`` returned for ``key`` in this process: made once (under a lock), and
    anew after a fork."""
    global _pid
    with _lock:
        if _pid != os.getpid():
            _made.clear()
            _pid = os.getpid()
        if key not in _made:
            _made[key] = make()
        return _made[key]


def _pool(name: str, threads: int) -> ThreadPoolExecutor:
    return per_process(("pool", name), lambda: ThreadPoolExecutor(threads, thread_name_prefix=name))


def io_pool(local: bool = False) -> ThreadPoolExecutor:
    """A pool for blocking reads and GIL-releasing decodes.

    Local reads are CPU-bound copies and decodes: one thread per core. Remote
    reads mostly wait on the network: more threads keep more requests in flight.
    """
    cores = os.cpu_count() or 2
    if local:
        return _pool("precomputed", cores)
    return _pool("precomputed-io", max(8, 4 * cores))


def fetch_pool() -> ThreadPoolExecutor:
    """Threads that each wait on one obstore request, in Rust and without the GIL."""
    return _pool("precomputed-fetch", FETCH_THREADS)
