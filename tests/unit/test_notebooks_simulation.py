"""notebooks/simulation.ipynb executes top to bottom (its last cell asserts the cache saves fetches),
displays its figure, and is committed with the outputs a fresh execution gives."""

from __future__ import annotations

import nbformat
from notebook_check import ROOT, execute, problems_of_committed, stale_cells

NOTEBOOK = ROOT / "notebooks" / "simulation.ipynb"


def test_committed_simulation_notebook_has_its_outputs() -> None:
    assert not problems_of_committed(NOTEBOOK)


def test_simulation_notebook_executes_as_committed() -> None:
    fresh = execute(NOTEBOOK, timeout_s=300)
    out = "".join(o.get("text", "") for o in fresh.cells[-1].outputs)
    assert "read caches:" in out and "faster" in out
    figures = [
        o for c in fresh.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert figures, "the figure is not displayed"
    stale = stale_cells(nbformat.read(NOTEBOOK, as_version=4), fresh)
    assert not stale, f"run `make notebooks-refresh` and commit the notebook: {stale[:3]}"
