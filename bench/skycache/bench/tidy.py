"""The tidy table: one row per condition x repetition x job x direction.

Columns: ``scenario, run_id, condition, label, rep, phase, status, error, job, hostname, host,
direction`` (``host``: the fio server as ``name:port`` in a ``where = "hosts"`` run, ``All clients``
for fio's aggregate over several servers, empty otherwise),
the metrics ``iops, bw_bytes, bw_kib, io_bytes, runtime_ms, lat_mean_ns, lat_stddev_ns, lat_p50_ns,
lat_p95_ns, lat_p99_ns, lat_p99_9_ns, clat_mean_ns, usr_cpu, sys_cpu``, the stack's attributes
(``backend, transport, cow, read_cache, write_cache, write_engine, repo_delay_ms``) and every factor
of the scenario as its own column. A failed condition is one row with ``status == "failed"``, the
reason in ``error`` and NaN metrics, so failures are visible in every analysis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skycache.bench import fioparse
from skycache.bench.store import TIDY, RunDir, find_runs, read_table
from skycache.errors import InvalidInput

METRICS = (
    "iops",
    "bw_bytes",
    "bw_kib",
    "io_bytes",
    "runtime_ms",
    "lat_mean_ns",
    "lat_stddev_ns",
    "lat_p50_ns",
    "lat_p95_ns",
    "lat_p99_ns",
    "lat_p99_9_ns",
    "clat_mean_ns",
    "usr_cpu",
    "sys_cpu",
)


def rows_for(record: Mapping[str, Any], result: fioparse.FioResult | None) -> list[dict[str, Any]]:
    """Tidy rows for one condition record (see orchestrate) and its parsed fio result."""
    base = {k: record.get(k) for k in ("scenario", "run_id", "condition", "label", "rep", "phase", "status")}
    base["error"] = record.get("error") or ""
    base.update(record.get("stack_attrs", {}))
    base.update(record.get("factors", {}))
    base["start"] = record.get("start")
    if result is None or record.get("status") != "ok":
        row = dict(base, job="", hostname="", host=", ".join(record.get("hosts", [])), direction="")
        row.update({m: math.nan for m in METRICS})
        return [row]
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
                lat_mean_ns=st.lat_mean_ns,
                lat_stddev_ns=st.lat_stddev_ns,
                lat_p50_ns=st.percentiles_ns["p50"],
                lat_p95_ns=st.percentiles_ns["p95"],
                lat_p99_ns=st.percentiles_ns["p99"],
                lat_p99_9_ns=st.percentiles_ns["p99_9"],
                clat_mean_ns=st.clat_mean_ns,
                usr_cpu=job.usr_cpu,
                sys_cpu=job.sys_cpu,
            )
            rows.append(row)
    return rows


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
    for rec in run.records():
        result = None
        if rec.get("status") == "ok" and rec.get("json"):
            result = fioparse.parse((run.path / rec["json"]).read_text())
        rows += rows_for(rec, result)
    return frame(rows)


def write(run: RunDir, df: pd.DataFrame) -> Path:
    out = run.path / TIDY
    tmp = run.path / (TIDY + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out


def load(path_or_paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One DataFrame from run directories, tidy.parquet files, or directories holding runs.

    Works for any run directory with a tidy.parquet (fio runs, nat-bench runs). Adds ``run_dir``
    (and ``run_id``/``scenario`` from the path when a table lacks them).
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
            df = read_table(f)  # a truncated or foreign file: one line naming it
            df["run_dir"] = str(run_dir)
            if "run_id" not in df.columns:
                df["run_id"] = run_dir.name
            if "scenario" not in df.columns:
                df["scenario"] = run_dir.parent.name
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
