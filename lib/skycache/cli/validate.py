"""``skycache validate FILE...``: one verb that checks every kind of input file.

Each file's kind (bench scenario, sim scenario, sim calibration) is told from its content by the
kinds the bench and sim portions register (skycache.validators), and the file is checked as the verb
for that kind would (``suite validate``, ``sim check``); those verbs stay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skycache import files, validators
from skycache.errors import InvalidInput


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise InvalidInput(f"{files.shown(p)}: no *.toml files in this directory")
            out += found
        else:
            out.append(p)
    return out


def validate_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files, or directories of *.toml files.")],
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Accept a bench scenario above its max_runs, a sweep above max_points."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate bench scenarios (fio suites), sim scenarios and sim calibrations, each told apart by
    its content; one line per file; exits 2 if any is invalid.

    Each kind is checked as its own verb checks it: a bench scenario as `skycache suite validate`
    (expanded, its max_runs applied), a sim scenario as `skycache sim check` (every variant and
    sweep point against its calibration), a calibration as the model loads it.
    """
    validators.load_kinds()  # `validate` is lib's verb: cli/main.py loaded no portion for it
    bad = 0
    rows: list[dict[str, object]] = []
    for f in _files(paths):
        kind: validators.Kind | None = None
        try:
            kind = validators.detect(f, files.load_toml(f, what="file"))
            checked = kind.check(f, yes)
        except InvalidInput as exc:
            rows.append(
                {"file": str(f), "kind": kind.name if kind else None, "valid": False, "error": str(exc)}
            )
            typer.echo(f"skycache: error: {' '.join(str(exc).split())}", err=True)
            bad += 1
            continue
        rows.append({"file": str(f), "kind": kind.name, "valid": True, **checked.details})
        if not as_json:
            typer.echo(f"{f}: ok, {kind.name} ({checked.summary})")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    if bad:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
