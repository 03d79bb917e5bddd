"""Derive a calibration from benchmark run directories (``tidy.parquet`` + ``manifest.json``).

Two kinds of run are recognised by their columns:

* fio runs (``bw_bytes``): repository read/write bandwidth and latency per ``backend`` from rows
  without a read/write cache; read-cache hit rate from warm-cache reads; write-back flush rate from
  rows whose scenario/condition mentions "flush" (else the repository write rate, noted as such).
* NAT runs (``cpu_ns_per_packet``): gateway CPU per packet and per connection from the ``nat``
  condition (the ``routed`` baseline is recorded beside it), conntrack bytes per entry.

Throughput of one repetition is the sum over its jobs; a rate is the median over repetitions of the
best condition (the largest for bandwidth, the smallest for latency), and records run and condition.
Columns are read defensively: a missing factor column means "not varied"; ``rep`` is accepted for
``repetition``; rows with a ``status`` other than ok or a ``phase`` other than measure are dropped;
rows with ``transport == "local"`` are not repository rates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from skycache import files
from skycache.errors import InvalidInput
from skycache.sim.calibration import Calibration, Rate, RepositoryRates, bw_rate, duration_rate
from skycache.sim.quantities import MAX_BANDWIDTH

_OFF = {"", "none", "off", "no", "false", "0", "nan", "uncached", "disabled"}
_GROUP = ["run_id", "condition", "repetition"]


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
    df["_run_path"] = str(path)
    return df, manifest


def _off(series: pd.Series[Any]) -> pd.Series[bool]:
    return series.astype(str).str.strip().str.lower().isin(_OFF) | series.isna()


def _col(df: pd.DataFrame, name: str, default: Any) -> pd.Series[Any]:
    return df[name] if name in df.columns else pd.Series(default, index=df.index)


def _mentions(df: pd.DataFrame, word: str) -> pd.Series[bool]:
    text = _col(df, "scenario", "").astype(str) + " " + _col(df, "condition", "").astype(str)
    return text.str.lower().str.contains(word)


def _best(
    df: pd.DataFrame, value: str, *, largest: bool, aggregate: str
) -> tuple[float, dict[str, str]] | None:
    """Median over repetitions of the best (run, condition); per repetition jobs are summed or averaged."""
    numeric = pd.to_numeric(df[value], errors="coerce")
    df = df[numeric.notna() & numeric.abs().lt(float("inf"))]  # NaN and +-inf are not measurements
    if df.empty:
        return None
    per_rep = df.groupby(_GROUP, dropna=False)[value].agg(aggregate).reset_index()
    per_cond = per_rep.groupby(["run_id", "condition"], dropna=False)[value].agg(["median", "count"])
    per_cond = per_cond[per_cond["median"] > 0]
    if per_cond.empty:
        return None
    flat = per_cond.reset_index()
    pos = int(flat["median"].to_numpy().argmax() if largest else flat["median"].to_numpy().argmin())
    best = flat.iloc[pos]
    run_id, condition = best["run_id"], best["condition"]
    paths = df.loc[(df.run_id == run_id) & (df.condition == condition), "_run_path"].unique()
    prov = {
        "run": str(paths[0]) if len(paths) else str(run_id),
        "condition": str(condition),
        "column": value,
        "rows": f"{int(best['count'])} repetitions",
    }
    return float(best["median"]), prov


def _fio_rates(df: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"repository": {}}
    direction = _col(df, "direction", "read").astype(str).str.lower()
    rcache_off = _off(_col(df, "read_cache", None))
    wcache_off = _off(_col(df, "write_cache", None))
    backend = _col(df, "backend", "lvm").astype(str)
    # The repository is reached over the network: local-disk rows are not repository rates.
    remote = _col(df, "transport", "iscsi").astype(str).str.lower() != "local"
    for name in sorted(backend[remote].unique()):
        b = df[(backend == name) & remote]
        reads = b[(direction[b.index] == "read") & rcache_off[b.index]]
        writes = b[(direction[b.index] == "write") & wcache_off[b.index]]
        entry: dict[str, Any] = {}
        if not reads.empty:
            entry["read_bw"] = _best(reads, "bw_bytes", largest=True, aggregate="sum")
            if "lat_mean_ns" in reads.columns:
                lat = _best(reads, "lat_mean_ns", largest=False, aggregate="mean")
                entry["latency"] = (lat[0] * 1e-9, lat[1]) if lat else None
        if not writes.empty:
            entry["write_bw"] = _best(writes, "bw_bytes", largest=True, aggregate="sum")
        out["repository"][name] = entry
    warm = _col(df, "cache_state", "").astype(str).str.lower() == "warm"
    hits = df[(direction == "read") & ~rcache_off & warm]
    if not hits.empty:
        out["hit_bw"] = _best(hits, "bw_bytes", largest=True, aggregate="sum")
    flush = df[(direction == "write") & _mentions(df, "flush")]
    if not flush.empty:
        out["flush_bw"] = _best(flush, "bw_bytes", largest=True, aggregate="sum")
    return out


def _nat_rates(df: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cond = df["condition"].astype(str).str.lower()
    nat = df[cond == "nat"]
    if nat.empty:
        return out
    routed = df[cond == "routed"]
    for key, col in (("cpu_per_packet", "cpu_ns_per_packet"), ("cpu_per_conn", "cpu_ns_per_conn")):
        if col in nat.columns:
            got = _best(nat, col, largest=False, aggregate="mean")
            if got:
                value, prov = got
                if col in routed.columns and not routed.empty:
                    base = pd.to_numeric(routed[col], errors="coerce").median()
                    prov["note"] = f"routed baseline {base:.6g} ns"
                out[key] = (value * 1e-9, prov)
    if {"conntrack_bytes", "conntrack_entries"} <= set(nat.columns):
        ok = nat[pd.to_numeric(nat.conntrack_entries, errors="coerce") > 0]
        if not ok.empty:
            per = (ok.conntrack_bytes / ok.conntrack_entries).median()
            run = str(ok["_run_path"].iloc[0])
            out["conntrack_bytes"] = (
                float(per),
                {"run": run, "condition": "nat", "column": "conntrack_bytes"},
            )
    return out


def _merge_best(target: dict[str, Any], key: str, value: Any, *, largest: bool = True) -> None:
    if value is None:
        return
    old = target.get(key)
    if old is None or (value[0] > old[0]) == largest:
        target[key] = value


def derive(runs: Iterable[Path], base: Calibration | None = None) -> Calibration:
    """A calibration from the runs; rates no run provides come from ``base`` (else an error)."""
    fio: dict[str, Any] = {"repository": {}}
    nat: dict[str, Any] = {}
    count = 0
    for path in runs:
        count += 1
        df, _manifest = _load_run(Path(path))
        if "bw_bytes" in df.columns:
            got = _fio_rates(df)
            for backend, entry in got["repository"].items():
                slot = fio["repository"].setdefault(backend, {})
                for k, v in entry.items():
                    _merge_best(slot, k, v, largest=(k != "latency"))
            for k in ("hit_bw", "flush_bw"):
                _merge_best(fio, k, got.get(k))
        elif "cpu_ns_per_packet" in df.columns or "cpu_ns_per_conn" in df.columns:
            for k, v in _nat_rates(df).items():
                _merge_best(nat, k, v, largest=False)
        else:
            raise InvalidInput(f"run {str(path)!r}: tidy.parquet is neither a fio nor a NAT benchmark")
    if count == 0:
        raise InvalidInput("no run directories given")

    def pick(key: str, got: Any, fallback: Rate | None, kind: str) -> Rate:
        if got is not None:
            value, prov = got
            # A rate the model would divide by: an inf or NaN in a run's table must not become one.
            if not math.isfinite(value) or value <= 0 or value > MAX_BANDWIDTH:
                raise InvalidInput(
                    f"{key} = {value!r} from run {prov.get('run', '?')!r} is not a usable rate"
                )
            return bw_rate(value, prov) if kind == "bw" else duration_rate(value, prov)
        if fallback is not None:
            return fallback
        raise InvalidInput(f"no run provides {key}; add such a run or pass --base with a calibration file")

    repos: dict[str, RepositoryRates] = {}
    base_repos: Mapping[str, RepositoryRates] = base.repository if base else {}
    for backend in sorted(set(fio["repository"]) | set(base_repos)):
        e = fio["repository"].get(backend, {})
        b = base_repos.get(backend)
        if b is None and not all(e.get(k) for k in ("read_bw", "write_bw", "latency")):
            fallback_b = next(iter(base_repos.values()), None)
            b = fallback_b
        repos[backend] = RepositoryRates(
            read_bw=pick(f"repository.{backend}.read_bw", e.get("read_bw"), b.read_bw if b else None, "bw"),
            write_bw=pick(
                f"repository.{backend}.write_bw", e.get("write_bw"), b.write_bw if b else None, "bw"
            ),
            latency=pick(f"repository.{backend}.latency", e.get("latency"), b.latency if b else None, "s"),
        )
    if not repos:
        raise InvalidInput("no run provides repository rates; add a fio run or pass --base")
    flush_fallback = base.flush_bw if base else None
    if fio.get("flush_bw") is None and flush_fallback is None:
        # No flush measurement: the flush writes to the repository, so its write rate bounds it.
        first = next(iter(repos.values())).write_bw
        flush_fallback = replace(first, provenance={**first.provenance, "note": "repository write rate"})
    cal = Calibration(
        repository=repos,
        cache_hit_bw=pick("cache.hit_bw", fio.get("hit_bw"), base.cache_hit_bw if base else None, "bw"),
        flush_bw=pick("cache.flush_bw", fio.get("flush_bw"), flush_fallback, "bw"),
        nat_cpu_per_packet=pick(
            "nat.cpu_per_packet", nat.get("cpu_per_packet"), base.nat_cpu_per_packet if base else None, "s"
        ),
        nat_cpu_per_conn=pick(
            "nat.cpu_per_conn", nat.get("cpu_per_conn"), base.nat_cpu_per_conn if base else None, "s"
        ),
        conntrack_bytes=(
            Rate(nat["conntrack_bytes"][0], f"{nat['conntrack_bytes'][0]:.6g} B", nat["conntrack_bytes"][1])
            if nat.get("conntrack_bytes")
            else (base.conntrack_bytes if base else None)
        ),
    )
    return cal
