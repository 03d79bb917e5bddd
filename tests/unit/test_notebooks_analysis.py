"""notebooks/analysis.ipynb runs without errors against the committed curated run (nbclient)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def test_analysis_notebook_executes() -> None:
    if not list((ROOT / "results" / "quickstart").glob("*/tidy.parquet")):
        pytest.fail("the curated quickstart run under results/quickstart/ is missing")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()
    outputs = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    assert "warm read cache vs uncached iSCSI" in outputs
