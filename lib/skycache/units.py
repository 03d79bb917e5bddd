"""Sizes as people write them ("512M", "8GiB", "1.5G") and back.

Single letters and the ``iB`` forms are binary (as in LVM and dd: ``1G`` = 2**30 bytes); ``KB``,
``MB``, ``GB``, ``TB`` are decimal. A plain number is bytes.
"""

from __future__ import annotations

import re
from fractions import Fraction

from skycache.errors import InvalidInput

_BINARY = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_DECIMAL = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
# The largest size the system holds: off_t and LVM's sizes are signed 64-bit (8 EiB - 1).
MAX_SIZE = 2**63 - 1
_MAX_DIGITS = 30  # more digits than MAX_SIZE in bytes has: refused before any arithmetic


def _too_big(what: str, text: object) -> InvalidInput:
    shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:40] + "...'"
    return InvalidInput(f"{what} {shown} is larger than the largest size, 8E - 1 ({MAX_SIZE} bytes, off_t)")


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Bytes in ``text``; raises :class:`InvalidInput` naming the value when it is not a size.

    Exact: the number is read as a fraction (no float), so "1.5K" is 1536 and "0.1K" (102.4 bytes)
    is refused instead of being rounded; anything above :data:`MAX_SIZE` is refused by name.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise InvalidInput(f"{what} {text!r} is not a size (examples: 512M, 8G, 1.5GiB)")
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"{what} {text} is negative")
        if text > MAX_SIZE:
            raise _too_big(what, text)
        return text
    m = _SIZE_RE.fullmatch(text)
    if not m:
        shown = repr(text) if len(text) <= 60 else repr(text[:40]) + "..."
        raise InvalidInput(f"{what} {shown} is not a size (examples: 512M, 8G, 1.5GiB)")
    number, unit = m.group(1), m.group(2)
    key = unit.upper()
    if key.endswith("IB"):
        key = key[:-2]
    factor = _DECIMAL.get(unit.upper()) if unit.upper() in _DECIMAL else _BINARY.get(key)
    if factor is None:
        raise InvalidInput(f"{what} {text!r} has an unknown unit {unit!r} (use K, M, G, T)")
    whole, _, frac = number.partition(".")
    if len(whole.lstrip("0")) > _MAX_DIGITS or len(frac) > _MAX_DIGITS:
        raise (
            _too_big(what, text)
            if len(whole.lstrip("0")) > _MAX_DIGITS
            else InvalidInput(f"{what} {text!r} has too many decimals")
        )
    value = Fraction(int(whole + frac), 10 ** len(frac)) * factor
    if value.denominator != 1:
        raise InvalidInput(f"{what} {text!r} is not a whole number of bytes")
    if value > MAX_SIZE:
        raise _too_big(what, text)
    return int(value)


def parse_positive_size(text: str | int, *, what: str = "size", multiple_of: int = 1) -> int:
    """Like :func:`parse_size`, refusing zero and sizes that are not a multiple of ``multiple_of``."""
    value = parse_size(text, what=what)
    if value == 0:
        raise InvalidInput(f"{what} {text!r} is zero")
    if value % multiple_of:
        raise InvalidInput(f"{what} {text!r} is not a multiple of {format_size(multiple_of)}")
    return value


def format_size(nbytes: int) -> str:
    """The shortest exact binary form: 1073741824 -> '1G', 1536 -> '1.5K'."""
    for suffix, factor in (("P", 2**50), ("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if nbytes >= factor and (nbytes * 10) % factor == 0:
            value = nbytes / factor
            return f"{value:g}{suffix}"
    return f"{nbytes}B"
