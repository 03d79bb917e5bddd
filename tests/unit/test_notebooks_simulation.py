"""notebooks/simulation.ipynb executes top to bottom (its last cell asserts the cache saves fetches)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "simulation.ipynb"


def test_simulation_notebook_executes() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "read caches:" in out and "faster" in out
