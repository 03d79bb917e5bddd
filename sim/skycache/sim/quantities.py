"""Quantities with units, as written in scenario and calibration files.

Every number that has a dimension must carry its unit ("120 MiB/s", "2 ms", "1 Gbit/s", "20 GiB"),
so a file that says ``rate = 120`` is refused instead of silently meaning bytes, bits or MiB. The
parsers return SI base values: bytes, seconds, bytes per second, events per second.
"""

from __future__ import annotations

import math
import re

from skycache.errors import InvalidInput

_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)"
_QUANTITY_RE = re.compile(rf"^\s*(-?)\s*{_NUMBER}\s*([A-Za-zµ]*)\s*(?:/\s*([A-Za-z]+))?\s*$")

# Byte units: binary with "i", decimal without (as in fio and iperf3). Bits are 1/8 byte.
_BYTES: dict[str, float] = {
    "B": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
    # The size grammar of the CLI and of bench files (skycache.units): single letters are binary.
    "K": 2**10,
    "M": 2**20,
    "G": 2**30,
    "T": 2**40,
    "P": 2**50,
    "kB": 1e3,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "PB": 1e15,
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "Kbit": 1e3 / 8,
    "Mbit": 1e6 / 8,
    "Gbit": 1e9 / 8,
    "Tbit": 1e12 / 8,
}
_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# The largest values the model takes: beyond them a number is a typo, and its float arithmetic
# (rates times seconds, bytes over rates) would overflow or lose every digit that matters.
MAX_BYTES = float(2**63)  # 8 EiB: off_t
MAX_SECONDS = 100 * 365 * 86400.0  # a century of simulated time
MAX_BANDWIDTH = 1e15  # 1 PB/s, 1000 times a 1 Tbit/s link
MAX_FREQUENCY = 1e9  # a billion events per second

# Per-time denominators accepted after "/".
_PER: dict[str, float] = {"s": 1.0, "min": 60.0, "h": 3600.0}
# Bit-rate shorthands people write for links.
_BPS = {"bps": 1 / 8, "kbps": 1e3 / 8, "Kbps": 1e3 / 8, "Mbps": 1e6 / 8, "Gbps": 1e9 / 8, "Tbps": 1e12 / 8}


def _split(text: object, what: str) -> tuple[float, str, str | None]:
    if isinstance(text, bool) or not isinstance(text, str):
        raise InvalidInput(f'{what} = {text!r} needs a unit, written as a string (e.g. "120 MiB/s")')
    m = _QUANTITY_RE.match(text)
    if not m:
        raise InvalidInput(f"{what} = {text!r} is not a quantity with a unit")
    sign, number, unit, per = m.groups()
    value = float(number)
    if sign:
        raise InvalidInput(f"{what} = {text!r} is negative")
    if not math.isfinite(value):
        raise InvalidInput(f"{what} = {text!r} is not finite")
    return value, unit, per


def _bounded(value: float, text: object, what: str, maximum: float, name: str) -> float:
    if not math.isfinite(value) or value > maximum:
        raise InvalidInput(f"{what} = {text!r} is above the largest {name} the model takes ({maximum:g})")
    return value


def parse_bytes(text: object, *, what: str) -> float:
    """Bytes in ``"300 MiB"``, ``"1.5 GB"``, ``"1G"``, ``"0 B"``; refuses plain numbers, negative
    values and more than :data:`MAX_BYTES`."""
    value, unit, per = _split(text, what)
    if per is not None or unit not in _BYTES:
        raise InvalidInput(f"{what} = {text!r} is not a size (units: B, KiB, MiB, GiB, TiB, KB, MB, GB, G)")
    return _bounded(value * _BYTES[unit], text, what, MAX_BYTES, "size in bytes")


def parse_duration(text: object, *, what: str) -> float:
    """Seconds in ``"2 ms"``, ``"30 min"``, ``"1.5 us"``."""
    value, unit, per = _split(text, what)
    if per is not None or unit not in _SECONDS:
        raise InvalidInput(f"{what} = {text!r} is not a duration (units: ns, us, ms, s, min, h, d)")
    return _bounded(value * _SECONDS[unit], text, what, MAX_SECONDS, "duration in seconds")


def parse_bandwidth(text: object, *, what: str) -> float:
    """Bytes per second in ``"120 MiB/s"``, ``"1 Gbit/s"``, ``"10 Gbps"``."""
    value, unit, per = _split(text, what)
    if per is None and unit in _BPS:
        return _bounded(value * _BPS[unit], text, what, MAX_BANDWIDTH, "bandwidth in B/s")
    if per is None or per not in _PER or unit not in _BYTES:
        raise InvalidInput(f'{what} = {text!r} is not a bandwidth (e.g. "120 MiB/s", "1 Gbit/s")')
    return _bounded(value * _BYTES[unit] / _PER[per], text, what, MAX_BANDWIDTH, "bandwidth in B/s")


def parse_frequency(text: object, *, what: str) -> float:
    """Events per second in ``"5 /s"``, ``"2 /min"``, ``"300 /h"``."""
    value, unit, per = _split(text, what)
    if unit or per not in _PER:
        raise InvalidInput(f'{what} = {text!r} is not a rate of events (e.g. "5 /s", "120 /h")')
    return _bounded(value / _PER[per], text, what, MAX_FREQUENCY, "rate in events/s")


def format_bandwidth(bps: float) -> str:
    """A short human form in binary units: 125829120.0 -> '120 MiB/s'."""
    for unit in ("GiB", "MiB", "KiB"):
        if bps >= _BYTES[unit]:
            return f"{bps / _BYTES[unit]:.6g} {unit}/s"
    return f"{bps:.6g} B/s"


def format_duration(seconds: float) -> str:
    """A short human form: 0.002 -> '2 ms'."""
    for unit in ("s", "ms", "us"):
        if seconds >= _SECONDS[unit]:
            return f"{seconds / _SECONDS[unit]:.6g} {unit}"
    return f"{seconds / 1e-9:.6g} ns"
