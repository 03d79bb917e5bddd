"""Sizes as people write them ("512M", "8GiB", "1.5G") and back.

Single letters and the ``iB`` forms are binary (as in LVM and dd: ``1G`` = 2**30 bytes); ``KB``,
``MB``, ``GB``, ``TB`` are decimal. A plain number is bytes.
"""

from __future__ import annotations

import re

from skycache.errors import InvalidInput

_BINARY = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_DECIMAL = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Bytes in ``text``; raises :class:`InvalidInput` naming the value when it is not a size."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"{what} {text} is negative")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise InvalidInput(f"{what} {text!r} is not a size (examples: 512M, 8G, 1.5GiB)")
    number, unit = m.group(1), m.group(2)
    key = unit.upper()
    if key.endswith("IB"):
        key = key[:-2]
    factor = _DECIMAL.get(unit.upper()) if unit.upper() in _DECIMAL else _BINARY.get(key)
    if factor is None:
        raise InvalidInput(f"{what} {text!r} has an unknown unit {unit!r} (use K, M, G, T)")
    value = float(number) * factor
    if value != int(value):
        raise InvalidInput(f"{what} {text!r} is not a whole number of bytes")
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
