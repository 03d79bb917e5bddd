"""``skycache repo|image|export|attach|detach|inventory|teardown``: the image repository."""

from __future__ import annotations

import typer

repo_app = typer.Typer(help="Image repositories (LVM volume groups or directories).")
image_app = typer.Typer(help="Images, read-only bases and COW clones.")
export_app = typer.Typer(help="iSCSI exports of images (LIO).")


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")
    app.add_typer(image_app, name="image")
    app.add_typer(export_app, name="export")
