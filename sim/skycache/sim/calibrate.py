"""Derive a calibration from benchmark run directories (``tidy.parquet`` + ``manifest.json``).

Two kinds of run are recognised by their columns:

* fio runs (``bw_bytes``): per ``backend``, repository read/write bandwidth and latency from rows
  without a read/write cache over the network (``transport`` not local); read-cache hit bandwidth
  from warm-cache reads; the write-back flush rate from the cache metrics ``wb_flushed_bytes /
  wb_flush_s``, or from write rows whose scenario/condition mentions "flush".
* NAT runs (``cpu_ns_per_packet``): gateway CPU per packet and per connection from the ``nat``
  condition (the ``routed`` baseline is noted beside it).

Every (run, condition) gives a candidate: the median over repetitions of the repetition's value (the
sum over its jobs for a bandwidth, the mean for a latency), with a :class:`Source` naming the run,
condition, column, statistic and fio workload. Per value, the best candidate whose workload fits the
value's role is taken (largest bandwidth, smallest latency or CPU cost); else the best misfit if
``accept`` names the value; else the ``--base`` value; else the best misfit, which the model refuses
unless the calibration accepts it (skycache.sim.calibration_roles). A
value nothing provides is listed as missing, with what would provide it; it is not an error here.

Columns are read defensively: a missing factor column means "not varied"; ``rep`` is accepted for
``repetition``; rows with a ``status`` other than ok or a ``phase`` other than measure are dropped;
in a multi-host run only fio's "All clients" aggregate is counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from skycache import files
from skycache.errors import InvalidInput
from skycache.sim.calibration import Calibration, Rate, rate_of, value_names
from skycache.sim.calibration_roles import FLUSH_COLUMN, how_to_measure, judge, role_of
from skycache.sim.calibration_source import Source, Workload
from skycache.sim.calibration_workloads import condition_workloads
from skycache.sim.quantities import MAX_BANDWIDTH

_OFF = {"", "none", "off", "no", "false", "0", "nan", "uncached", "disabled"}
_GROUP = ["run_id", "condition", "repetition"]
_SUM = "the sum over its jobs"  # jobs run at once: their bandwidths add
_MEAN = "the mean over its jobs"


@dataclass(frozen=True)
class Candidate:
    value: float
    source: Source


@dataclass
class Derivation:
    """The calibration, and what the CLI tells about it (misfits, base values preferred to them)."""

    calibration: Calibration
    notes: list[str] = field(default_factory=list)


def _accel(manifest: dict[str, Any]) -> str:
    env = manifest.get("environment")
    found = manifest.get("accel") or manifest.get("acceleration")
    if not found and isinstance(env, dict):
        found = env.get("accel")
    return _line(found) if isinstance(found, str) else ""


def _load_run(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    tidy = path / "tidy.parquet"
    if not tidy.is_file():
        raise InvalidInput(f"run {str(path)!r} has no tidy.parquet")
    try:
        df = pd.read_parquet(tidy)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InvalidInput(f"run {str(path)!r}: tidy.parquet is unreadable ({type(exc).__name__})") from None
    manifest: dict[str, Any] = {}
    mpath = path / "manifest.json"
    if mpath.exists():  # a directory, binary or list-shaped manifest is one line, like corrupt JSON
        try:
            manifest = json.loads(files.read_text(mpath, what="run manifest"))
        except (json.JSONDecodeError, RecursionError):
            raise InvalidInput(f"run {str(path)!r}: manifest.json is not JSON") from None
        if not isinstance(manifest, dict):
            raise InvalidInput(f"run {str(path)!r}: manifest.json is not a JSON object")
    df = df.copy()
    if "repetition" not in df.columns and "rep" in df.columns:
        df["repetition"] = df["rep"]  # the bench driver's name for it
    # Only measured, successful rows: no warm-up passes, no jobs that fio reported as errors.
    if "status" in df.columns:
        df = df[df["status"].astype(str).str.lower().isin(["ok", "", "nan", "none"])]
    if "phase" in df.columns:
        df = df[df["phase"].astype(str).str.lower().isin(["measure", "", "nan", "none"])]
    if "run_id" not in df.columns:
        df["run_id"] = str(manifest.get("run_id", path.name))
    for col, default in (("condition", "default"), ("repetition", 0)):
        if col not in df.columns:
            df[col] = default
    if "host" in df.columns:
        # fio's client/server mode reports each server and an "All clients" sum: count the sum only.
        total = df["host"].astype(str) == "All clients"
        has_total = total.groupby([df["condition"], df["repetition"]]).transform("any")
        df = df[total | ~has_total]
    df["_run_path"] = str(path)
    return df, manifest


def _off(series: pd.Series[Any]) -> pd.Series[bool]:
    return series.astype(str).str.strip().str.lower().isin(_OFF) | series.isna()


def _col(df: pd.DataFrame, name: str, default: Any) -> pd.Series[Any]:
    return df[name] if name in df.columns else pd.Series(default, index=df.index)


def _mentions(df: pd.DataFrame, word: str) -> pd.Series[bool]:
    text = _col(df, "scenario", "").astype(str) + " " + _col(df, "condition", "").astype(str)
    return text.str.lower().str.contains(word)


def _line(text: str) -> str:
    """Text from a run's table as one printable line, as the calibration file requires."""
    return "".join(c if c.isprintable() else "?" for c in text)[:1000]


@dataclass(frozen=True)
class _RunInfo:
    path: str
    accel: str
    workloads: dict[str, Workload]


def _candidates(
    df: pd.DataFrame, value: str, info: _RunInfo, *, aggregate: str, per_rep: str = ""
) -> list[Candidate]:
    """One candidate per condition: the median over repetitions of the rows' sum (or mean) in each;
    ``per_rep`` says what that is, for the statistic ("the sum over its jobs")."""
    numeric = pd.to_numeric(df[value], errors="coerce")
    df = df.assign(**{value: numeric})
    df = df[numeric.notna() & numeric.abs().lt(float("inf"))]  # NaN and +-inf are not measurements
    if df.empty:
        return []
    reps = df.groupby(_GROUP, dropna=False)[value].agg(aggregate).reset_index()
    per_cond = reps.groupby("condition", dropna=False, sort=True)[value].agg(["median", "count"])
    out = []
    for cond, row in per_cond.iterrows():
        if not row["median"] > 0:
            continue
        n = int(row["count"])
        src = Source(
            kind="run",
            run=_line(info.path),
            condition=_line(str(cond)),
            column=value,
            statistic=f"median of {n} repetition{'s' if n != 1 else ''}"
            + (f" (each {per_rep})" if per_rep else ""),
            workload=info.workloads.get(str(cond), Workload()),
            accel=info.accel,
        )
        out.append(Candidate(float(row["median"]), src))
    return out


def _fio_candidates(df: pd.DataFrame, info: _RunInfo) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    direction = _col(df, "direction", "read").astype(str).str.lower()
    rcache_off = _off(_col(df, "read_cache", None))
    wcache_off = _off(_col(df, "write_cache", None))
    backend = _col(df, "backend", "lvm").astype(str)
    # The repository is reached over the network: local-disk rows are not repository rates.
    remote = _col(df, "transport", "iscsi").astype(str).str.lower() != "local"
    for name in sorted(backend[remote].unique()):
        here = remote & (backend == name)
        reads = df[here & (direction == "read") & rcache_off]
        writes = df[here & (direction == "write") & wcache_off]
        repo = f"repository.{name}"
        out[f"{repo}.read_bw"] = _candidates(reads, "bw_bytes", info, aggregate="sum", per_rep=_SUM)
        if "lat_mean_ns" in reads.columns:
            lat = _candidates(reads, "lat_mean_ns", info, aggregate="mean", per_rep=_MEAN)
            out[f"{repo}.latency"] = [replace(c, value=c.value * 1e-9) for c in lat]
        out[f"{repo}.write_bw"] = _candidates(writes, "bw_bytes", info, aggregate="sum", per_rep=_SUM)
    warm = _col(df, "cache_state", "").astype(str).str.lower() == "warm"
    hits = df[(direction == "read") & ~rcache_off & warm]
    out["cache.hit_bw"] = _candidates(hits, "bw_bytes", info, aggregate="sum", per_rep=_SUM)
    writes_flush = df[(direction == "write") & _mentions(df, "flush")]
    flush = _candidates(writes_flush, "bw_bytes", info, aggregate="sum", per_rep=_SUM)
    if {"wb_flushed_bytes", "wb_flush_s"} <= set(df.columns):
        # A measured flush: the bytes the write-back cache wrote back over the time it took.
        seconds = pd.to_numeric(df["wb_flush_s"], errors="coerce")
        rate = pd.to_numeric(df["wb_flushed_bytes"], errors="coerce") / seconds.where(seconds > 0)
        measured = df.assign(**{FLUSH_COLUMN: rate})[~wcache_off]
        flush += _candidates(measured, FLUSH_COLUMN, info, aggregate="mean")
    out["cache.flush_bw"] = flush
    return out


def _nat_candidates(df: pd.DataFrame, info: _RunInfo) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    cond = df["condition"].astype(str).str.lower()
    nat, routed = df[cond == "nat"], df[cond == "routed"]
    for key, col in (("nat.cpu_per_packet", "cpu_ns_per_packet"), ("nat.cpu_per_conn", "cpu_ns_per_conn")):
        if col not in nat.columns:
            continue
        note = ""
        if not routed.empty:
            base = pd.to_numeric(routed[col], errors="coerce").median()
            note = f"routed baseline {base:.6g} ns (median)"
        got = _candidates(nat, col, info, aggregate="mean")
        out[key] = [Candidate(c.value * 1e-9, replace(c.source, note=note)) for c in got]
    return out


def _best(name: str, cands: Sequence[Candidate]) -> Candidate:
    # Bandwidths: the fastest condition; latencies and CPU costs: the cheapest.
    larger = name.endswith("_bw")
    pick = max(cands, key=lambda c: c.value) if larger else min(cands, key=lambda c: c.value)
    if len(cands) > 1:
        which = "largest" if larger else "smallest"
        stat = f"{pick.source.statistic}; the {which} of {len(cands)} conditions"
        pick = replace(pick, source=replace(pick.source, statistic=stat))
    return pick


def _checked(name: str, c: Candidate) -> Rate:
    # A rate the model would divide by: an absurd value in a run's table must not become one.
    top = MAX_BANDWIDTH if name.endswith("_bw") else 1e6  # seconds: a request or a packet costs less
    if not math.isfinite(c.value) or c.value <= 0 or c.value > top:
        raise InvalidInput(f"{name} = {c.value!r} from run {c.source.run!r} is not a usable rate")
    return rate_of(name, c.value, c.source)


def _from_base(base: Calibration, name: str) -> Rate | None:
    rate = base.get(name)
    if rate is None:
        return None
    # A value passed on keeps what the base file knew of it; a chain of bases keeps the first origin.
    origin = rate.source.origin if rate.source.kind == "base" else rate.source
    return replace(rate, source=Source(kind="base", file=base.path or "(in memory)", origin=origin))


def _misfit_note(name: str, rate: Rate) -> str:
    verdict = judge(name, rate.source)
    return (
        f"{name}: {verdict.why}, not a {role_of(name).short}: the model refuses it unless "
        f"accept_role_mismatch lists it (--accept-role-mismatch {name}); "
        f"to measure it: {how_to_measure(name)}"
    )


def derive_report(
    runs: Iterable[Path], base: Calibration | None = None, accept: Sequence[str] = ()
) -> Derivation:
    """The calibration from the runs (and ``base``), the values it lacks, and notes for the user."""
    found: dict[str, list[Candidate]] = {}
    count = 0
    for path in runs:
        count += 1
        df, manifest = _load_run(Path(path))
        if "bw_bytes" in df.columns:
            info = _RunInfo(str(path), _accel(manifest), condition_workloads(Path(path), df))
            got = _fio_candidates(df, info)
        elif "cpu_ns_per_packet" in df.columns or "cpu_ns_per_conn" in df.columns:
            got = _nat_candidates(df, _RunInfo(str(path), _accel(manifest), {}))
        else:
            raise InvalidInput(f"run {str(path)!r}: tidy.parquet is neither a fio nor a NAT benchmark")
        for name, cands in got.items():
            found.setdefault(name, []).extend(cands)
    if count == 0:
        raise InvalidInput("no run directories given")
    backends = sorted({n.split(".")[1] for n, c in found.items() if n.startswith("repository.") and c})
    if base is not None:
        backends = sorted(set(backends) | set(base.backends))
    values: dict[str, Rate] = {}
    notes: list[str] = []
    accepted: list[str] = []
    missing: list[str] = []
    for name in value_names(backends or ["<backend>"]):
        cands = found.get(name, [])
        fitting = [c for c in cands if judge(name, c.source).fits]
        from_base = _from_base(base, name) if base is not None else None
        if fitting:
            values[name] = _checked(name, _best(name, fitting))
        elif cands and name in accept:
            # Asked for by name: the measurement, misfit and all, rather than the base's value.
            values[name] = _checked(name, _best(name, cands))
        elif from_base is not None:
            values[name] = from_base
            if base is not None and name in base.accept_role_mismatch:
                accepted.append(name)  # the acceptance travels with the value it was given for
            if cands:
                why = judge(name, _best(name, cands).source).why
                notes.append(f"{name}: from --base; the runs' value ({why}) does not fit its role")
        elif cands:
            values[name] = _checked(name, _best(name, cands))
            notes.append(_misfit_note(name, values[name]))
        else:
            missing.append(name)
    if not values:
        raise InvalidInput(
            "the runs provide no calibration value: give fio or nat-bench runs, or --base FILE"
        )
    for name in accept:
        if name not in values:
            raise InvalidInput(f"--accept-role-mismatch {name!r}: the calibration has no such value")
        if judge(name, values[name].source).fits:
            raise InvalidInput(
                f"--accept-role-mismatch {name!r}: its source fits its role; nothing to accept"
            )
        accepted.append(name)
    cal = Calibration(values, tuple(dict.fromkeys(accepted)), missing=tuple(missing))
    return Derivation(cal, notes)


def derive(runs: Iterable[Path], base: Calibration | None = None) -> Calibration:
    """A calibration from the runs; values no run provides come from ``base``, else are missing."""
    return derive_report(runs, base).calibration


def missing_hint(name: str) -> str:
    """How to supply a value a calibration lacks (the CLI's list)."""
    return f"{name}: the {role_of(name).title}; give {how_to_measure(name)}, or --base FILE"
