"""Run every notebook's code cells in order, so the examples stay true, and check that
the outputs stored in them (pictures included) are there for readers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib", reason="the [notebooks] extra draws the pictures")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no display; plt.show() does nothing
    monkeypatch.delenv("XARRAY_PRECOMPUTED_ONLINE", raising=False)  # no network in tests
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")
    cells = json.loads(path.read_text())["cells"]
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    for peer in ("tensorstore", "cloudvolume"):  # a notebook that shows a peer needs it
        if re.search(rf"^\s*(import|from) {peer}\b", code, re.M):
            pytest.importorskip(peer)
    namespace: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
    plt.close("all")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_outputs_are_stored(path: Path) -> None:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in cells), "run notebooks/execute.py"
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors[0]["ename"] if errors else ""
    if any("plt.show()" in "".join(c["source"]) for c in cells):
        pictures = [o for c in cells for o in c.get("outputs", [])
                    if "image/png" in o.get("data", {})]  # fmt: skip
        assert pictures, f"{path.name} draws figures but stores none"


def test_there_are_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01-quickstart.ipynb", "02-writing.ipynb", "03-distributed.ipynb",
            "04-remote-data.ipynb"} <= names  # fmt: skip
