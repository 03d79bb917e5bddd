"""The tidy table: one row per condition x repetition x job x direction.

Columns: ``scenario, run_id, condition, label, rep, phase, status, error, job, hostname, host,
direction`` (``host``: the fio server as ``name:port`` in a ``where = "hosts"`` run, ``All clients``
for fio's aggregate over several servers, empty otherwise),
the metrics ``iops, bw_bytes, bw_kib, io_bytes, runtime_ms``, fio's two latencies named for what
they are: ``clat_*`` the completion latency, ``lat_*`` the total latency (submission + completion),
each as ``_mean_ns, _stddev_ns, _p50_ns, _p95_ns, _p99_ns, _p99_9_ns`` of that repetition, then
``usr_cpu, sys_cpu``, the repetition's cache metrics (:data:`cachemetrics.COLUMNS`: ``rc_hit_ratio,
rc_promotions, wb_dirty_end, wb_flush_s, wb_flushed_bytes, wb_flush_dirty_bytes, repo_read_bytes``, and
``repo_read_per_byte``, repo_read_bytes per byte the workload read,
NaN where the stack has no such cache; one value per repetition, repeated on its job and direction
rows), the stack's attributes (``backend, transport, cow, read_cache, write_cache,
write_engine, repo_delay_ms``) and every factor of the scenario as its own column. Each latency's fio
histogram is kept as two list columns (``clat_hist_ns``/``clat_hist_count``, ``lat_hist_*``; empty
when fio wrote none) for percentiles across repetitions (:mod:`skycache.bench.latency`). A failed
condition is one row with ``status == "failed"``, the reason in ``error`` and NaN metrics, so failures
are visible in every analysis.

``tidy.csv`` beside ``tidy.parquet`` holds the same rows without the histogram columns.

Tables written before the clat/lat split named completion-latency percentiles ``lat_p50_ns`` ...
``lat_p99_9_ns``; :func:`load` renames them to ``clat_*`` (such tables have no ``lat_p*``: fio was not
asked for total-latency percentiles), unless the run's job files asked fio for ``lat_percentiles``,
in which case they were total latency and stay ``lat_*``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skycache.bench import cachemetrics, fioparse, latency
from skycache.bench.store import TIDY, RunDir, find_runs, read_table
from skycache.errors import InvalidInput

TIDY_CSV = "tidy.csv"
_LATENCY_STATS = ("mean", "stddev", *latency.PERCENTILES)
METRICS = (
    "iops",
    "bw_bytes",
    "bw_kib",
    "io_bytes",
    "runtime_ms",
    *(f"{kind}_{stat}_ns" for kind in latency.KINDS for stat in _LATENCY_STATS),
    "usr_cpu",
    "sys_cpu",
    *cachemetrics.COLUMNS,
    "repo_read_per_byte",
)
HISTOGRAMS = tuple(col for kind in latency.KINDS for col in latency.hist_columns(kind))
# Before the clat/lat split these names held completion-latency percentiles (fio's default).
_OLD_PERCENTILES = {f"lat_{name}_ns": f"clat_{name}_ns" for name in latency.PERCENTILES}
_ASKS_LAT_PERCENTILES = re.compile(r"^\s*lat_percentiles\s*=\s*(?:1|true)\s*$", re.MULTILINE | re.IGNORECASE)


def _latency_values(kind: str, lat: fioparse.Latency) -> dict[str, Any]:
    ns_col, count_col = latency.hist_columns(kind)
    values: dict[str, Any] = {f"{kind}_mean_ns": lat.mean_ns, f"{kind}_stddev_ns": lat.stddev_ns}
    values.update({latency.pct_column(kind, n): lat.percentiles_ns[n] for n in latency.PERCENTILES})
    values[ns_col] = [v for v, _ in lat.bins]
    values[count_col] = [c for _, c in lat.bins]
    return values


def rows_for(record: Mapping[str, Any], result: fioparse.FioResult | None) -> list[dict[str, Any]]:
    """Tidy rows for one condition record (see orchestrate) and its parsed fio result."""
    base = {k: record.get(k) for k in ("scenario", "run_id", "condition", "label", "rep", "phase", "status")}
    base["error"] = record.get("error") or ""
    base.update(record.get("stack_attrs", {}))
    base.update(record.get("factors", {}))
    base["start"] = record.get("start")
    measured = record.get("cache_metrics") or {}
    caches = {c: math.nan if measured.get(c) is None else float(measured[c]) for c in cachemetrics.COLUMNS}
    if result is None or record.get("status") != "ok":
        row = dict(base, job="", hostname="", host=", ".join(record.get("hosts", [])), direction="")
        row.update({m: math.nan for m in METRICS})
        row.update(caches, repo_read_per_byte=math.nan)  # a failed repetition may still have flushed
        row.update({h: [] for h in HISTOGRAMS})
        return [row]
    caches["repo_read_per_byte"] = _per_byte_read(caches["repo_read_bytes"], result)
    rows = []
    for job in result.jobs:
        for direction, st in job.directions.items():
            row = dict(base, job=job.name, hostname=job.hostname or "", host=job.host, direction=direction)
            row.update(
                iops=st.iops,
                bw_bytes=st.bw_bytes,
                bw_kib=st.bw_kib,
                io_bytes=float(st.io_bytes),
                runtime_ms=float(st.runtime_ms),
                **_latency_values("clat", st.clat),
                **_latency_values("lat", st.lat),
                usr_cpu=job.usr_cpu,
                sys_cpu=job.sys_cpu,
                **caches,
            )
            rows.append(row)
    return rows


def _per_byte_read(repo_read_bytes: float, result: fioparse.FioResult) -> float:
    """Bytes read from the repository per byte the workload read. The raw byte count of a time-based
    run grows with the machine's speed (a faster run reads more), so it cannot be compared across runs
    or conditions; per byte read it says what the cache saved: about 0 for a warm cache, 1 or more
    without one (a cache block or readahead larger than the request reads more than was asked)."""
    jobs = [j for j in result.jobs if j.hostname == "All clients"] or list(result.jobs)
    read = sum(float(st.io_bytes) for j in jobs for d, st in j.directions.items() if d == "read")
    return repo_read_bytes / read if read > 0 and math.isfinite(repo_read_bytes) else math.nan


def frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for m in METRICS:
        if m in df.columns:
            df[m] = pd.to_numeric(df[m], errors="coerce")
    if "rep" in df.columns:
        df["rep"] = pd.to_numeric(df["rep"], errors="coerce").astype("Int64")
    return df


def build(run: RunDir) -> pd.DataFrame:
    """Rebuild the tidy table of a run from its records and raw fio JSON (the source of truth)."""
    rows: list[dict[str, Any]] = []
    for rec in run.latest_records():  # a repetition run again replaces its failed record
        result = None
        if rec.get("status") == "ok" and rec.get("json"):
            result = fioparse.parse((run.path / rec["json"]).read_text())
        rows += rows_for(rec, result)
    return frame(rows)


def write(run: RunDir, df: pd.DataFrame) -> Path:
    return write_table(run.path, df)


def write_table(run_dir: Path, df: pd.DataFrame) -> Path:
    """tidy.parquet and, beside it, tidy.csv (the same rows; list columns such as the latency
    histograms stay in the Parquet table only). Each file appears whole or not at all."""
    out = run_dir / TIDY
    tmp = run_dir / (TIDY + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    flat = df.drop(columns=[c for c in df.columns if c in HISTOGRAMS])
    csv_tmp = run_dir / (TIDY_CSV + ".tmp")
    flat.to_csv(csv_tmp, index=False)
    csv_tmp.replace(run_dir / TIDY_CSV)
    return out


def upgrade_columns(df: pd.DataFrame, run_dir: Path | None = None) -> pd.DataFrame:
    """A fio table written before the clat/lat split, with today's column names (see the module
    docstring); any other table unchanged. Percentiles the old table never recorded stay absent
    (not NaN columns), so that comparisons skip them rather than print empty rows."""
    old = [c for c in _OLD_PERCENTILES if c in df.columns]
    if "iops" not in df.columns or not old or any(c in df.columns for c in _OLD_PERCENTILES.values()):
        return df
    if run_dir is not None and _asked_lat_percentiles(run_dir):
        return df
    return df.rename(columns={c: _OLD_PERCENTILES[c] for c in old})


def _asked_lat_percentiles(run_dir: Path) -> bool:
    jobs = run_dir / "jobs"
    if not jobs.is_dir():
        return False
    for job in jobs.rglob("*.fio"):
        try:
            if _ASKS_LAT_PERCENTILES.search(job.read_text(errors="replace")):
                return True
        except OSError:
            continue
    return False


def load(path_or_paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One DataFrame from run directories, tidy.parquet files, or directories holding runs.

    Works for any run directory with a tidy.parquet (fio runs, nat-bench runs). Adds ``run_dir``
    (and ``run_id``/``scenario`` from the path when a table lacks them); old column names are mapped
    to today's (:func:`upgrade_columns`).
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    frames = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.name.endswith(".parquet"):
            runs = [p.parent]
            files = [p]
        elif p.is_dir():
            runs = find_runs(p)
            files = [r / TIDY for r in runs]
        else:
            raise InvalidInput(f"{p}: no such run directory or tidy table")
        if not files:
            raise InvalidInput(f"{p}: no run with a {TIDY} here")
        for run_dir, f in zip(runs, files, strict=True):
            df = upgrade_columns(read_table(f), run_dir)  # a truncated or foreign file: one line
            df["run_dir"] = str(run_dir)
            if "run_id" not in df.columns:
                df["run_id"] = run_dir.name
            if "scenario" not in df.columns:
                df["scenario"] = run_dir.parent.name
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
