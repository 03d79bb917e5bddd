"""The storage verbs of the ``skycache`` CLI without the rest of it.

The full CLI imports the bench plugin (pandas, numpy...), which takes 30-60 s per call inside the
lab under TCG; the storage tests call the CLI dozens of times. This entry point registers the same
``skycache.cli.storage`` commands on a bare app and reports errors exactly as ``skycache`` does.
Tests that must use the real binary (kill -9) still do.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import click
import typer

from skycache.cli import storage
from skycache.errors import SkycacheError

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def root(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


storage.register(app)

if __name__ == "__main__":
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="skycache", standalone_mode=False)
    except SkycacheError as exc:
        typer.echo(f"skycache: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
