"""Directories a plan creates or fills: refused at plan time when ``mkdir -p`` would fail half-way.

A plan must not stop after its first steps because the directory it writes into cannot exist: a path
that is a file, lies under a file, or is a symbolic link leading nowhere (dangling or a loop) is
refused by name before anything runs. Checked through the runner, so it holds on a remote target too.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from skycache.errors import InvalidInput
from skycache.runner import Runner


def existing_entries(runner: Runner, directory: str | PurePosixPath, *, what: str) -> list[str] | None:
    """The entries of ``directory``, or None when it does not exist and ``mkdir -p`` can create it."""
    d = PurePosixPath(directory)
    shown = repr(str(directory))
    if not d.is_absolute():
        raise InvalidInput(f"{what} {shown} is not an absolute path")
    entries = runner.list_dir(d)
    if entries is not None:
        return entries
    if runner.exists(d):
        raise InvalidInput(f"{what} {shown} is not a directory")
    for parent in d.parents:
        if runner.exists(parent):
            if runner.list_dir(parent) is None:
                raise InvalidInput(f"{what} {shown} is under {str(parent)!r}: not a directory")
            break
    # A dangling link or a loop "does not exist" for exists(), yet mkdir -p cannot create it; the
    # same holds for any link on the way to it.
    for p in (d, *d.parents):
        kind = runner.query(["stat", "-c", "%F", "--", str(p)], check=False).stdout.strip()
        if kind == "symbolic link" and runner.list_dir(p) is None:
            where = "is" if p == d else f"goes through {str(p)!r},"
            raise InvalidInput(f"{what} {shown} {where} a symbolic link to no directory (dangling or a loop)")
        if kind:
            break  # the first part that exists was checked; above it is all reachable
    return None
