"""The one grammar for numbers and sizes (skycache.numbers, skycache.units): every refusal is one
InvalidInput line naming the value and, where there is one, the bound."""

from __future__ import annotations

import math

import pytest

from skycache import numbers
from skycache.errors import InvalidInput
from skycache.storage.kernel import iscsi, lio
from skycache.units import MAX_SIZE, parse_positive_size, parse_size

FIFTY_NINES = "9" * 50


def refused(func: object, *args: object, needle: str, **kwargs: object) -> str:
    with pytest.raises(InvalidInput) as exc:
        func(*args, **kwargs)  # type: ignore[operator]
    msg = str(exc.value)
    assert "\n" not in msg
    assert needle in msg, msg
    assert len(msg) < 300, msg  # a 5,000-digit value is shortened, not echoed
    return msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5K", 1536),
        ("512M", 512 * 2**20),
        ("8GiB", 8 * 2**30),
        ("1GB", 10**9),
        (" 4k ", 4096),
        ("9007199254740993", 2**53 + 1),  # a float would round this to 2**53
        ("8191P", 8191 * 2**50),
        (str(MAX_SIZE), MAX_SIZE),
        (4096, 4096),
    ],
)
def test_sizes_are_exact(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (FIFTY_NINES, "larger than the largest size, 8E - 1"),
        ("8192P", "larger than the largest size"),
        (MAX_SIZE + 1, "larger than the largest size"),
        ("inf", "'inf' is not a size"),
        ("nan", "'nan' is not a size"),
        ("1e3", "'1e3' is not a size"),
        ("0.1K", "not a whole number of bytes"),
        ("1.0000000001K", "not a whole number of bytes"),  # float arithmetic rounded this to 1024
        ("1.5", "not a whole number of bytes"),
        ("1 2", "is not a size"),
        ("١٢", "is not a size"),  # Arabic-Indic digits: \d matched them
        (1.5, "is not a size"),
        (math.inf, "is not a size"),
        (True, "is not a size"),
        (-1, "negative"),
    ],
)
def test_bad_sizes(text: object, needle: str) -> None:
    refused(parse_size, text, what="--size", needle=needle)


def test_positive_size_names_option() -> None:
    refused(parse_positive_size, FIFTY_NINES, what="--size", needle="--size '9999")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("²", "'²' is not a whole number"),
        ("9" * 5000, "(5002 characters) is out of range [1, 65535] (a TCP port)"),
        ("0", "out of range [1, 65535]"),
        ("65536", "out of range [1, 65535]"),
        ("-1", "out of range"),
        ("80 ", None),
        ("1_000", "not a whole number"),
        (True, "not a whole number"),
        (80.0, "not a whole number"),
    ],
)
def test_ports(value: object, needle: str | None) -> None:
    if needle is None:
        assert numbers.parse_port(value) == 80
    else:
        refused(numbers.parse_port, value, needle=needle)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("-1", "seed '-1' is out of range [0, 4294967295] (a 32-bit seed)"),
        ("1" * 28, "out of range [0, 4294967295]"),
        (2**32, "out of range"),
        ("nan", "not a whole number"),
    ],
)
def test_seeds(value: object, needle: str) -> None:
    refused(numbers.parse_seed, value, needle=needle)
    assert numbers.parse_seed("4294967295") == 2**32 - 1


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", math.nan, math.inf, "١"])
def test_floats_refuse_nan_and_infinity(value: object) -> None:
    refused(numbers.parse_float, value, what="--loss", needle="--loss")


def test_float_bounds_named() -> None:
    refused(numbers.parse_float, "2", what="fraction", maximum=1.0, needle="out of range [0, 1]")
    refused(numbers.parse_fraction, math.nan, what="sync", needle="not a finite number")
    refused(numbers.parse_float, 0, what="x", exclusive_minimum=True, needle="out of range (0, inf]")
    assert numbers.parse_float("2.5e1", what="x") == 25.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("500ms", 0.5), ("10min", 600.0), ("2h", 7200.0), (1.5, 1.5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert numbers.parse_duration(text, what="--timeout") == seconds


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nan", "--timeout 'nan'"),
        ("inf", "not a duration"),
        ("0", "out of range (0 s"),
        ("1e9", "out of range"),
        ("10 parsecs", "not a duration"),
    ],
)
def test_bad_durations(text: str, needle: str) -> None:
    refused(numbers.parse_duration, text, what="--timeout", positive=True, needle=needle)


@pytest.mark.parametrize("parse", [iscsi.parse_portal, lio.parse_listen])
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("127.0.0.1:²", "portal '127.0.0.1:²' has an invalid port: port '²' is not a whole number"),
        ("127.0.0.1:" + "9" * 5000, "has an invalid port: port '99999"),
        ("127.0.0.1:0", "out of range [1, 65535] (a TCP port)"),
        ("127.0.0.1:", "invalid port"),
    ],
)
def test_portals(parse: object, text: str, needle: str) -> None:
    refused(parse, text, needle=needle)


def test_portal_default_port() -> None:
    assert str(iscsi.parse_portal("10.0.0.1")) == "10.0.0.1:3260"
    assert lio.parse_listen("10.0.0.1:3261") == ("10.0.0.1", 3261)
