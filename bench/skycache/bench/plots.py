"""Plots of a run (matplotlib, PNG), each carrying the run's provenance in the figure itself.

- ``iops.png``: IOPS per condition and direction with 95% bootstrap intervals;
- ``latency.png``: mean and p99 latency per condition;
- ``latency-percentiles.png``: p50/p95/p99/p99.9 curves per condition;
- ``cache.png``: read-cache hits and write-back dirty blocks sampled over the run (when caches ran).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display in CI or in the lab

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from skycache.bench import compare

PCT_COLUMNS = (("p50", "lat_p50_ns"), ("p95", "lat_p95_ns"), ("p99", "lat_p99_ns"), ("p99.9", "lat_p99_9_ns"))


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


def _bars(ax: Any, summary: pd.DataFrame, value: str, lo: str, hi: str, xlabel: str) -> None:
    labels = [f"{r.condition} [{r.direction}]" for r in summary.itertuples()]
    y = np.arange(len(labels))
    vals = summary[value].to_numpy(dtype=float)
    err_lo = np.nan_to_num(vals - summary[lo].to_numpy(dtype=float), nan=0.0)
    err_hi = np.nan_to_num(summary[hi].to_numpy(dtype=float) - vals, nan=0.0)
    colors = ["tab:blue" if d == "read" else "tab:orange" for d in summary["direction"]]
    ax.barh(y, vals, xerr=[err_lo, err_hi], color=colors, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def iops(df: pd.DataFrame, manifest: Mapping[str, Any], out: Path) -> Path:
    s = compare.summary(df)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(s) + 1.6))
    _bars(ax, s, "iops", "iops_lo", "iops_hi", "IOPS (mean of repetitions, 95% bootstrap CI)")
    ax.set_title("IOPS per condition")
    return _finish(fig, manifest, out)


def latency(df: pd.DataFrame, manifest: Mapping[str, Any], out: Path) -> Path:
    s = compare.summary(df)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(s) + 1.6))
    _bars(ax, s, "lat_mean_us", "lat_lo_us", "lat_hi_us", "latency (us): bar = mean with 95% CI, dot = p99")
    y = np.arange(len(s))
    ax.plot(s["lat_p99_us"].to_numpy(dtype=float), y, "k.", label="p99")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Latency per condition")
    return _finish(fig, manifest, out)


def latency_percentiles(df: pd.DataFrame, manifest: Mapping[str, Any], out: Path) -> Path:
    d = df[(df["status"] == "ok") & (df["direction"] != "")]
    if "phase" in d.columns:
        d = d[d["phase"] == "measure"]
    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.arange(len(PCT_COLUMNS))
    for (label, direction), g in d.groupby(["label", "direction"], sort=False):
        ys = [float(np.nanmean(g[col].to_numpy(dtype=float))) / 1000.0 for _, col in PCT_COLUMNS]
        ax.plot(x, ys, marker="o", label=f"{label} [{direction}]")
    ax.set_xticks(x, [name for name, _ in PCT_COLUMNS])
    ax.set_yscale("log")
    ax.set_ylabel("completion latency (us, mean over repetitions)")
    ax.set_title("Latency percentiles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _finish(fig, manifest, out)


def cache_timeline(
    samples: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], out: Path
) -> Path | None:
    """Samples: {"t": seconds since run start, "label", "role" (read|write), "hits", "misses", "dirty"}."""
    if not samples:
        return None
    s = pd.DataFrame(list(samples))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for (label, role), g in s.groupby(["label", "role"], sort=False):
        ax1.plot(g["t"], g["hits"], marker=".", linestyle="-", label=f"{label} ({role} cache)")
        ax2.plot(g["t"], g["dirty"], marker=".", linestyle="-", label=f"{label} ({role} cache)")
    ax1.set_ylabel("cache hits (cumulative)")
    ax2.set_ylabel("dirty / unwritten blocks")
    ax2.set_xlabel("seconds since the start of the run")
    ax1.set_title("Caches over the run")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    return _finish(fig, manifest, out)


def plot_run(
    df: pd.DataFrame, manifest: Mapping[str, Any], out_dir: Path, samples: Sequence[Mapping[str, Any]] = ()
) -> list[Path]:
    out = [
        iops(df, manifest, out_dir / "iops.png"),
        latency(df, manifest, out_dir / "latency.png"),
        latency_percentiles(df, manifest, out_dir / "latency-percentiles.png"),
    ]
    timeline = cache_timeline(samples, manifest, out_dir / "cache.png")
    if timeline is not None:
        out.append(timeline)
    return out
