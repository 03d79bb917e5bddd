"""Latency percentiles across repetitions: fio's histograms merged, never percentiles averaged.

The p99 of a condition is the p99 of all its I/Os, over every repetition. The mean of per-repetition
p99s is not a percentile of anything (one slow repetition of few I/Os weighs as much as a fast one of
many). fio's ``json+`` output holds each run's latency histogram (``bins``: bucket value in ns ->
count); fio's buckets are fixed (log-linear, 64 per power of two: a bucket value is within 1/64 of the
latencies it counts), the same in every run, so merging is adding counts bucket by bucket. The p-th
percentile is then the value of the first bucket at which the cumulative count reaches p/100 of all
I/Os: fio's own rule (``calc_clat_percentiles`` in fio's stat.c), so a single repetition gives back
exactly the percentiles fio printed (checked on recorded fio 3.33 output in the unit tests).

Two latencies, kept apart: ``clat`` (completion: submission to completion) and ``lat`` (total: from
the moment fio issued the I/O). A table without histograms (runs recorded before skycache asked fio
for json+) falls back to the mean of the per-repetition percentile columns, and says so in the
``clat_from`` / ``lat_from`` column of the summary.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from skycache.bench import compare

PERCENTILES: dict[str, float] = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}
PCT_NAMES = {"p50": "p50", "p95": "p95", "p99": "p99", "p99_9": "p99.9"}
KINDS = ("clat", "lat")  # completion latency, total latency
FROM_HISTOGRAMS = "merged histograms"
FROM_REP_MEANS = "mean of per-repetition percentiles (no histograms)"


def hist_columns(kind: str) -> tuple[str, str]:
    """The tidy columns of a latency's histogram: bucket values (ns) and counts, as lists."""
    return f"{kind}_hist_ns", f"{kind}_hist_count"


def pct_column(kind: str, name: str) -> str:
    return f"{kind}_{name}_ns"


Histogram = tuple[np.ndarray, np.ndarray]  # (bucket values ns, counts), values ascending


def merge(hists: Iterable[tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]]) -> Histogram:
    """One histogram of all the I/Os of ``hists``: counts of equal bucket values added."""
    pairs = list(hists)
    if not pairs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return _merge_arrays(
        [np.asarray(v, dtype=np.int64) for v, _ in pairs], [np.asarray(c, dtype=np.int64) for _, c in pairs]
    )


def _merge_arrays(values: list[np.ndarray], counts: list[np.ndarray]) -> Histogram:
    # Added up in a dict and sorted by Python, not with np.unique: numpy's SIMD sort of int64 crashed
    # the interpreter (SIGSEGV) inside the TCG lab, where bench run draws its report. A few thousand
    # buckets per repetition: the cost does not matter.
    total: dict[int, int] = {}
    for vs, cs in zip(values, counts, strict=True):
        for v, c in zip(vs.tolist(), cs.tolist(), strict=True):
            total[v] = total.get(v, 0) + c
    keys = sorted(total)
    return np.asarray(keys, dtype=np.int64), np.asarray([total[k] for k in keys], dtype=np.int64)


def percentiles(hist: Histogram, pcts: Sequence[float]) -> np.ndarray:
    """fio's percentiles of a histogram: the first bucket whose cumulative count reaches p/100 of the
    total (NaN for an empty histogram)."""
    values, counts = hist
    total = int(counts.sum())
    if total == 0:
        return np.full(len(pcts), math.nan)
    cum = np.cumsum(counts)
    # fio compares the running sum with p/100 * N; searchsorted(side="left") finds the first cum >= t
    idx = np.searchsorted(cum, np.asarray(pcts, dtype=float) / 100.0 * total, side="left")
    return values[np.minimum(idx, values.size - 1)].astype(float)


def _has_hist(row: Any, kind: str) -> bool:
    ns_col, count_col = hist_columns(kind)
    v, c = getattr(row, ns_col, None), getattr(row, count_col, None)
    return v is not None and c is not None and len(v) > 0 and len(v) == len(c)


def measured(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that measured something: ok, timed (phase "measure"), with a direction. In client mode
    fio's "All clients" aggregate has no percentiles or histograms: the per-server rows hold the whole
    distribution, so the aggregate is left out here (IOPS sums use it: see compare.per_rep)."""
    if not {"status", "direction"} <= set(df.columns):
        return df.iloc[0:0]
    d = df[(df["status"] == "ok") & (df["direction"] != "")]
    if "phase" in d.columns:
        d = d[d["phase"] == "measure"]
    if "hostname" in d.columns:
        d = d[d["hostname"] != "All clients"]
    return d


def _group_keys(d: pd.DataFrame) -> list[str]:
    # Two runs may share an id (two copies of a run called "ci"): the run directory tells them apart.
    run = ["run_dir"] if "run_dir" in d.columns else ["run_id"]
    return [*run, "label", "direction"]


def _pooled(rows: pd.DataFrame, kind: str) -> tuple[dict[str, float], str, int]:
    """Percentiles of ``kind`` over ``rows`` (any number of repetitions, jobs and servers), the method
    and the number of I/Os behind them (0 when not from histograms)."""
    names = list(PERCENTILES)
    tuples = list(rows.itertuples(index=False))
    if tuples and all(_has_hist(r, kind) for r in tuples):
        ns_col, count_col = hist_columns(kind)
        hist = _merge_arrays(
            [np.asarray(getattr(r, ns_col), dtype=np.int64) for r in tuples],
            [np.asarray(getattr(r, count_col), dtype=np.int64) for r in tuples],
        )
        vals = percentiles(hist, list(PERCENTILES.values()))
        return dict(zip(names, (float(x) for x in vals), strict=True)), FROM_HISTOGRAMS, int(hist[1].sum())
    out = {}
    for name in names:
        col = pct_column(kind, name)
        a = rows[col].to_numpy(dtype=float) if col in rows.columns else np.empty(0)
        a = a[np.isfinite(a)]
        out[name] = float(a.mean()) if a.size else math.nan
    found = any(not math.isnan(v) for v in out.values())
    return out, FROM_REP_MEANS if found else "", 0


def _rows(d: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for key, g in d.groupby(keys, sort=False, dropna=False):
        row: dict[str, Any] = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row["run_id"] = g["run_id"].iloc[0] if "run_id" in g.columns else ""
        row["n"] = int(g["rep"].nunique()) if "rep" in g.columns else len(g)
        for kind in KINDS:
            pcts, method, ios = _pooled(g, kind)
            row[f"{kind}_from"] = method
            row[f"{kind}_ios"] = ios
            for name, value in pcts.items():
                row[pct_column(kind, name)] = value
        out.append(row)
    return out


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per run x condition x direction: clat and lat percentiles (``clat_p50_ns`` ... ``lat_p99_9_ns``)
    over all repetitions, with ``n`` repetitions, ``<kind>_ios`` I/Os merged and ``<kind>_from``."""
    d = measured(df)
    if d.empty:
        return pd.DataFrame()
    out = pd.DataFrame(_rows(d, _group_keys(d)))
    return out.rename(columns={"label": "condition"})


def per_repetition(df: pd.DataFrame) -> pd.DataFrame:
    """The same percentiles for each repetition alone (its jobs and servers merged): the points that
    plots draw next to the pooled bars."""
    d = measured(df)
    if d.empty or "rep" not in d.columns:
        return pd.DataFrame()
    out = pd.DataFrame(_rows(d, [*_group_keys(d), "rep"]))
    return out.rename(columns={"label": "condition"})


def mean_summary(df: pd.DataFrame) -> pd.DataFrame:
    """compare.summary (means with intervals) with its ``lat_p99_us`` replaced by the p99 of all the
    repetitions' I/Os (merged histograms; total latency, or completion latency for runs recorded
    without total-latency percentiles). A table without ``lat_p99_ns`` is summarised without numpy's
    "mean of empty slice" warnings, which are not news for such a run."""
    if "lat_p99_ns" not in df.columns and "iops" in df.columns:
        df = df.assign(lat_p99_ns=math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = compare.summary(df)
    pooled = summary(df)
    if means.empty or pooled.empty:
        return means
    col = pct_column("lat", "p99")
    if not np.isfinite(pooled[col].to_numpy(dtype=float)).any():
        col = pct_column("clat", "p99")
    keys = ["run_id", "condition", "direction"]
    p99 = pooled.drop_duplicates(keys).set_index(keys)[col] / 1000.0
    means["lat_p99_us"] = [p99.get(tuple(k), math.nan) for k in means[keys].itertuples(index=False)]
    return means


def _us(ns: float) -> str:
    return "-" if math.isnan(ns) else f"{ns / 1000.0:.0f}"


def markdown_table(pooled: pd.DataFrame) -> str:
    """The percentiles of :func:`summary` as a Markdown table (microseconds)."""
    shown = ("p50", "p99", "p99_9")
    heads = " | ".join(f"{kind} {PCT_NAMES[name]}" for kind in KINDS for name in shown)
    lines = [f"| condition | dir | n | I/Os | {heads} | from |", "|---|---|---:|---:|" + "---:|" * 6 + "---|"]
    for r in pooled.to_dict(orient="records"):
        cells = [_us(float(r[pct_column(kind, name)])) for kind in KINDS for name in shown]
        ios = max(int(r["clat_ios"]), int(r["lat_ios"]))
        lines.append(
            f"| {r['condition']} | {r['direction']} | {r['n']} | {ios or '-'} | {' | '.join(cells)} | "
            f"{r['clat_from'] or '-'} |"
        )
    return "\n".join(lines)


def condition_summary(df: pd.DataFrame) -> pd.DataFrame:
    """What `bench show` prints: :func:`mean_summary` (IOPS and mean latency with intervals) joined
    with :func:`summary` (percentiles of all repetitions' I/Os), one row per run x condition x
    direction."""
    # compare.summary's lat_p99_us is the mean of per-repetition p99s: the pooled columns replace it
    means = mean_summary(df).drop(columns=["lat_p99_us"], errors="ignore")
    pooled = summary(df)
    if means.empty or pooled.empty:
        return means
    keys = [k for k in ("run_dir", "run_id", "condition", "direction") if k in means.columns and k in pooled]
    extra = [c for c in pooled.columns if c not in means.columns or c in keys]
    return means.merge(pooled[extra], on=keys, how="left")
