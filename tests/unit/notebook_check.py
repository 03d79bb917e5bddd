"""Helpers of the notebook tests: execute a notebook as ``make notebooks-refresh`` does, and compare
the committed outputs with fresh ones (issue 17: notebooks committed with their outputs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from notebooks_refresh import MAX_BYTES, execute  # noqa: E402

__all__ = ["MAX_BYTES", "ROOT", "execute", "problems_of_committed", "stale_cells", "text_outputs"]


def _code(nb: nbformat.NotebookNode) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def problems_of_committed(path: Path) -> list[str]:
    """What keeps the committed notebook from being read as it is: unexecuted cells, cells without
    output (a ``parameters`` cell may have none), error outputs, a file over MAX_BYTES, the checkout's
    own path in an output (it differs on every machine)."""
    nb = nbformat.read(path, as_version=4)
    out = []
    if path.stat().st_size > MAX_BYTES:
        out.append(f"{path.name} is {path.stat().st_size} bytes, over {MAX_BYTES}")
    if str(ROOT) in path.read_text():
        out.append(f"{path.name} holds this checkout's path {ROOT}: outputs must not depend on where it is")
    for i, cell in enumerate(_code(nb)):
        where = f"{path.name} code cell {i}"
        if cell.execution_count is None:
            out.append(f"{where} was not executed")
        if not cell.outputs and "parameters" not in cell.metadata.get("tags", []):
            out.append(f"{where} has no output")
        out += [
            f"{where} has an error output: {o.get('ename')}" for o in cell.outputs if o.output_type == "error"
        ]
    return out


def text_outputs(nb: nbformat.NotebookNode) -> list[list[tuple[str, str]]]:
    """Per code cell, its outputs as (kind, text): printed text, or the text/plain of a result or
    display (a figure's is its size and axes); the image bytes themselves are not compared. Text
    printed in a row is one output, however the kernel split it into messages."""
    cells = []
    for cell in _code(nb):
        outs = []
        for o in cell.outputs:
            if o.output_type == "stream":
                if outs and outs[-1][0] == o.name:  # a print can arrive in several messages
                    outs[-1] = (o.name, outs[-1][1] + o.text)
                else:
                    outs.append((o.name, o.text))
            elif o.output_type in ("execute_result", "display_data"):
                kinds = ",".join(sorted(o.data))
                outs.append((f"{o.output_type}[{kinds}]", o.data.get("text/plain", "")))
            else:
                outs.append((o.output_type, o.get("ename", "")))
        cells.append(outs)
    return cells


def stale_cells(committed: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> list[str]:
    """The code cells whose committed source or outputs differ from a fresh execution."""
    a, b = _code(committed), _code(fresh)
    if [c.source for c in a] != [c.source for c in b]:
        return ["the code cells' sources differ"]
    ta, tb = text_outputs(committed), text_outputs(fresh)
    return [
        f"code cell {i}: committed {x!r} != fresh {y!r}"
        for i, (x, y) in enumerate(zip(ta, tb, strict=True))
        if x != y
    ]
