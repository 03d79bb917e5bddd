"""The schema base of the files people write (bench and sim scenarios), and the one line an error of
such a file becomes: ``FILE: key.path: what is wrong``, naming the bad value.

pydantic reports every problem with a location and a message that does not name the value; a file
refused must say which key, and what was found there, in one line (the CLI prints it after
``skycache: error:``). Only this module turns a :class:`pydantic.ValidationError` into that line,
so bench and sim files read the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from skycache.errors import InvalidInput


class StrictModel(BaseModel):
    """Unknown keys refused, no coercion (``"5"`` is not 5, ``true`` is not 1), immutable."""

    # allow_inf_nan=False: TOML has nan and inf, and NaN passes every ge/le bound pydantic checks.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def toml_key(name: str) -> str:
    """A table key as TOML needs it written: quoted when it has dots (``ssh.hosts."10.0.0.7"``)."""
    return f'"{name}"' if "." in name or not name else name


def location(loc: Sequence[int | str]) -> str:
    """A pydantic location as the key path a person writes: ``stacks[0].read_cache``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{toml_key(part)}" if out else toml_key(part))
    return out or "(top level)"


Location = list[int | str]
# Where a problem really is, when the data validated was assembled from several places of the file
# (a variant merged over the base): the location in the file, and a note for the end of the line.
Relocate = Callable[[Location], tuple[Location, str]]


def _clean(loc: Sequence[int | str]) -> Location:
    # pydantic adds the branches of unions and the names of function validators to the location
    return [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]


def first_error(
    path: str | Path, exc: ValidationError, relocate: Relocate | None = None, *, unknown_first: bool = False
) -> InvalidInput:
    """The first problem of ``exc`` as one line starting with ``path``; the count of the others.

    ``unknown_first``: report an unknown key before the other problems, as the likely cause of
    them (a misspelt required key is also a missing one).
    """
    errors = exc.errors()
    if unknown_first:
        errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")  # stable: order kept
    err = errors[0]
    loc, note = relocate(_clean(err["loc"])) if relocate else (_clean(err["loc"]), "")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif err["type"] == "missing":
        msg = "required key is missing"
    got = err.get("input")
    if isinstance(got, int | float | str) and not isinstance(got, bool) and err["type"] != "extra_forbidden":
        text = repr(got)
        shown = text if len(text) <= 60 else text[:40] + "..."
        # Name the bad value (pydantic's own messages do not), unless the message already does,
        # perhaps shortened as the validator that raised it shortens long values.
        if shown not in msg and not (len(text) > 60 and text[:40] in msg):
            msg = f"{shown}: {msg}"
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return InvalidInput(f"{path}: {location(loc)}: {msg}{note}{tail}")
