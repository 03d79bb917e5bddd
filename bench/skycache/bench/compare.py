"""Compare conditions (or runs) from tidy tables: ratios of geometric means to a baseline.

Each ratio has a Welch t interval on log values (``skycache.bench.stats``); the verdicts of one call
to ``compare`` are Holm-corrected per metric, so a table of many conditions does not turn noise into
findings. A side whose repetitions vary by more than ``stats.UNSTABLE_CV`` is "unstable (CV NN %)"
in place of a verdict.

Baselines:
- several runs and no ``--baseline``: the first run is the baseline of the others, condition by
  condition (the CI regression gate);
- ``--baseline FACTOR=VALUE[,FACTOR=VALUE]``: each condition is compared with the condition of the same
  run that differs only in those factors (e.g. ``stack=lvm-iscsi``); if that condition was excluded,
  ``cache_state`` is ignored for the match (a warm cached stack against the uncached stack);
- ``--baseline LABEL``: one condition (by label or id) against every condition with the same workload;
- one run and no baseline: per workload, the first condition of the scenario.

Cache metrics (docs/bench.md, "Cache metrics") are compared with the same method, condition by
condition, once per repetition rather than per direction (under ``read`` for the read cache and the
repository's reads, ``write`` for the write-back cache, else the first direction measured), and only
where both sides have the cache. Counts that can be exactly zero (a fully warm cache reads nothing from
the repository) get a floor added before the logarithm (``FLOORS``: one 4 KiB page, one block), so
that zero is a value and not a dropped repetition; the ratio is then of (value + floor). The hit
ratio gets none: a repetition with no hit at all is dropped and counted, as a zero IOPS would be.
Promotions, dirty blocks and flushed bytes have no "better" side: their verdict is "higher" or
"lower", and the gate cannot use them.

A *regression* is a change for the worse by more than PCT percent that is significant after the Holm
correction. An unstable condition can still be a regression: the test accounts for its noise, and a
gate that noise could silence would never fail on a loaded machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from skycache.bench import matching, natresults, relative, stats
from skycache.bench.scenario import KNOWN_FACTORS
from skycache.bench.stats import Ratio, ratio_ci
from skycache.errors import InvalidInput

# metric -> True when higher is better, False when lower is, None when neither (not gated)
METRICS: dict[str, bool | None] = {
    "iops": True,
    "bw_bytes": True,
    "lat_mean_ns": False,
    "lat_p99_ns": False,
    "rc_hit_ratio": True,
    "rc_promotions": None,
    "wb_dirty_end": None,
    "wb_flush_s": False,
    "wb_flushed_bytes": None,
    "repo_read_bytes": None,  # grows with the speed of a time-based run: not better or worse
    "repo_read_per_byte": False,  # a read cache that stops caching reads more from the repository
    **natresults.METRICS,  # NAT benchmark runs (natresults.as_compared), under direction "net"
}
# The gate's default metrics (those a run has): repository reads too, so that a cache that stops
# caching fails the gate even when the IOPS of a fast repository hide it.
GATED = ("iops", "bw_bytes", "lat_mean_ns", "repo_read_per_byte")
CACHE_METRICS = (
    "rc_hit_ratio",
    "rc_promotions",
    "wb_dirty_end",
    "wb_flush_s",
    "wb_flushed_bytes",
    "repo_read_bytes",
    "repo_read_per_byte",
)
# compared once per repetition, under this direction when it was measured
_CACHE_DIRECTION = {m: "write" if m.startswith("wb_") else "read" for m in CACHE_METRICS}
FLOORS: dict[str, float] = {"rc_promotions": 1.0, "wb_dirty_end": 1.0, "wb_flushed_bytes": 4096.0,
                            "repo_read_bytes": 4096.0, "repo_read_per_byte": 0.001,
                            **natresults.FLOORS}  # fmt: skip
_SUMMED = ("iops", "bw_bytes")  # per repetition: jobs add up; latencies average


@dataclass(frozen=True)
class Comparison:
    run_id: str
    condition: str  # label
    baseline: str  # "<run_id>:<label>" when across runs, else the label
    direction: str
    metric: str
    mean: float  # geometric mean of the repetitions (the ratio is of these)
    base_mean: float
    ratio: Ratio

    @property
    def higher_is_better(self) -> bool | None:
        return METRICS[self.metric]

    @property
    def verdict(self) -> str:
        if self.ratio.unstable:
            return self.ratio.label
        if not self.ratio.significant:
            return "not significant"
        if self.higher_is_better is None:
            return self.ratio.verdict  # higher / lower: neither is better
        better = (self.ratio.ratio > 1.0) == self.higher_is_better
        return "better" if better else "worse"

    def regression(self, pct: float) -> bool:
        """Worse than the baseline by more than ``pct`` percent, significant after the Holm correction."""
        if not self.ratio.significant or math.isnan(self.ratio.ratio) or self.higher_is_better is None:
            return False
        if self.higher_is_better:
            return self.ratio.ratio < 1.0 - pct / 100.0
        return self.ratio.ratio > 1.0 + pct / 100.0


def per_rep(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run x condition x repetition x direction (jobs summed, latencies averaged)."""
    need = {"run_id", "label", "rep", "direction", "status"}
    missing = need - set(df.columns)
    if missing:
        raise InvalidInput(f"not a fio tidy table (missing columns: {', '.join(sorted(missing))})")
    d = df[(df["status"] == "ok") & (df["direction"] != "")]
    if "phase" in d.columns:
        d = d[d["phase"] == "measure"]
    if "hostname" in d.columns and (d["hostname"] == "All clients").any():
        d = d[d["hostname"] == "All clients"]  # fio's own aggregate; the per-host rows would double count
    factors = [c for c in KNOWN_FACTORS if c in d.columns]
    keys = ["run_id", "condition", "label", *factors, "rep", "direction"]
    keys = [k for k in dict.fromkeys(keys) if k in d.columns]
    agg = {m: ("sum" if m in _SUMMED else "mean") for m in METRICS if m in d.columns}
    return d.groupby(keys, sort=False, dropna=False).agg(agg).reset_index()


def _values(rep: pd.DataFrame, run: str, label: str, direction: str, metric: str) -> np.ndarray:
    sel = rep[(rep["run_id"] == run) & (rep["label"] == label) & (rep["direction"] == direction)]
    return sel[metric].to_numpy(dtype=float)


def _parse_assignments(baseline: str) -> dict[str, str] | None:
    if "=" not in baseline:
        return None
    out = {}
    for part in baseline.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(
                f"--baseline {baseline!r}: expected FACTOR=VALUE[,FACTOR=VALUE] or a condition"
            )
        out[key.strip()] = value.strip()
    return out


def _pairs(rep: pd.DataFrame, runs: Sequence[str], baseline: str | None) -> list[tuple[str, str, str, str]]:
    """(run, label, base_run, base_label) pairs to compare."""
    pairs: list[tuple[str, str, str, str]] = []
    if baseline is None and len(runs) > 1:
        base_run = runs[0]
        base_labels = set(matching.conditions(rep, base_run)["label"])
        for run in runs[1:]:
            for label in matching.conditions(rep, run)["label"]:
                if label in base_labels:
                    pairs.append((run, label, base_run, label))
        if not pairs:
            raise InvalidInput(f"runs share no condition with the baseline run {base_run}")
        return pairs
    varying = matching.varying(rep)
    assign = _parse_assignments(baseline) if baseline else None
    for run in runs:
        conds = matching.conditions(rep, run)
        if assign is not None:
            for key, value in assign.items():
                if key not in conds.columns:
                    raise InvalidInput(f"--baseline: {key!r} is not a factor of run {run}")
                if value not in {str(v) for v in conds[key]}:
                    raise InvalidInput(f"--baseline: {key}={value} matches no condition of run {run}")
            for _, row in conds.iterrows():
                if all(str(row[k]) == v for k, v in assign.items()):
                    continue
                match = matching.counterpart(conds, row, assign, varying)
                if match is not None:
                    pairs.append((run, str(row["label"]), run, match))
            continue
        if baseline is not None:
            hit = conds[(conds["label"] == baseline) | (conds["label"].astype(str) == baseline)]
            if hit.empty and "condition" in rep.columns:
                ids = rep[(rep["run_id"] == run) & (rep["condition"] == baseline)]["label"].unique()
                hit = conds[conds["label"].isin(ids)]
            if hit.empty:
                raise InvalidInput(f"--baseline {baseline!r}: no such condition in run {run}")
            base_row = hit.iloc[0]
            for _, row in conds.iterrows():
                if row["label"] == base_row["label"]:
                    continue
                if "workload" in conds.columns and row["workload"] != base_row["workload"]:
                    continue
                pairs.append((run, str(row["label"]), run, str(base_row["label"])))
            continue
        first: dict[object, str] = {}
        for _, row in conds.iterrows():
            wkey: object = row["workload"] if "workload" in conds.columns else None
            if wkey not in first:
                first[wkey] = str(row["label"])
            else:
                pairs.append((run, str(row["label"]), run, first[wkey]))
    return pairs


def rep_table(df: pd.DataFrame, relative_to: str | None = None) -> pd.DataFrame:
    """``per_rep``, with the speed metrics divided by a reference stack's in the same round when
    ``relative_to`` names one (``skycache.bench.relative``)."""
    rep = per_rep(df)
    return relative.relative_to(rep, relative_to) if relative_to is not None and not rep.empty else rep


def compare(
    df: pd.DataFrame,
    baseline: str | None = None,
    *,
    metrics: Sequence[str] | None = None,
    relative_to: str | None = None,
) -> list[Comparison]:
    """Every condition against its baseline (module docstring), Holm-corrected per metric; with
    ``relative_to``, of speeds relative to that stack in the same round."""
    rep = rep_table(df, relative_to)
    if rep.empty:
        raise InvalidInput("no successful measurements to compare")
    runs = list(dict.fromkeys(rep["run_id"]))
    out: list[Comparison] = []
    wanted = [m for m in (metrics or METRICS) if m in rep.columns]
    # Table order: by run, then by label (which groups the conditions of one stack together).
    pairs = sorted(_pairs(rep, runs, baseline), key=lambda p: (runs.index(p[0]), p[1]))
    for run, label, base_run, base_label in pairs:
        directions = set(rep[(rep["run_id"] == run) & (rep["label"] == label)]["direction"])
        base_dirs = set(rep[(rep["run_id"] == base_run) & (rep["label"] == base_label)]["direction"])
        shared = [d for d in ("read", "write", "trim", natresults.DIRECTION) if d in directions & base_dirs]
        for direction in shared:
            for metric in wanted:
                if metric in _CACHE_DIRECTION:
                    natural = _CACHE_DIRECTION[metric]
                    if direction != (natural if natural in shared else shared[0]):
                        continue
                a = _values(rep, run, label, direction, metric)
                b = _values(rep, base_run, base_label, direction, metric)
                if metric in CACHE_METRICS and not (np.isfinite(a).any() and np.isfinite(b).any()):
                    continue  # a side without that cache: nothing to compare
                floor = FLOORS.get(metric, 0.0)
                r = ratio_ci(a + floor, b + floor)
                base_name = base_label if base_run == run else f"{base_run}:{base_label}"
                out.append(
                    Comparison(run, label, base_name, direction, metric, _geo(a + floor) - floor,
                               _geo(b + floor) - floor, r)
                )  # fmt: skip
    return _holm_per_metric(out)


def _holm_per_metric(comparisons: list[Comparison]) -> list[Comparison]:
    """One Holm family per metric: every condition, direction and run of this comparison."""
    out = list(comparisons)
    for metric in dict.fromkeys(c.metric for c in comparisons):
        idx = [i for i, c in enumerate(comparisons) if c.metric == metric]
        adjusted = stats.adjust([comparisons[i].ratio for i in idx])
        for i, r in zip(idx, adjusted, strict=True):
            out[i] = replace(comparisons[i], ratio=r)
    return out


def _geo(a: np.ndarray) -> float:
    return stats.geo_mean_ci(a)[0]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per run x condition x direction: geometric mean IOPS and latency with 95% t intervals on log
    values, n repetitions, and the coefficient of variation of the repetitions (unstable above
    ``stats.UNSTABLE_CV``)."""
    rep = per_rep(df)
    rows = []
    for (run, label, direction), g in rep.groupby(["run_id", "label", "direction"], sort=False):
        iops_values = g["iops"].to_numpy(dtype=float)
        iops, iops_lo, iops_hi = stats.geo_mean_ci(iops_values)
        lat, lat_lo, lat_hi = stats.geo_mean_ci(g["lat_mean_ns"].to_numpy(dtype=float) / 1000.0)
        p99 = float(np.nanmean(g["lat_p99_ns"].to_numpy(dtype=float))) / 1000.0 if len(g) else math.nan
        kept, dropped = stats.clean(iops_values)
        iops_cv = stats.cv(kept)
        rows.append(
            {
                "run_id": run,
                "condition": label,
                "direction": direction,
                "n": int(kept.size),
                "dropped": dropped,
                "iops": iops,
                "iops_lo": iops_lo,
                "iops_hi": iops_hi,
                "iops_cv": iops_cv,
                "lat_mean_us": lat,
                "lat_lo_us": lat_lo,
                "lat_hi_us": lat_hi,
                "lat_cv": stats.cv(stats.clean(g["lat_mean_ns"].to_numpy(dtype=float))[0]),
                "lat_p99_us": p99,
                "unstable": bool(iops_cv > stats.UNSTABLE_CV),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {r: i for i, r in enumerate(dict.fromkeys(out["run_id"]))}
    out["_run"] = out["run_id"].map(order)
    return (
        out.sort_values(["_run", "condition", "direction"], kind="stable")
        .drop(columns="_run")
        .reset_index(drop=True)
    )


def record(c: Comparison) -> dict[str, object]:
    """Every field of a comparison, flat (to_frame and the CLI's --json share it)."""
    r = c.ratio
    return {
        "run_id": c.run_id,
        "condition": c.condition,
        "baseline": c.baseline,
        "direction": c.direction,
        "metric": c.metric,
        "mean": c.mean,
        "baseline_mean": c.base_mean,
        "ratio": r.ratio,
        "ci_low": r.low,
        "ci_high": r.high,
        "confidence": r.confidence,
        "n": r.n_a,
        "baseline_n": r.n_b,
        "dropped": r.dropped,
        "p": r.p,
        "p_adj": r.p_adj,
        "family": r.family,
        "cv": r.cv_a,
        "baseline_cv": r.cv_b,
        "unstable": r.unstable,
        "label": r.label,
        "method": r.method,
        "verdict": c.verdict,
    }


def to_frame(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    return pd.DataFrame([record(c) for c in comparisons])


def gateable(metric: str) -> bool:
    """A metric with a worse side (not promotions, dirty blocks, flushed bytes)."""
    return METRICS.get(metric) is not None


def regressions(
    comparisons: Sequence[Comparison], pct: float, metrics: Sequence[str] = GATED
) -> list[Comparison]:
    return [c for c in comparisons if c.metric in metrics and c.regression(pct)]


def fmt_metric(metric: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if metric.endswith("_ns") or metric.startswith(("cpu_ns_", "softirq_ns_")):
        return f"{value / 1000.0:.1f} us"
    if metric == "throughput_bps":
        return f"{value / 1e6:.1f} Mbit/s"
    if metric == "conn_per_s":
        return f"{value:.1f}/s"
    if metric == "conntrack_bytes":
        return f"{value / 1024:.1f} KiB"
    if metric == "bw_bytes":
        return f"{value / 2**20:.1f} MiB/s"
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.1f} MiB"
    if metric == "rc_hit_ratio":
        return f"{value * 100:.1f}%"
    if metric == "repo_read_per_byte":
        return f"{value:.3f} B/B"
    if metric.endswith("_s"):
        return f"{value:.2f} s"
    return f"{value:.0f}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_cvs(r: Ratio) -> str:
    """CV of the condition's repetitions / the baseline's, in percent."""
    return "/".join("-" if math.isnan(c) else f"{c * 100:.0f}%" for c in (r.cv_a, r.cv_b))
