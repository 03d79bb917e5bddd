"""Plumbing shared by the lib CLI modules: option aliases, plan runs and list output.

Kept in one place so every verb prints tables, JSON and dry-run plans the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer

from skycache.errors import SkycacheError
from skycache.plan import Plan
from skycache.runner import Runner, SystemRunner

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]


class Listed(Protocol):
    """What list verbs print: records that give their --json form."""

    def as_dict(self) -> dict[str, Any]: ...


ItemT = TypeVar("ItemT", bound=Listed)


def progress(text: str) -> None:
    """Progress of a long step (a flush, a wait for a device), on stderr: stdout stays the result."""
    typer.echo(text, err=True)


def run_plan(plan: Plan, dry_run: bool, runner: Runner | None = None) -> bool:
    """Print the plan (dry run) or apply it; True when it was applied.

    The dry run prints the plan's own data: the same actions and commands the real run executes.
    """
    if dry_run:
        typer.echo("\n".join(plan.describe()))
        return False
    plan.apply(runner if runner is not None else SystemRunner(), progress)
    return True


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Left-aligned columns as wide as their widest cell; no trailing blanks (diff-friendly)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def print_json(data: Any) -> None:
    """The --json output of every list-like verb."""
    typer.echo(json.dumps(data, indent=2))


def print_list(
    items: Sequence[ItemT], as_json: bool, header: list[str], row: Callable[[ItemT], list[str]]
) -> None:
    """A list verb's output: the items' as_dict() with --json, else a table of one row per item."""
    if as_json:
        print_json([i.as_dict() for i in items])
        return
    print_table([row(i) for i in items], header)


def run_app(app: typer.Typer, args: Sequence[str] | None = None) -> NoReturn:
    """Run ``app`` as the ``skycache`` command: one-line errors, never a traceback, exit codes passed on."""
    command = typer.main.get_command(app)
    try:
        code = command.main(
            args=list(sys.argv[1:] if args is None else args), prog_name="skycache", standalone_mode=False
        )
    except SkycacheError as exc:
        typer.echo(f"skycache: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("skycache: aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option values, unknown commands
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"skycache: error: {exc}", err=True)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        typer.echo("skycache: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
