"""Parse fio's JSON output, defensively.

fio's JSON is the source of truth, but the text fio writes is not always pure JSON: in client/server
mode and on errors it prints progress or ``fio: ...`` lines before (and sometimes after) the
document. A client-mode document (``fio --client=...``) has ``client_stats`` instead of ``jobs``: one
entry per job and fio server (``hostname``, ``port``), plus an ``All clients`` aggregate when there
are several servers; it parses into the same types, the server kept on each :class:`JobResult`.
The parser finds the JSON document inside the text, keeps the rest as notes, and turns
fio's own error codes into :class:`FioError`.

Units (fio 3.x): ``bw`` is KiB/s, ``bw_bytes`` bytes/s, latencies are ns; percentile keys are strings
such as ``"99.900000"``. fio has two latencies per direction, kept apart here: ``clat_ns``, the
completion latency (submission to completion), and ``lat_ns``, the total latency (``slat`` + ``clat``:
from the moment fio issued the I/O). Percentiles are on ``clat_ns`` by default and on both with
``clat_percentiles=1`` and ``lat_percentiles=1`` (what skycache's job files ask). fio's ``json+`` output
adds each one's histogram as ``bins`` (bucket value in ns -> count), which skycache merges across
repetitions (:mod:`skycache.bench.latency`). Client mode's "All clients" aggregate carries neither
percentiles nor bins (fio 3.33): the per-server entries do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from skycache.errors import SkycacheError

DIRECTIONS = ("read", "write", "trim")
PERCENTILES = {"p50": "50.000000", "p95": "95.000000", "p99": "99.000000", "p99_9": "99.900000"}
ALL_CLIENTS = "All clients"


class FioParseError(SkycacheError):
    """The text holds no usable fio JSON document."""


class FioError(SkycacheError):
    """fio ran but reported an error (a job's ``error`` field, or ``fio:`` error lines)."""


@dataclass(frozen=True)
class Latency:
    """One of fio's latencies (``clat_ns`` or ``lat_ns``) of one direction."""

    mean_ns: float
    stddev_ns: float
    min_ns: float
    max_ns: float
    percentiles_ns: Mapping[str, float]  # p50, p95, p99, p99_9 (NaN when fio did not report them)
    # json+ only: (bucket value ns, count) sorted by value; empty when fio wrote no histogram
    bins: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class DirectionStats:
    iops: float
    bw_bytes: float  # bytes/s
    io_bytes: int
    runtime_ms: int
    total_ios: int
    clat: Latency  # completion latency
    lat: Latency  # total latency (submission + completion)

    @property
    def bw_kib(self) -> float:
        return self.bw_bytes / 1024.0


@dataclass(frozen=True)
class JobResult:
    name: str
    hostname: str | None  # client/server mode: the fio server, or "All clients" for the aggregate
    error: int
    elapsed_s: float
    directions: Mapping[str, DirectionStats]
    usr_cpu: float
    sys_cpu: float
    port: int | None = None  # client/server mode: the fio server's port

    @property
    def host(self) -> str:
        """The fio server as ``name:port`` (client mode), the aggregate's name, or "" (local run)."""
        if not self.hostname or self.hostname == ALL_CLIENTS or self.port is None:
            return self.hostname or ""
        name = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{name}:{self.port}"


@dataclass(frozen=True)
class FioResult:
    fio_version: str
    timestamp: int
    jobs: tuple[JobResult, ...]
    notes: tuple[str, ...] = field(default=())  # text fio printed around the JSON

    def job_errors(self) -> list[str]:
        return [f"job {j.name!r}{_on(j.hostname)}: error {j.error}" for j in self.jobs if j.error]

    def check(self) -> FioResult:
        """Raise FioError when fio reported any error; otherwise return self."""
        errors = self.job_errors() + [n for n in self.notes if _is_error_line(n)]
        if errors:
            raise FioError("fio reported errors: " + "; ".join(errors[:3]))
        return self


def _on(hostname: str | None) -> str:
    return f" on {hostname}" if hostname else ""


def _is_error_line(line: str) -> bool:
    low = line.lower()
    return low.startswith("fio:") and ("err" in low or "fail" in low or "invalid" in low)


def extract_json(text: str) -> tuple[dict[str, Any], list[str]]:
    """The first fio JSON document in ``text`` and the non-JSON lines around it."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            break
        try:
            doc, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(doc, dict) and ("jobs" in doc or "client_stats" in doc):
            notes = _lines(text[:start]) + _lines(text[end:])
            return doc, notes
        pos = end
    notes = _lines(text)
    hint = f": {notes[-1]}" if notes else ": empty output"
    raise FioParseError(f"no fio JSON document found{hint}")


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _num(d: Mapping[str, Any], key: str, default: float = math.nan) -> float:
    v = d.get(key, default)
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _bins(raw: object) -> tuple[tuple[int, int], ...]:
    """json+ ``bins``: {"<ns>": count}; entries that are not whole non-negative numbers are skipped."""
    if not isinstance(raw, dict):
        return ()
    out = []
    for key, count in raw.items():
        try:
            value, n = int(key), int(count)
        except (TypeError, ValueError):
            continue
        if value >= 0 and n > 0:
            out.append((value, n))
    return tuple(sorted(out))


def _latency(raw: object) -> Latency:
    d = raw if isinstance(raw, dict) else {}
    pct = d.get("percentile")
    pct = pct if isinstance(pct, dict) else {}
    return Latency(
        mean_ns=_num(d, "mean"),
        stddev_ns=_num(d, "stddev"),
        min_ns=_num(d, "min"),
        max_ns=_num(d, "max"),
        percentiles_ns={name: _num(pct, key) for name, key in PERCENTILES.items()},
        bins=_bins(d.get("bins")),
    )


def _direction(d: Mapping[str, Any]) -> DirectionStats:
    return DirectionStats(
        iops=_num(d, "iops", 0.0),
        bw_bytes=_num(d, "bw_bytes", _num(d, "bw", 0.0) * 1024.0),
        io_bytes=int(_num(d, "io_bytes", 0.0)),
        runtime_ms=int(_num(d, "runtime", 0.0)),
        total_ios=int(_num(d, "total_ios", 0.0)),
        clat=_latency(d.get("clat_ns")),
        lat=_latency(d.get("lat_ns")),
    )


def _job(raw: Mapping[str, Any]) -> JobResult:
    dirs = {}
    for name in DIRECTIONS:
        d = raw.get(name)
        if isinstance(d, dict) and (d.get("total_ios") or d.get("io_bytes")):
            dirs[name] = _direction(d)
    port = raw.get("port")
    # A client-mode entry has no "elapsed" (s) but "job_runtime" (ms).
    elapsed = _num(raw, "elapsed", _num(raw, "job_runtime", 0.0) / 1000.0)
    return JobResult(
        name=str(raw.get("jobname", "?")),
        hostname=raw.get("hostname"),
        error=int(raw.get("error", 0) or 0),
        elapsed_s=elapsed,
        directions=dirs,
        usr_cpu=_num(raw, "usr_cpu"),
        sys_cpu=_num(raw, "sys_cpu"),
        port=int(port) if isinstance(port, int) and not isinstance(port, bool) else None,
    )


def parse(text: str) -> FioResult:
    """Parse fio's output (JSON possibly wrapped in other text). Does not raise on job errors:
    call :meth:`FioResult.check` for that."""
    doc, notes = extract_json(text)
    raw_jobs = doc.get("client_stats") if "client_stats" in doc else doc.get("jobs")
    if not isinstance(raw_jobs, list):
        raise FioParseError("fio JSON has no job list")
    jobs = []
    for raw in raw_jobs:
        if not isinstance(raw, dict):
            continue
        job = _job(raw)
        if "client_stats" in doc and job.name == ALL_CLIENTS:
            job = replace(job, hostname=ALL_CLIENTS, port=None)
        jobs.append(job)
    return FioResult(
        str(doc.get("fio version", "?")), int(_num(doc, "timestamp", 0.0)), tuple(jobs), tuple(notes)
    )
