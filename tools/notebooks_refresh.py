"""Re-execute the notebooks and save them with their outputs (``make notebooks-refresh``).

The committed notebooks carry the outputs of the committed runs, so they read on GitHub or in
Jupyter without running anything; ``tests/unit/test_notebooks_*.py`` re-executes them and fails when
the committed outputs are stale. Run this after changing a notebook or the runs it reads, then commit
the notebooks. Volatile metadata (execution timestamps) is dropped so that a refresh without changes
gives no diff.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_BYTES = 1 << 20  # keep each notebook reasonable to review and clone


def execute(path: Path, timeout_s: int = 600) -> nbformat.NotebookNode:
    """The notebook at ``path``, executed top to bottom in its own directory."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=NOTEBOOKS)
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        nb = execute(path)
        nbformat.write(nb, path)
        size = path.stat().st_size
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {size / 1024:.0f} KiB")
        if size > MAX_BYTES:
            print(f"  over {MAX_BYTES >> 10} KiB: embed less (smaller or fewer figures)", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
