"""Parsing and shared options of the ``precomputed`` command line.

Type functions raise :class:`argparse.ArgumentTypeError`, so a bad value is a
usage error (exit status 2) with a message naming the option.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def int_triple(text: str) -> tuple[int, int, int]:
    """``"64,64,16"`` -> ``(64, 64, 16)``.

    >>> int_triple("2,2,1")
    (2, 2, 1)
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected 3 positive integers X,Y,Z, got {text!r}")
    return values  # type: ignore[return-value]


def byte_size(text: str) -> int:
    """``"256MiB"``, ``"1G"`` or ``"1000000"`` -> bytes (powers of 1024 for K, M, G, T).

    >>> byte_size("64MiB"), byte_size("1g"), byte_size("4096")
    (67108864, 1073741824, 4096)
    """
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size such as 256MiB or 1G, got {text!r}")
    power = "kmgt".find(m.group(2).lower()) + 1 if m.group(2) else 0
    return int(float(m.group(1)) * 1024**power)


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@file.json``.

    >>> json_object('{"anon": true}')
    {'anon': True}
    """
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {e.strerror}") from e
    try:
        value = json.loads(source)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def region(text: str) -> tuple[tuple[int | None, int | None], ...]:
    """``"0:512,100:,:"`` -> per axis ``(start, stop)`` voxel bounds, ``None`` = open.

    >>> region("0:512,100:,:")
    ((0, 512), (100, None), (None, None))
    """
    parts = text.split(",")
    out = []
    try:
        for part in parts:
            lo, sep, hi = part.partition(":")
            if not sep:
                raise ValueError
            out.append((int(lo) if lo.strip() else None, int(hi) if hi.strip() else None))
    except ValueError:
        out = []
    if len(out) != 3 or any(lo is not None and hi is not None and hi <= lo for lo, hi in out):
        raise argparse.ArgumentTypeError(
            f"expected X0:X1,Y0:Y1,Z0:Z1 voxel bounds (each may be left open), got {text!r}"
        )
    return tuple(out)


def sharding(text: str) -> Any:
    """``keep``, ``auto``, ``none`` or a sharding spec as JSON (or ``@file.json``)."""
    if text.lower() in ("keep", "auto", "none"):
        return text.lower()
    return json_object(text)


def add_scheduler_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        default="threads",
        metavar="threads|processes|synchronous|local|ADDRESS",
        help="where Dask runs the work: local threads (default), local processes, one "
        "thread, a new LocalCluster ('local'), or the address of a dask.distributed "
        "scheduler (tcp://host:8786)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="threads or processes of the local schedulers, or workers of 'local'",
    )  # fmt: skip


def add_write_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunk-size", type=int_triple, metavar="X,Y,Z",
                        help="storage chunk shape (default: the source's)")  # fmt: skip
    parser.add_argument(
        "--encoding",
        metavar="NAME",
        help="raw, jpeg, png, compressed_segmentation, compresso or jxl (default: the source's)",
    )
    parser.add_argument(
        "--sharding", type=sharding, default="keep", metavar="keep|auto|none|JSON",
        help="keep the source's sharding (default; auto when the chunking changes), choose "
        "box-shaped shards of about --shard-bytes (auto), write unsharded (none), or use "
        "this sharding spec",
    )  # fmt: skip
    parser.add_argument("--shard-bytes", type=byte_size, default=None, metavar="SIZE",
                        help="target uncompressed shard size for auto sharding "
                        "(default 256MiB; implies --sharding auto)")  # fmt: skip


@contextmanager
def dask_scheduler(spec: str, workers: int | None, quiet: bool = False) -> Iterator[None]:
    """Run the enclosed computations on the scheduler ``spec`` names; ``quiet`` keeps a
    local cluster's warnings (slow scratch directories, GC time, a busy event loop) off
    stderr, so that ``--quiet`` prints only errors."""
    import dask

    if workers is not None and workers < 1:
        raise argparse.ArgumentTypeError(f"--workers must be at least 1, got {workers}")
    if spec in ("threads", "processes", "synchronous", "sync"):
        config: dict[str, Any] = {"scheduler": spec}
        if workers is not None:
            config["num_workers"] = workers
        with dask.config.set(config):
            yield
        return
    from distributed import Client, LocalCluster

    if spec == "local":
        # ":0": a free port for the dashboard, so no clash with another cluster's 8787
        with (
            dask.config.set(_worker_malloc_environ()),  # also for workers the nannies restart
            LocalCluster(
                n_workers=workers,
                dashboard_address=":0",
                silence_logs=logging.ERROR if quiet else logging.WARNING,
            ) as cluster,
            Client(cluster),
        ):
            yield
        return
    if "://" not in spec and ":" not in spec:
        raise argparse.ArgumentTypeError(
            f"--scheduler must be threads, processes, synchronous, local or a scheduler "
            f"address such as tcp://host:8786, got {spec!r}"
        )
    with Client(spec, timeout="20s"):
        yield


# distributed's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which also pins
# glibc's mmap threshold at 128 KiB: every freed block or temporary above it went back to
# the OS and was faulted in again when next allocated (a misaligned 1 GiB write: 1.7x the
# time, twice the CPU). Blocks under 16 MiB then come from the heap, which keeps 64 MiB
# spare at its top; larger buffers (shards) are still mapped and returned.
WORKER_MALLOC_ENVIRON = {"MALLOC_MMAP_THRESHOLD_": 16 * 2**20, "MALLOC_TOP_PAD_": 64 * 2**20}


def _worker_malloc_environ() -> dict[str, Any]:
    """Config for the nannies of a cluster we start: :data:`WORKER_MALLOC_ENVIRON`, where
    the user's dask config does not set these variables already."""
    import dask

    key = "distributed.nanny.pre-spawn-environ"
    current = dask.config.get(key, default={}) or {}
    return {f"{key}.{k}": v for k, v in WORKER_MALLOC_ENVIRON.items() if k not in current}
