"""Pure unit tests do not need the peers: with tensorstore and cloud-volume hidden
(``XP_TEST_WITHOUT_PEERS=1``, see ``conftest.py``) every module still collects all of its
tests, and only tests that use a peer (the ``ts`` fixture, ``peers.tensorstore()``,
``peers.cloudvolume()``) are skipped when they run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
# Every test in these modules writes or reads through a peer: skipped whole without it.
ALL_PEER = {"tests/test_backend.py", "tests/test_distributed.py"}
# Run without the peers here: none of their tests may be skipped.
PURE = ["tests/test_metadata.py", "tests/test_writer_input.py"]


def _pytest(*args: str, hide: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XP_TEST_WITHOUT_PEERS"}
    if hide:
        env["XP_TEST_WITHOUT_PEERS"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def _per_module(out: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in out.splitlines():
        if "::" in line and line.startswith("tests/"):
            module = line.split("::", 1)[0]
            counts[module] = counts.get(module, 0) + 1
    return counts


def test_every_module_collects_without_peers():
    with_peers = _pytest("--collect-only", "tests", hide=False)
    without = _pytest("--collect-only", "tests", hide=True)
    out_with, out_without = with_peers.communicate()[0], without.communicate()[0]
    assert with_peers.returncode == 0, out_with[-2000:]
    assert without.returncode == 0, out_without[-2000:]  # no module fails to import
    expected, got = _per_module(out_with), _per_module(out_without)
    for module in ALL_PEER:
        expected.pop(module, None)
        got.pop(module, None)
    assert len(expected) > 20
    assert got == expected


def test_pure_modules_pass_without_peers():
    run = _pytest("-rs", *PURE, hide=True)
    out = run.communicate()[0]
    assert run.returncode == 0, out[-3000:]
    summary = out.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), summary  # nothing skipped
    assert int(summary.split()[0]) > 150
