"""``skycache net``: shaping, NAT measurement and VM isolation."""

from __future__ import annotations

import typer

net_app = typer.Typer(help="Network shaping, NAT load measurement and VM isolation rules.")


def register(app: typer.Typer) -> None:
    app.add_typer(net_app, name="net")
