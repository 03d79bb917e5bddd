"""lib's verbs of the ``skycache`` CLI (storage, node, net) without the plugins.

The full CLI imports the bench plugin (pandas, numpy...), which takes 30-60 s per call inside the
lab under TCG; the storage tests call the CLI dozens of times. This entry point registers the same
``skycache.cli.storage``, ``skycache.cli.node`` and ``skycache.cli.net`` commands (repo, image,
export, attach, teardown, node, cache, disk, net...) on a bare app and reports errors exactly as
``skycache`` does.
Tests that must use the real binary (kill -9) still do.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from skycache.cli import net, node, storage
from skycache.cli.common import run_app

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def root(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


storage.register(app)
node.register(app)
net.register(app)

if __name__ == "__main__":
    run_app(app)
