"""The kinds of input file skycache reads (bench scenarios, sim scenarios, sim calibrations), told
apart by their content, each with the verb that checks it.

lib/ knows none of the formats (the bench and sim portions own them, and lib imports neither): each
portion registers its kinds here when its CLI module is imported, with a test of a parsed document's
shape and a check of a file. ``skycache validate`` then checks any file with the right one, and a
file given to the wrong verb gets the right advice (``misfiled``) instead of the wrong format's
first complaint ("name: required key is missing" for a sim scenario given to ``suite validate``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from skycache import files
from skycache.errors import InvalidInput


@dataclass(frozen=True)
class Checked:
    """A valid file: a few words on what it holds (for the ok line) and the same as data (--json)."""

    summary: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    name: str  # "bench scenario"
    verb: str  # the verb that checks this kind alone: "skycache suite validate"
    marks: str  # what tells it apart, for the error about a file of no kind: "[[stacks]]"
    claims: Callable[[Mapping[str, Any]], bool]  # a parsed document has this kind's shape
    check: Callable[[Path, bool], Checked]  # (file, yes): raises InvalidInput (one line) if invalid


_KINDS: dict[str, Kind] = {}
# The portions' CLI modules (cli/main.py's PLUGIN_GROUP entry points) register their kinds on import.
PLUGIN_GROUP = "skycache.cli"


def load_kinds() -> None:
    """Import every portion's CLI module, so that every kind is registered: a command line loads
    only the portion it names (``suite validate`` loads no sim code), and the advice for a sim file
    given to it needs the sim kinds."""
    for ep in entry_points().select(group=PLUGIN_GROUP):
        ep.load()


def register(kind: Kind) -> None:
    _KINDS[kind.name] = kind  # by name: importing a portion twice (tests reload) registers once


def kinds() -> list[Kind]:
    return list(_KINDS.values())


def detect(path: Path, doc: Mapping[str, Any]) -> Kind:
    """The kind of ``doc`` (read from ``path``), or InvalidInput naming what each kind has."""
    claimed = [k for k in _KINDS.values() if k.claims(doc)]
    if len(claimed) == 1:
        return claimed[0]
    if not claimed:
        known = "; ".join(f"a {k.name} has {k.marks}" for k in _KINDS.values())
        raise InvalidInput(f"{files.shown(path)}: not a file skycache knows ({known})")
    names = " and ".join(k.name for k in claimed)
    raise InvalidInput(f"{files.shown(path)}: looks like both a {names}: keep one kind's keys")


def misfiled(doc: Mapping[str, Any], path: Path, expected: str) -> str | None:
    """Advice for a file of another kind given where a ``expected`` is read, or None when it is not
    one (then the format's own error is the right one). Called only once the file failed as an
    ``expected``: loading the other portions costs a second, on that error path alone."""
    load_kinds()
    mine = _KINDS.get(expected)
    if mine is not None and mine.claims(doc):
        return None
    other = [k for k in _KINDS.values() if k.name != expected and k.claims(doc)]
    if len(other) != 1:
        return None
    shown = files.shown(path)
    return (
        f"{shown} is a {other[0].name}, not a {expected}: check it with `{other[0].verb} {shown}` "
        f"(or `skycache validate {shown}`, which checks every kind)"
    )
