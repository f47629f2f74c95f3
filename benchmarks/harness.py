"""What ``bench_read.py`` and ``bench_write.py`` share around their measurements: the
command-line options every benchmark has, ratios and paired medians, and the closing
report (targets met, wrong results, the results JSON and the exit status).

The measurements themselves (worker processes, peak memory, volumes) are in ``common.py``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import DEFAULT_DATA_DIR, write_json


def add_common_arguments(
    p: argparse.ArgumentParser,
    *,
    data_dir_help: str,
    quick_help: str,
    repeat_help: str,
) -> None:
    """``--data-dir``, ``--quick`` and ``--repeat``."""
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=data_dir_help)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--repeat", type=int, default=3, help=repeat_help)


def add_run_arguments(p: argparse.ArgumentParser, *, warmup_help: str) -> None:
    """``--no-warmup`` and ``--max-wait``."""
    p.add_argument("--no-warmup", action="store_true", help=warmup_help)
    p.add_argument(
        "--max-wait",
        type=float,
        default=5.0,
        help="seconds to wait before each run for other processes to go quiet",
    )


def add_output_arguments(p: argparse.ArgumentParser, *, output_help: str) -> None:
    """``--output``, ``--check-targets`` and the hidden ``--worker``."""
    p.add_argument("--output", type=Path, default=None, help=output_help)
    p.add_argument(
        "--check-targets",
        action="store_true",
        help="exit with status 2 when a target from the issue is missed",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or zero."""
    return None if not a or not b else a / b


def fmt_ratio(r: float | None, target: float | None, higher_is_better: bool = True) -> str:
    """A table cell: the ratio, ``!`` when it misses ``target``, ``-`` when there is none."""
    if r is None:
        return "-"
    if target is None:
        return f"{r:.2f}"
    ok = r >= target if higher_is_better else r <= target
    return f"{r:.2f}{'' if ok else ' !'}"


def paired_median(num: Sequence[float | None], den: Sequence[float | None]) -> float | None:
    """Median over repeat rounds of ``num[i] / den[i]`` (rounds where both ran): robust to
    a neighbour's load changing between rounds."""
    pairs = [a / b for a, b in zip(num, den) if a and b]
    return statistics.median(pairs) if pairs else None


def finish(
    output: Path,
    report: dict[str, Any],
    targets: list[dict[str, Any]],
    failures: list[str],
    check_targets: bool,
    labels: tuple[str, str],
    notes: Sequence[str] = (),
) -> int:
    """Print the targets met, the wrong results and ``notes``, write ``report`` as JSON to
    ``output`` and return the exit status: 1 on a wrong result, 2 on a missed target with
    ``check_targets``, else 0. ``labels`` name a target's row and column keys."""
    row, column = labels
    missed = [t for t in targets if not t["met"]]
    print(f"\ntargets met: {len(targets) - len(missed)}/{len(targets)}")
    for t in missed:
        print(f"  MISSED {t[row]} {t[column]}: {t['target']} ({t['value']:.2f})")
    for f in failures:
        print(f"  WRONG RESULT {f}")
    for note in notes:
        print(note)
    write_json(output, report)
    print(f"\nwrote {output}")
    if failures:
        return 1
    if check_targets and missed:
        return 2
    return 0
