"""``skycache bench`` and ``skycache suite``."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run fio scenarios over real stacks, compare runs, draw plots.")
suite_app = typer.Typer(help="Scenario suites (scenarios/*.toml).")
