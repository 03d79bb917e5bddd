"""``skycache sim``."""

from __future__ import annotations

import typer

app = typer.Typer(help="Simulate repository, network and NAT load for large clusters.")
