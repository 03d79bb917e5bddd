"""The calibration file: measured rates the model runs on, each with where it came from.

Format (TOML, owned by ``skycache.sim``)::

    format = "skycache-sim-calibration/1"

    [repository.lvm]                 # one table per repository backend
    read_bw = { value = "120 MiB/s", run = "results/bench/r1", condition = "backend=lvm" }
    write_bw = "90 MiB/s"            # a bare string is fine in a hand-written file
    latency = "2 ms"

    [cache]
    hit_bw = "800 MiB/s"             # read-cache hit service rate on a node
    flush_bw = "200 MiB/s"           # write-back cache flush rate

    [nat]
    cpu_per_packet = "1.5 us"        # gateway CPU time per forwarded packet
    cpu_per_conn = "20 us"           # gateway CPU time per new connection
    conntrack_bytes = "320 B"        # memory per conntrack entry (optional)

Every value carries a unit; a value may be a table with ``value`` plus provenance keys (``run``,
``condition``, ``column``, ``rows``, ``note``). ``skycache sim calibrate`` writes this format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skycache import files
from skycache.errors import InvalidInput
from skycache.sim.quantities import (
    format_bandwidth,
    format_duration,
    parse_bandwidth,
    parse_bytes,
    parse_duration,
)
from skycache.sim.tables import Table

FORMAT = "skycache-sim-calibration/1"
_PROVENANCE_KEYS = ("run", "condition", "column", "rows", "note")


@dataclass(frozen=True)
class Rate:
    """One calibrated number (SI units) and where it came from."""

    value: float
    text: str  # as written, with its unit
    provenance: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        src = ", ".join(f"{k}={v}" for k, v in self.provenance.items()) or "hand-written"
        return f"{self.text} ({src})"


@dataclass(frozen=True)
class RepositoryRates:
    read_bw: Rate
    write_bw: Rate
    latency: Rate


@dataclass(frozen=True)
class Calibration:
    repository: Mapping[str, RepositoryRates]
    cache_hit_bw: Rate
    flush_bw: Rate
    nat_cpu_per_packet: Rate
    nat_cpu_per_conn: Rate
    conntrack_bytes: Rate | None = None
    path: str = ""

    def backend(self, name: str) -> RepositoryRates:
        if name not in self.repository:
            known = ", ".join(sorted(self.repository)) or "none"
            raise InvalidInput(f"calibration has no repository backend {name!r} (has: {known})")
        return self.repository[name]


def _rate(parse: Callable[..., float]) -> Callable[[Any, str], Rate]:
    def read(value: Any, what: str) -> Rate:
        prov: dict[str, str] = {}
        if isinstance(value, Mapping):
            t = Table(value, what)
            text = t.require("value", lambda v, w: v)
            for key in _PROVENANCE_KEYS:
                p = t.raw(key)
                if p is None:
                    continue
                counted = key == "rows" and isinstance(p, int) and not isinstance(p, bool)
                if not (counted or isinstance(p, str)) or not str(p).isprintable():
                    raise InvalidInput(f"{what}.{key} = {p!r} is not a line of text")
                prov[key] = str(p)
            t.done()
        else:
            text = value
        number = parse(text, what=what)
        if number <= 0:
            raise InvalidInput(f"{what} = {text!r} must be positive")
        return Rate(number, str(text), prov)

    return read


def parse_calibration(data: Mapping[str, Any], *, path: str = "") -> Calibration:
    """Validate a parsed calibration document; raises InvalidInput with one line on the first error."""
    top = Table(data, "")
    fmt = top.require("format", lambda v, w: v)
    if fmt != FORMAT:
        raise InvalidInput(f"calibration format {fmt!r} is not {FORMAT!r}")
    repo_t = top.sub("repository")
    repos: dict[str, RepositoryRates] = {}
    for backend in repo_t.names():
        b = repo_t.sub(backend)
        repos[backend] = RepositoryRates(
            read_bw=b.require("read_bw", _rate(parse_bandwidth)),
            write_bw=b.require("write_bw", _rate(parse_bandwidth)),
            latency=b.require("latency", _rate(parse_duration)),
        )
        b.done()
    repo_t.done()
    if not repos:
        raise InvalidInput("calibration has no [repository.<backend>] table")
    cache = top.sub("cache")
    nat = top.sub("nat")
    cal = Calibration(
        repository=repos,
        cache_hit_bw=cache.require("hit_bw", _rate(parse_bandwidth)),
        flush_bw=cache.require("flush_bw", _rate(parse_bandwidth)),
        nat_cpu_per_packet=nat.require("cpu_per_packet", _rate(parse_duration)),
        nat_cpu_per_conn=nat.require("cpu_per_conn", _rate(parse_duration)),
        conntrack_bytes=nat.get("conntrack_bytes", _rate(parse_bytes), None),
        path=path,
    )
    cache.done()
    nat.done()
    top.done()
    return cal


def load_calibration(path: str | Path) -> Calibration:
    p = Path(path)
    data = files.load_toml(p, what="calibration file")  # one line for a directory, FIFO, binary, ...
    return parse_calibration(data, path=str(p))


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_rate(key: str, rate: Rate) -> str:
    if not rate.provenance:
        return f"{key} = {_toml_str(rate.text)}"
    parts = [f"value = {_toml_str(rate.text)}"] + [
        f"{k} = {_toml_str(v)}" for k, v in rate.provenance.items()
    ]
    return f"{key} = {{ {', '.join(parts)} }}"


def render_calibration(cal: Calibration, *, header: str = "") -> str:
    """The TOML text of ``cal`` (round-trips through :func:`parse_calibration`)."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"format = {_toml_str(FORMAT)}", ""]
    for name, r in sorted(cal.repository.items()):
        lines += [f"[repository.{name}]"]
        lines += [_render_rate("read_bw", r.read_bw), _render_rate("write_bw", r.write_bw)]
        lines += [_render_rate("latency", r.latency), ""]
    lines += ["[cache]", _render_rate("hit_bw", cal.cache_hit_bw), _render_rate("flush_bw", cal.flush_bw), ""]
    lines += ["[nat]", _render_rate("cpu_per_packet", cal.nat_cpu_per_packet)]
    lines += [_render_rate("cpu_per_conn", cal.nat_cpu_per_conn)]
    if cal.conntrack_bytes is not None:
        lines += [_render_rate("conntrack_bytes", cal.conntrack_bytes)]
    return "\n".join(lines) + "\n"


def bw_rate(value: float, provenance: Mapping[str, str]) -> Rate:
    return Rate(value, format_bandwidth(value), dict(provenance))


def duration_rate(value: float, provenance: Mapping[str, str]) -> Rate:
    return Rate(value, format_duration(value), dict(provenance))
