"""Quantities as people write them: sizes ("512M", "8GiB", "1.5 GB"), bandwidths ("120 MiB/s",
"10 Gbit/s", "1 Gbps"), durations ("2 ms", "30 min") and event rates ("5 /s"), and sizes back.

The one grammar of every quantity a skycache file or command line holds: bench scenarios, sim
scenarios and calibrations, and the CLI's ``--size`` options all read through here, so a spelling
means the same thing everywhere (docs/sim.md, "Units", lists it). In short:

- a number is ASCII decimal digits with an optional fraction: ``1``, ``1.5``; no sign, exponent,
  ``_``, ``nan`` or ``inf`` (``1e3G`` is refused rather than read as a thousand GiB);
- sizes: single letters and the ``iB`` forms are binary (as in LVM and dd: ``1G`` = 2**30 bytes),
  ``KB MB GB TB PB`` are decimal, in any case; a bare whole number is bytes (as in fio);
- bandwidths: a size unit or a bit unit (``bit kbit Mbit Gbit Tbit``, decimal) over ``/s``,
  ``/min`` or ``/h``, or ``bps kbps Mbps Gbps Tbps`` (bits); ``Mb/s``, ``Gb/s`` are refused, since
  readers take them for bits and the size grammar for bytes;
- durations: ``ns us µs ms s min h d``, lowercase (``M`` is not minutes, ``MS`` is not ms);
- event rates: ``/s``, ``/min``, ``/h`` after a number.

Numbers are read as fractions (no float), so sizes are exact: "1.5K" is 1536 and "0.1K" (102.4
bytes) is refused instead of being rounded. Callers bound the values (the largest size is off_t's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from skycache.errors import InvalidInput

# Size units by their upper-case spelling: the grammar is case-insensitive for sizes ("4k", "1gib").
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    **_BINARY,
    **{f"{p}IB": f for p, f in _BINARY.items()},
    **{f"{p}B": 10 ** (3 * i) for i, p in enumerate("KMGTP", start=1)},
}
# Bits, always decimal (as on links and in tc); the prefix letter in any case.
_BIT_PREFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PER = {"s": 1, "min": 60, "h": 3600}

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# The sign is matched only to say "is negative" rather than "is not a size".
_QUANTITY_RE = re.compile(rf"\s*(-?)\s*({_NUMBER})\s*([A-Za-zµ]*)\s*(?:/\s*([A-Za-z]+)\s*)?")
# The largest size the system holds: off_t and LVM's sizes are signed 64-bit (8 EiB - 1).
MAX_SIZE = 2**63 - 1
_MAX_DIGITS = 30  # more digits than MAX_SIZE in bytes has: refused before any arithmetic

SIZE_EXAMPLES = "examples: 512M, 8G, 1.5GiB"
BANDWIDTH_EXAMPLES = 'e.g. "120 MiB/s", "1 Gbit/s"'
DURATION_UNITS = "units: ns, us, ms, s, min, h, d"
EVENT_RATE_EXAMPLES = 'e.g. "5 /s", "120 /h"'


def shown(value: object) -> str:
    """A value as an error names it: its repr, shortened when long (a 5,000-digit number)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + "...'"


def _named(what: str, value: object) -> str:
    return f"{what} {shown(value)}" if what else shown(value)


@dataclass(frozen=True)
class Written:
    """A quantity as written: its number (exact), its unit and the time unit after ``/``, if any."""

    number: Fraction
    unit: str
    per: str | None


def read_quantity(text: object, *, what: str, kind: str, examples: str) -> Written:
    """The parts of ``text``; InvalidInput naming the value when it is not text of the grammar."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise InvalidInput(f"{_named(what, text)} is not {kind} ({examples})")
    m = _QUANTITY_RE.fullmatch(text)
    if not m:
        raise InvalidInput(f"{_named(what, text)} is not {kind} ({examples})")
    sign, number, unit, per = m.groups()
    if sign:
        raise InvalidInput(f"{_named(what, text)} is negative, not {kind}")
    whole, _, frac = number.partition(".")
    if len(whole.lstrip("0")) > _MAX_DIGITS:
        raise _too_big(what, text) if kind == "a size" else InvalidInput(f"{_named(what, text)} is too large")
    if len(frac) > _MAX_DIGITS:
        raise InvalidInput(f"{_named(what, text)} has too many decimals")
    return Written(Fraction(int(whole + frac), 10 ** len(frac)), unit, per)


def _too_big(what: str, text: object) -> InvalidInput:
    return InvalidInput(
        f"{_named(what, text)} is larger than the largest size, 8E - 1 ({MAX_SIZE} bytes, off_t)"
    )


def _size_factor(unit: str) -> int | None:
    return _SIZE_UNITS.get(unit.upper())


def parse_size(text: object, *, what: str = "size") -> int:
    """Bytes in ``text`` (a whole number of bytes, at most :data:`MAX_SIZE`); raises
    :class:`InvalidInput` naming the value when it is not a size."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise InvalidInput(f"{_named(what, text)} is negative")
        if text > MAX_SIZE:
            raise _too_big(what, text)
        return text
    w = read_quantity(text, what=what, kind="a size", examples=SIZE_EXAMPLES)
    factor = _size_factor(w.unit)
    if w.per is not None:
        raise InvalidInput(f"{_named(what, text)} is not a size ({SIZE_EXAMPLES})")
    if factor is None:
        raise InvalidInput(f"{_named(what, text)} has an unknown unit {w.unit!r} (use K, M, G, T)")
    value = w.number * factor
    if value.denominator != 1:
        raise InvalidInput(f"{_named(what, text)} is not a whole number of bytes")
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


def _needs_text(text: object, what: str, examples: str) -> None:
    """A bandwidth, duration or rate must say its unit: a bare 120 could be bits or bytes, s or min."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise InvalidInput(f"{_named(what, text)} needs a unit, written as a string ({examples})")


def _bits_per_byte(unit: str) -> Fraction | None:
    """Bytes in one ``unit`` of data in a bandwidth: a size unit, or a bit unit; None otherwise.
    ``b`` after a prefix ("Mb") is refused here: people read it as bits, sizes read it as bytes."""
    if unit.lower().endswith("bit"):
        prefix = _BIT_PREFIX.get(unit[:-3].upper())
        return None if prefix is None else Fraction(prefix, 8)
    if not unit or unit == "b" or (len(unit) == 2 and unit.endswith("b")):
        return None
    factor = _size_factor(unit)
    return None if factor is None else Fraction(factor)


def parse_bandwidth(text: object, *, what: str) -> float:
    """Bytes per second in ``"120 MiB/s"``, ``"1 Gbit/s"``, ``"10 Gbps"``, ``"1G/s"``."""
    _needs_text(text, what, BANDWIDTH_EXAMPLES)
    w = read_quantity(text, what=what, kind="a bandwidth", examples=BANDWIDTH_EXAMPLES)
    if w.per is None and w.unit.endswith("bps"):
        prefix = _BIT_PREFIX.get(w.unit[:-3].upper())
        if prefix is not None:
            return float(w.number * Fraction(prefix, 8))
    data = _bits_per_byte(w.unit)
    if w.per not in _PER or data is None:
        raise InvalidInput(f"{_named(what, text)} is not a bandwidth ({BANDWIDTH_EXAMPLES})")
    return float(w.number * data / _PER[w.per])


def parse_duration(text: object, *, what: str) -> float:
    """Seconds in ``"2 ms"``, ``"30 min"``, ``"1.5 us"``."""
    _needs_text(text, what, 'e.g. "2 ms", "30 min"')
    w = read_quantity(text, what=what, kind="a duration", examples=DURATION_UNITS)
    if w.per is not None or w.unit not in _SECONDS:
        raise InvalidInput(f"{_named(what, text)} is not a duration ({DURATION_UNITS})")
    return float(w.number) * _SECONDS[w.unit]


def parse_event_rate(text: object, *, what: str) -> float:
    """Events per second in ``"5 /s"``, ``"2 /min"``, ``"300 /h"``."""
    _needs_text(text, what, EVENT_RATE_EXAMPLES)
    w = read_quantity(text, what=what, kind="a rate of events", examples=EVENT_RATE_EXAMPLES)
    if w.unit or w.per not in _PER:
        raise InvalidInput(f"{_named(what, text)} is not a rate of events ({EVENT_RATE_EXAMPLES})")
    return float(w.number / _PER[w.per])


def format_size(nbytes: int) -> str:
    """The shortest exact binary form: 1073741824 -> '1G', 1536 -> '1.5K'."""
    for suffix, factor in (("P", 2**50), ("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if nbytes >= factor and (nbytes * 10) % factor == 0:
            value = nbytes / factor
            return f"{value:g}{suffix}"
    return f"{nbytes}B"
