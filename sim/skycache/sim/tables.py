"""Strict reading of TOML tables: every key known, every value of the right kind, one-line errors.

Scenario and calibration files are data a person writes; a typo ("read_cahce") must stop the run
before it starts rather than silently fall back to a default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from skycache.errors import InvalidInput
from skycache.numbers import INT64_MAX, parse_int

T = TypeVar("T")


class Table:
    """A view of one TOML table at a dotted ``where``; call :meth:`done` to refuse leftover keys."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{where} must be a table, not {data!r}")
        self._data = dict(data)
        self._used: set[str] = set()
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, parse: Callable[[Any, str], T], default: T) -> T:
        self._used.add(key)
        if key not in self._data:
            return default
        return parse(self._data[key], self._path(key))

    def require(self, key: str, parse: Callable[[Any, str], T]) -> T:
        self._used.add(key)
        if key not in self._data:
            raise InvalidInput(f"{self._path(key)} is missing")
        return parse(self._data[key], self._path(key))

    def sub(self, key: str) -> Table:
        self._used.add(key)
        return Table(self._data.get(key, {}), self._path(key))

    def raw(self, key: str) -> Any:
        self._used.add(key)
        return self._data.get(key)

    def names(self) -> list[str]:
        return list(self._data)

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            where = f" in [{self.where}]" if self.where else ""
            raise InvalidInput(f"unknown key {unknown[0]!r}{where}")


def as_int(minimum: int = 0, maximum: int = INT64_MAX, bound: str = "") -> Callable[[Any, str], int]:
    """A whole number in [minimum, maximum] (TOML integers are unbounded in Python: 10**30 would
    reach numpy and fail there)."""

    def parse(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{what} = {value!r} is not a whole number")
        if value < minimum:
            raise InvalidInput(f"{what} = {value!r} is below {minimum}")
        return parse_int(value, what=f"{what} =", minimum=minimum, maximum=maximum, bound=bound)

    return parse


def as_float(minimum: float = 0.0, maximum: float | None = None) -> Callable[[Any, str], float]:
    def parse(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{what} = {value!r} is not a number")
        # TOML has nan and inf: both compare False with every bound, so refuse them first.
        if not math.isfinite(value):
            raise InvalidInput(f"{what} = {value!r} is not a finite number")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
            raise InvalidInput(f"{what} = {value!r} is outside {bound}")
        return float(value)

    return parse


def as_str(*choices: str) -> Callable[[Any, str], str]:
    def parse(value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise InvalidInput(f"{what} = {value!r} is not a string")
        if not value.isprintable():  # a NUL, newline or escape would reach file names and reports
            raise InvalidInput(f"{what} = {value!r} has a control character")
        if choices and value not in choices:
            raise InvalidInput(f"{what} = {value!r} is not one of {', '.join(choices)}")
        return value

    return parse


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def as_name(value: Any, what: str) -> str:
    """A scenario or variant name: it names result directories and files."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(f"{what} = {value!r} is not a name (letters, digits, . _ -; at most 64)")
    return value


def as_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} = {value!r} is not true or false")
    return value


def unit(parser: Callable[..., float]) -> Callable[[Any, str], float]:
    """Adapt a quantities.parse_* function to the (value, what) form."""

    def parse(value: Any, what: str) -> float:
        return parser(value, what=what)

    return parse
