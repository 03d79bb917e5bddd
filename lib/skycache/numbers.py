"""Bounded numbers as people write them: counts, ports, seeds, durations and ratios.

Every number read from a command line or a data file goes through here, so each one is refused the
same way: one :class:`InvalidInput` line that names the value and the bound it broke. Python's own
conversions are not used on raw text because they accept too much ("nan", "inf", "1_000", "²",
"٣") and fail badly on too much (``int()`` of 5,000 digits raises ValueError, float("9"*400) is inf).
"""

from __future__ import annotations

import math
import re

from skycache.errors import InvalidInput

# The largest count the system holds: a signed 64-bit integer (off_t, numpy int64, parquet INT64).
INT64_MAX = 2**63 - 1
# numpy's legacy seeds and most tools' --seed are 32-bit; sweeps add a replication index to it.
SEED_MAX = 2**32 - 1
PORT_MIN, PORT_MAX = 1, 65535

_INT_RE = re.compile(r"[+-]?[0-9]+")
# ASCII decimal, optional exponent; no "nan", "inf", "_" or non-ASCII digits.
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# More digits than any bound here has: refused before int() (which has a 4300-digit limit).
_MAX_DIGITS = 40


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"...' ({len(text)} characters)"


def parse_int(
    value: object, *, what: str, minimum: int = 0, maximum: int = INT64_MAX, bound: str = ""
) -> int:
    """A whole number in ``[minimum, maximum]`` from text or an int (not a bool, not a float).

    ``bound`` says why the maximum is what it is (for the error): "a TCP port", "int64"...
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{what} {_show(value)} is not a whole number")
    if isinstance(value, str):
        text = value.strip()
        if not _INT_RE.fullmatch(text):
            raise InvalidInput(f"{what} {_show(value)} is not a whole number")
        if len(text.lstrip("+-").lstrip("0")) > _MAX_DIGITS:
            raise InvalidInput(f"{what} {_show(value)} is out of range [{minimum}, {maximum}]{_why(bound)}")
        number = int(text)
    elif isinstance(value, int):
        number = value
    else:
        raise InvalidInput(f"{what} {_show(value)} is not a whole number")
    if not minimum <= number <= maximum:
        raise InvalidInput(f"{what} {_show(value)} is out of range [{minimum}, {maximum}]{_why(bound)}")
    return number


def _why(bound: str) -> str:
    return f" ({bound})" if bound else ""


def parse_float(
    value: object,
    *,
    what: str,
    minimum: float = 0.0,
    maximum: float = math.inf,
    exclusive_minimum: bool = False,
    bound: str = "",
) -> float:
    """A finite number in ``[minimum, maximum]`` (``(minimum, ...`` when ``exclusive_minimum``);
    NaN and infinities are refused whatever the bounds."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} {_show(value)} is not a number")
    if isinstance(value, str):
        text = value.strip()
        if not _FLOAT_RE.fullmatch(text) or len(text) > 400:
            raise InvalidInput(f"{what} {_show(value)} is not a number")
        number = float(text)
    elif isinstance(value, int):
        if abs(value) > 10**300:
            raise InvalidInput(f"{what} {_show(value)} is not a finite number")
        number = float(value)
    elif isinstance(value, float):
        number = value
    else:
        raise InvalidInput(f"{what} {_show(value)} is not a number")
    if not math.isfinite(number):
        raise InvalidInput(f"{what} {_show(value)} is not a finite number")
    low_ok = number > minimum if exclusive_minimum else number >= minimum
    if not low_ok or number > maximum:
        low = "(" if exclusive_minimum else "["
        raise InvalidInput(
            f"{what} {_show(value)} is out of range {low}{minimum:g}, {maximum:g}]{_why(bound)}"
        )
    return number


def parse_port(value: object, *, what: str = "port") -> int:
    """A TCP port, 1-65535."""
    return parse_int(value, what=what, minimum=PORT_MIN, maximum=PORT_MAX, bound="a TCP port")


def portal_port(portal: str, port_text: str) -> int:
    """The port of an ``ADDR:PORT`` portal, the error naming the portal (shortened) and the port."""
    try:
        return parse_port(port_text, what="port")
    except InvalidInput as exc:
        raise InvalidInput(f"portal {_show(portal)} has an invalid port: {exc}") from None


def parse_seed(value: object, *, what: str = "seed") -> int:
    """An RNG seed, 0 to 2**32-1."""
    return parse_int(value, what=what, minimum=0, maximum=SEED_MAX, bound="a 32-bit seed")


def parse_fraction(value: object, *, what: str) -> float:
    """A ratio in [0, 1]."""
    return parse_float(value, what=what, minimum=0.0, maximum=1.0)


_SECONDS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"\s*([0-9.eE+-]+)\s*([a-z]*)\s*")


def parse_duration(
    value: object, *, what: str, minimum: float = 0.0, maximum: float = 366 * 86400.0, positive: bool = False
) -> float:
    """Seconds in ``30``, ``2.5``, ``"500ms"``, ``"10 min"``, ``"2h"``; finite and within bounds
    (a year at most unless told otherwise)."""
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value)
        if not m or m.group(2) not in _SECONDS:
            raise InvalidInput(f"{what} {_show(value)} is not a duration (e.g. 30, 500ms, 10min, 2h)")
        number = parse_float(m.group(1), what=what, minimum=0.0) * _SECONDS[m.group(2)]
    else:
        number = parse_float(value, what=what, minimum=0.0)
    if (positive and number <= 0) or number < minimum or number > maximum:
        low = "(" if positive else "["
        raise InvalidInput(f"{what} {_show(value)} is out of range {low}{minimum:g} s, {maximum:g} s]")
    return number
