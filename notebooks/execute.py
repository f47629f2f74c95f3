"""Run every notebook with a Jupyter kernel and store its outputs (pictures included).

    PYTHONPATH=$PWD python notebooks/execute.py [NAME.ipynb ...]

Needs the ``[notebooks]`` extra. The tests run the notebooks' code again (without
storing anything) and check that the stored outputs are there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()  # fmt: skip
    nbformat.write(notebook, path)


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.name for p in HERE.glob("*.ipynb"))
    for name in names:
        print("executing", name, flush=True)
        execute(HERE / name)
