"""Quantities with units in scenario and calibration files: the one grammar of :mod:`skycache.units`
(the same as bench files), within the bounds the model takes, and short human forms back.

Every number that has a dimension carries its unit ("120 MiB/s", "2 ms", "1 Gbit/s", "20 GiB"), so
``rate = 120`` is refused instead of silently meaning bytes, bits or MiB; a size may be a bare whole
number of bytes, as in bench files. The parsers return SI base values: bytes, seconds, bytes per
second, events per second. ``what`` names the key in the error ("cluster.nic = '-1 Gbit/s' is
negative"); the scenario schema passes "" and puts the key in front itself.
"""

from __future__ import annotations

from decimal import Decimal

from skycache import units
from skycache.errors import InvalidInput

# The largest values the model takes: beyond them a number is a typo, and its float arithmetic
# (rates times seconds, bytes over rates) would overflow or lose every digit that matters.
MAX_BYTES = float(units.MAX_SIZE)  # 8 EiB: off_t
MAX_SECONDS = 100 * 365 * 86400.0  # a century of simulated time
MAX_BANDWIDTH = 1e15  # 1 PB/s, 1000 times a 1 Tbit/s link
MAX_FREQUENCY = 1e9  # a billion events per second


def _what(what: str) -> str:
    return f"{what} =" if what else ""


def _bounded(value: float, text: object, what: str, maximum: float, name: str) -> float:
    if value > maximum:
        shown = f"{what} = {units.shown(text)}" if what else units.shown(text)
        raise InvalidInput(f"{shown} is above the largest {name} the model takes ({maximum:g})")
    return value


def parse_bytes(text: object, *, what: str) -> float:
    """Bytes in ``"300 MiB"``, ``"1.5 GB"``, ``"1G"``, ``"0 B"`` or ``4096``: a whole number of bytes,
    at most :data:`MAX_BYTES`."""
    return float(units.parse_size(text, what=_what(what)))


def parse_duration(text: object, *, what: str) -> float:
    """Seconds in ``"2 ms"``, ``"30 min"``, ``"1.5 us"``."""
    value = units.parse_duration(text, what=_what(what))
    return _bounded(value, text, what, MAX_SECONDS, "duration in seconds")


def parse_bandwidth(text: object, *, what: str) -> float:
    """Bytes per second in ``"120 MiB/s"``, ``"1 Gbit/s"``, ``"10 Gbps"``."""
    value = units.parse_bandwidth(text, what=_what(what))
    return _bounded(value, text, what, MAX_BANDWIDTH, "bandwidth in B/s")


def parse_frequency(text: object, *, what: str) -> float:
    """Events per second in ``"5 /s"``, ``"2 /min"``, ``"300 /h"``."""
    value = units.parse_event_rate(text, what=_what(what))
    return _bounded(value, text, what, MAX_FREQUENCY, "rate in events/s")


def _plain(x: float) -> str:
    """Six significant digits without an exponent: the grammar has none ("1e+06" would not load)."""
    text = format(Decimal(f"{x:.6g}"), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_bandwidth(bps: float) -> str:
    """A short human form in binary units: 125829120.0 -> '120 MiB/s'."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if bps >= factor:
            return f"{_plain(bps / factor)} {unit}/s"
    return f"{_plain(bps)} B/s"


def format_duration(seconds: float) -> str:
    """A short human form: 0.002 -> '2 ms'."""
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= factor:
            return f"{_plain(seconds / factor)} {unit}"
    return f"{_plain(seconds / 1e-9)} ns"
