"""The calibration file: the rates the model runs on, each with the record of where it came from.

Format (TOML, owned by ``skycache.sim``; docs/sim.md, "Calibration format")::

    format = "skycache-sim-calibration/2"
    accept_role_mismatch = []        # values the model may use although their source misfits the role

    [repository.lvm]                 # one table per repository backend; every value is optional
    read_bw = "120 MiB/s"            # streaming read bandwidth
    write_bw = "90 MiB/s"            # streaming write bandwidth
    latency = "2 ms"                 # request latency

    [cache]
    hit_bw = "800 MiB/s"             # streaming read from a warm read cache
    flush_bw = "200 MiB/s"           # write-back cache flush

    [nat]
    cpu_per_packet = "1.5 us"        # gateway CPU time per forwarded packet
    cpu_per_conn = "20 us"           # gateway CPU time per new connection

    [sources."repository.lvm.read_bw"]   # one per value, keyed by its dotted name
    kind = "run"                         # "run", "base" or "default"
    run = "results/bench/r1"
    condition = "stack=lvm-iscsi,workload=seqread"
    column = "bw_bytes"
    statistic = "median of 3 repetitions (each the sum over its jobs)"
    workload = { rw = "read", bs = "1M", iodepth = 16, numjobs = 1 }

A value without a source, a source without a value, or an unknown key is refused. A value the file
lacks is not an error here: the model asks for it only when a scenario uses it
(skycache.sim.calibration_use). ``skycache sim calibrate`` writes this format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skycache import files, validators
from skycache.errors import InvalidInput
from skycache.sim.calibration_roles import OTHER_NAMES, REPOSITORY_KEYS, judge, role_of
from skycache.sim.calibration_source import Source
from skycache.sim.quantities import format_bandwidth, format_duration

FORMAT = "skycache-sim-calibration/2"


def is_bandwidth(name: str) -> bool:
    """Bandwidths end in ``_bw``; every other value is a duration."""
    return name.endswith("_bw")


@dataclass(frozen=True)
class Rate:
    """One calibrated number (SI units: bytes/s or seconds), as written, and its source."""

    value: float
    text: str
    source: Source

    @property
    def provenance(self) -> Mapping[str, str]:
        return self.source.flat()

    def describe(self) -> str:
        return f"{self.text} ({self.source.describe()})"


@dataclass(frozen=True)
class RepositoryRates:
    """The rates of one repository backend; None where the calibration has no such value."""

    read_bw: Rate | None
    write_bw: Rate | None
    latency: Rate | None


@dataclass(frozen=True)
class Calibration:
    values: Mapping[str, Rate]  # dotted name -> rate
    accept_role_mismatch: tuple[str, ...] = ()
    path: str = ""
    # Not written to the file: what calibrate could not fill, to list beside it.
    missing: tuple[str, ...] = field(default=(), compare=False)

    def get(self, name: str) -> Rate | None:
        return self.values.get(name)

    @property
    def backends(self) -> list[str]:
        return sorted({n.split(".")[1] for n in self.values if n.startswith("repository.")})

    def backend(self, name: str) -> RepositoryRates:
        if name not in self.backends:
            known = ", ".join(self.backends) or "none"
            raise InvalidInput(f"calibration has no repository backend {name!r} (has: {known})")
        return RepositoryRates(*(self.get(f"repository.{name}.{k}") for k in REPOSITORY_KEYS))

    @property
    def cache_hit_bw(self) -> Rate | None:
        return self.get("cache.hit_bw")

    @property
    def flush_bw(self) -> Rate | None:
        return self.get("cache.flush_bw")

    @property
    def nat_cpu_per_packet(self) -> Rate | None:
        return self.get("nat.cpu_per_packet")

    @property
    def nat_cpu_per_conn(self) -> Rate | None:
        return self.get("nat.cpu_per_conn")

    def mismatches(self) -> list[str]:
        """Names of the values whose source does not fit their role (accepted or not)."""
        return [n for n, r in sorted(self.values.items()) if not judge(n, r.source).fits]


def value_names(backends: list[str]) -> list[str]:
    """Every value a complete calibration for these backends has, in file order."""
    return [f"repository.{b}.{k}" for b in backends for k in REPOSITORY_KEYS] + list(OTHER_NAMES)


def parse_calibration(data: Mapping[str, Any], *, path: str = "") -> Calibration:
    """Validate a parsed calibration document; raises InvalidInput (one line) on the first error."""
    from skycache.sim.calibration_schema import validate  # pydantic is loaded only to read a file

    return validate(data, path=path)


def load_calibration(path: str | Path) -> Calibration:
    p = Path(path)
    data = files.load_toml(p, what="calibration file")  # one line for a directory, FIFO, binary, ...
    try:
        return parse_calibration(data, path=str(p))
    except InvalidInput:
        hint = validators.misfiled(data, p, "sim calibration")  # a scenario given as --calibration
        if hint is not None:
            raise InvalidInput(hint) from None
        raise


def _toml(value: Any) -> str:
    """A TOML value: JSON's string escapes are TOML's, and inline tables nest."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _comment(name: str, rate: Rate) -> str:
    verdict = judge(name, rate.source)
    return f"# {role_of(name).short}" + ("" if verdict.fits else f"; ROLE MISMATCH: {verdict.why}")


def render_calibration(cal: Calibration, *, header: str = "") -> str:
    """The TOML text of ``cal`` (round-trips through :func:`parse_calibration`)."""
    # TOML comments take no control characters: a run directory's odd name must not break the file.
    lines = ["# " + "".join(c if c.isprintable() else "?" for c in line) for line in header.splitlines()]
    if cal.missing:
        lines += ["# missing (the model asks for these only when a scenario uses them):"]
        lines += [f"#   {name}" for name in cal.missing]
    lines += [f"format = {_toml(FORMAT)}", f"accept_role_mismatch = {_toml(list(cal.accept_role_mismatch))}"]
    sections: dict[str, list[str]] = {}
    for name in value_names(cal.backends):
        rate = cal.get(name)
        if rate is not None:
            section, key = name.rsplit(".", 1)
            sections.setdefault(section, []).append(f"{key} = {_toml(rate.text)}  {_comment(name, rate)}")
    for section, body in sections.items():
        lines += ["", f"[{section}]", *body]
    for name in value_names(cal.backends):
        rate = cal.get(name)
        if rate is not None:
            lines += ["", f'[sources."{name}"]']
            lines += [f"{k} = {_toml(v)}" for k, v in rate.source.as_dict().items()]
    return "\n".join(lines) + "\n"


def bw_rate(value: float, source: Source) -> Rate:
    return Rate(value, format_bandwidth(value), source)


def duration_rate(value: float, source: Source) -> Rate:
    return Rate(value, format_duration(value), source)


def rate_of(name: str, value: float, source: Source) -> Rate:
    return bw_rate(value, source) if is_bandwidth(name) else duration_rate(value, source)
