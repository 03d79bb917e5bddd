"""``skycache node|cache|disk``: worker-node caches and the VM-disk stack."""

from __future__ import annotations

import typer

node_app = typer.Typer(help="Worker-node setup (the local cache volume group).")
cache_app = typer.Typer(help="dm-cache and dm-writecache devices.")
disk_app = typer.Typer(help="VM disks: clone, ln, mkimage, mkswap, mv, delete, save, list.")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.add_typer(cache_app, name="cache")
    app.add_typer(disk_app, name="disk")
