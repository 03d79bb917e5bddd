"""notebooks/analysis.ipynb: committed with its outputs from the committed run it names, and those
outputs are what a fresh execution (nbclient) gives; SKYCACHE_NOTEBOOK_RUN takes another run and says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from notebook_check import ROOT, execute, problems_of_committed, stale_cells

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def _run_named() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    ns: dict[str, object] = {}
    exec(cell.source, ns)  # the notebook's own parameter cell
    return str(ns["RUN"])


def test_analysis_notebook_names_a_committed_run() -> None:
    run = _run_named()
    assert (ROOT / run / "tidy.parquet").is_file(), f"the notebook's RUN {run} is not committed"


def test_committed_analysis_notebook_has_its_outputs() -> None:
    assert not problems_of_committed(NOTEBOOK)


def test_analysis_notebook_executes_as_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYCACHE_NOTEBOOK_RUN", raising=False)
    fresh = execute(NOTEBOOK, timeout_s=300)
    printed = "".join(o.get("text", "") for c in fresh.cells if c.cell_type == "code" for o in c.outputs)
    assert "warm read cache vs uncached iSCSI" in printed
    assert f"analysing the committed run {_run_named()}" in printed
    stale = stale_cells(nbformat.read(NOTEBOOK, as_version=4), fresh)
    assert not stale, f"run `make notebooks-refresh` and commit the notebook: {stale[:3]}"


def test_analysis_notebook_says_when_it_takes_another_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "20990101T000000Z"
    shutil.copytree(ROOT / _run_named(), other)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = nb.cells[:3]  # the introduction, the parameters and the loading cell
    short = tmp_path / "analysis-head.ipynb"
    nbformat.write(nb, short)
    (tmp_path / "results").symlink_to(ROOT / "results")  # the notebook finds the repository by results/
    monkeypatch.setenv("SKYCACHE_NOTEBOOK_RUN", str(other))
    ran = execute(short, timeout_s=300)
    printed = "".join(o.get("text", "") for c in ran.cells if c.cell_type == "code" for o in c.outputs)
    assert (
        f"NOTE: analysing {other} from SKYCACHE_NOTEBOOK_RUN, not the committed run {_run_named()}" in printed
    )
