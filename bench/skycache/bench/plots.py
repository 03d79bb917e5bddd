"""Plots of a run (matplotlib, PNG), each carrying the run's provenance in the figure itself.

Bars are on linear axes and every repetition is drawn as a point over its bar, so a reader sees the
spread (and an outlier) that an interval summarises.

- ``iops.png``: IOPS per condition and direction: bar = mean of the repetitions with its 95% interval;
- ``latency.png``: mean total latency per condition (bar = mean with 95% interval) and p99 (bar = p99
  of all repetitions' I/Os from the merged fio histograms; points = each repetition's own p99);
- ``latency-percentiles.png``: p50/p95/p99/p99.9 of all repetitions per condition (merged histograms);
- ``cache.png``: read-cache hits and write-back dirty blocks over each repetition (and, when recorded,
  the bytes read from the repository since the repetition's first sample), one line per repetition
  (never joined across repetitions), time from the repetition's first sample; the samples taken
  while fio ran (``when = "during"``) are the points between "before" and "measured".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display in CI or in the lab

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skycache.bench import compare, latency
from skycache.bench.progress import Steps, quiet

PCT_LABELS = latency.PCT_NAMES
KIND_NAMES = {"clat": "completion latency", "lat": "total latency"}


def preferred_kind(lat_summary: pd.DataFrame) -> str:
    """Total latency when the run has its percentiles (what the application waits), else completion
    latency (runs recorded before skycache asked fio for both)."""
    col = latency.pct_column("lat", "p99")
    if col in lat_summary.columns and np.isfinite(lat_summary[col].to_numpy(dtype=float)).any():
        return "lat"
    return "clat"


def provenance(manifest: Mapping[str, Any]) -> str:
    env = manifest.get("environment", {})
    parts = [
        f"{manifest.get('scenario', '?')} run {manifest.get('run_id', '?')}",
        f"{env.get('where', '?')}/{env.get('accel', '?')}",
        f"kernel {env.get('kernel', '?')}",
        f"{env.get('fio_version') or '?'}",
        f"shaping {manifest.get('shaping', {}).get('name', 'none')}",
        f"skycache {env.get('skycache_version', '?')} ({str(env.get('git_commit', '?'))[:10]})",
    ]
    return " · ".join(parts)


def _finish(fig: Any, manifest: Mapping[str, Any], out: Path) -> Path:
    fig.text(0.01, 0.005, provenance(manifest), fontsize=7, color="0.35", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _labels(summary: pd.DataFrame) -> list[str]:
    return [f"{r.condition} [{r.direction}]" for r in summary.itertuples()]


def _bars(
    ax: Any,
    summary: pd.DataFrame,
    value: str,
    points: pd.DataFrame,
    point_value: str,
    xlabel: str,
    *,
    lo: str | None = None,
    hi: str | None = None,
    scale: float = 1.0,
) -> None:
    """Horizontal bars on a linear axis (optional interval), each repetition a black point on its bar."""
    y = np.arange(len(summary))
    vals = summary[value].to_numpy(dtype=float)
    xerr = None
    if lo is not None and hi is not None:
        err_lo = np.nan_to_num(vals - summary[lo].to_numpy(dtype=float), nan=0.0)
        err_hi = np.nan_to_num(summary[hi].to_numpy(dtype=float) - vals, nan=0.0)
        xerr = [np.maximum(err_lo, 0.0), np.maximum(err_hi, 0.0)]
    colors = ["tab:blue" if d == "read" else "tab:orange" for d in summary["direction"]]
    ax.barh(y, np.nan_to_num(vals, nan=0.0), xerr=xerr, color=colors, alpha=0.75, capsize=3)
    label = "repetition"
    for i, r in enumerate(summary.itertuples()):
        sel = points[(points["condition"] == r.condition) & (points["direction"] == r.direction)]
        xs = sel[point_value].to_numpy(dtype=float) / scale
        xs = xs[np.isfinite(xs)]
        if xs.size:
            ax.plot(xs, np.full(xs.size, i), "o", color="black", markersize=3.5, label=label)
            label = "_nolegend_"
    ax.set_yticks(y, _labels(summary), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if label == "_nolegend_":
        ax.legend(fontsize=7, loc="lower right")


def _rep_points(df: pd.DataFrame) -> pd.DataFrame:
    """compare.per_rep with the column names of the summaries (condition = the label)."""
    rep = compare.per_rep(df)
    return rep.drop(columns=["condition"]).rename(columns={"label": "condition"})


def iops(df: pd.DataFrame, manifest: Mapping[str, Any], out: Path) -> Path:
    return _finish(iops_figure(df), manifest, out)


def iops_figure(df: pd.DataFrame) -> Any:
    s = latency.mean_summary(df)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(s) + 1.6))
    _bars(ax, s, "iops", _rep_points(df), "iops", "IOPS\nbar = mean of repetitions with 95% CI",
          lo="iops_lo", hi="iops_hi")  # fmt: skip
    ax.set_title("IOPS per condition")
    return fig


def latency_bars(df: pd.DataFrame, manifest: Mapping[str, Any], out: Path) -> Path:
    return _finish(latency_figure(df), manifest, out)


def latency_figure(df: pd.DataFrame) -> Any:
    s = latency.mean_summary(df)
    pooled = latency.summary(df)
    kind = preferred_kind(pooled)
    p99 = latency.pct_column(kind, "p99")
    merged = s.merge(pooled[["condition", "direction", p99, f"{kind}_from"]], on=["condition", "direction"],
                     how="left")  # fmt: skip
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(s) + 1.8), sharey=True)
    _bars(ax1, s, "lat_mean_us", _rep_points(df), "lat_mean_ns",
          "mean total latency (us)\nbar = mean of repetitions with 95% CI", lo="lat_lo_us",
          hi="lat_hi_us", scale=1000.0)  # fmt: skip
    merged["p99_us"] = merged[p99] / 1000.0
    how = "all repetitions' I/Os (merged histograms)"
    if (merged[f"{kind}_from"] == latency.FROM_REP_MEANS).any():
        how = "mean of repetitions (run without histograms)"
    _bars(ax2, merged, "p99_us", latency.per_repetition(df), p99,
          f"{KIND_NAMES[kind]} p99 (us)\nbar = {how}", scale=1000.0)  # fmt: skip
    ax1.set_title("Mean latency per condition")
    ax2.set_title("p99 latency per condition")
    return fig


def latency_percentiles(df: pd.DataFrame, manifest: Mapping[str, Any], out: Path) -> Path:
    pooled = latency.summary(df)
    kind = preferred_kind(pooled)
    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.arange(len(PCT_LABELS))
    for r in pooled.itertuples():
        ys = [getattr(r, latency.pct_column(kind, name)) / 1000.0 for name in PCT_LABELS]
        ax.plot(x, ys, marker="o", label=f"{r.condition} [{r.direction}]")
    ax.set_xticks(x, list(PCT_LABELS.values()))
    ax.set_yscale("log")  # a line per condition over four percentiles spanning decades, not bars
    methods = set(pooled[f"{kind}_from"]) if len(pooled) else set()
    merged = methods == {latency.FROM_HISTOGRAMS}
    how = "all repetitions, merged histograms" if merged else "mean of repetitions"
    ax.set_ylabel(f"{KIND_NAMES[kind]} (us, log scale; {how})")
    ax.set_title("Latency percentiles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _finish(fig, manifest, out)


def timeline_lines(samples: Sequence[Mapping[str, Any]]) -> list[tuple[str, pd.DataFrame]]:
    """The lines of cache.png: one per condition x cache x repetition (x host), each with ``t_rep``,
    seconds since that repetition's first sample; samples of different repetitions never share one."""
    s = pd.DataFrame(list(samples))
    for col in ("rep", "host"):
        if col not in s.columns:
            s[col] = ""
    s["rep"] = s["rep"].fillna("").astype(str)
    s["host"] = s["host"].fillna("").astype(str)
    lines = []
    for (label, role, _rep, host), g in s.groupby(["label", "role", "rep", "host"], sort=False):
        g = g.sort_values("t", kind="stable")
        g = g.assign(t_rep=g["t"] - g["t"].iloc[0])
        where = f" {host}" if host else ""
        what = "repository" if role == "repo" else f"{role} cache"
        lines.append((f"{label} ({what}{where})", g))
    return lines


def _timeline_parts(
    samples: Sequence[Mapping[str, Any]],
) -> tuple[list[tuple[str, pd.DataFrame]], list[tuple[str, pd.DataFrame]]]:
    """cache.png's repository lines and cache lines (both empty: no figure)."""
    if not samples:
        return [], []
    lines = timeline_lines(samples)
    repo = [(name, g) for name, g in lines if (g["role"] == "repo").all() and "read_bytes" in g.columns]
    caches = [(name, g) for name, g in lines if (g["role"] != "repo").all()]
    return repo, caches


def cache_timeline(
    samples: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], out: Path
) -> Path | None:
    """Samples: {"t": seconds since run start, "label", "role" (read|write), "rep", "hits", "misses",
    "dirty"} (and "host" in a hosts run)."""
    repo, caches = _timeline_parts(samples)
    if not caches and not repo:
        return None
    fig, axes = plt.subplots(2 + bool(repo), 1, figsize=(9, 6 + 2.5 * bool(repo)), sharex=True)
    ax1, ax2 = axes[0], axes[1]
    colors: dict[str, Any] = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def style(name: str) -> tuple[Any, str]:
        first = name not in colors
        color = colors.setdefault(name, cycle[len(colors) % len(cycle)])
        return color, name if first else "_nolegend_"  # one legend entry per condition, all repetitions

    for name, g in caches:
        color, legend = style(name)
        ax1.plot(g["t_rep"], g["hits"], marker=".", color=color, alpha=0.8, label=legend)
        ax2.plot(g["t_rep"], g["dirty"], marker=".", color=color, alpha=0.8, label=legend)
    ax1.set_ylabel("cache hits (cumulative)")
    ax2.set_ylabel("dirty / unwritten blocks")
    if repo:
        ax3 = axes[2]
        for name, g in repo:
            color, legend = style(name)
            read = (g["read_bytes"] - g["read_bytes"].iloc[0]) / 2**20
            ax3.plot(g["t_rep"], read, marker=".", color=color, alpha=0.8, label=legend)
        ax3.set_ylabel("MiB read from the repository\n(since the first sample)")
        ax3.legend(fontsize=7)
    axes[-1].set_xlabel("seconds since the repetition's first sample (one line per repetition)")
    ax1.set_title("Caches over each repetition")
    for ax in axes:
        ax.grid(alpha=0.3)
    if caches:
        ax1.legend(fontsize=7)
    return _finish(fig, manifest, out)


def plot_run(
    df: pd.DataFrame,
    manifest: Mapping[str, Any],
    out_dir: Path,
    samples: Sequence[Mapping[str, Any]] = (),
    progress: Callable[[str], None] = quiet,
) -> list[Path]:
    """Every figure of a run, in order; ``progress`` gets a line as each one starts (matplotlib takes
    seconds a figure on the host, minutes under TCG: a log would otherwise fall silent)."""
    figures: list[tuple[str, Callable[[Path], Path | None]]] = [
        ("iops.png", lambda p: iops(df, manifest, p)),
        ("latency.png", lambda p: latency_bars(df, manifest, p)),
        ("latency-percentiles.png", lambda p: latency_percentiles(df, manifest, p)),
    ]
    if any(_timeline_parts(samples)):
        figures.append(("cache.png", lambda p: cache_timeline(samples, manifest, p)))
    steps = Steps("drawing plots", len(figures), progress)
    out: list[Path] = []
    for name, draw in figures:
        steps.step(name)
        drawn = draw(out_dir / name)
        if drawn is not None:
            out.append(drawn)
    steps.done(f"{len(out)} plots")
    return out
