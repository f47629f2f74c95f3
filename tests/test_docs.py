"""The documentation: the site builds with ``mkdocs build --strict`` and its Python code
blocks run, except those marked ``<!-- not run: reason -->`` on the line before."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"(?:^<!-- not run: (?P<reason>[^>]+) -->\n)?^```python\n(?P<code>.*?)^```",
                   re.MULTILINE | re.DOTALL)  # fmt: skip


def blocks(page: Path) -> list[tuple[str, str | None]]:
    return [(m["code"], m["reason"]) for m in BLOCK.finditer(page.read_text())]


def runnable(page: Path) -> list[str]:
    return [code for code, reason in blocks(page) if reason is None]


WITH_CODE = [p for p in PAGES if runnable(p)]


@pytest.mark.parametrize("page", WITH_CODE, ids=[p.name for p in WITH_CODE])
def test_code_blocks_run(page: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(runnable(page)):
        try:
            exec(compile(code, f"{page.name}[python block {i}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(
                f"{page.name}: Python block {i} failed ({type(e).__name__}: {e}). Fix it, or put "
                "'<!-- not run: <why> -->' on the line before it if it cannot run in the tests"
            ) from e


def test_pages_with_code_run_some() -> None:
    assert {p.name for p in WITH_CODE} >= {"index.md", "distributed.md", "errors.md"}


def test_every_skipped_block_says_why() -> None:
    for page in PAGES:
        for code, reason in blocks(page):
            assert reason is None or len(reason.strip()) > 10, (page.name, code[:60])


def test_site_builds_strict(tmp_path) -> None:
    pytest.importorskip("mkdocs", reason="the [docs] extra builds the site")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "to_precomputed" in api and "neuroglancer_url" in api
    assert "<blockquote>" not in api  # doctest examples rendered as code, not as quotes
    assert (tmp_path / "site" / "img" / "scales-chunks-shards.svg").exists()
