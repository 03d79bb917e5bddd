"""Matplotlib figures of a run (PNG), each stamped with its provenance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas as pd


def _stamp(fig: Any, provenance: Mapping[str, Any]) -> None:
    text = "  ".join(f"{k}={v}" for k, v in provenance.items())
    fig.text(0.01, 0.005, text, fontsize=6, color="0.4", ha="left", va="bottom", wrap=True)


def _repo_link(entity: str) -> bool:
    return (entity.startswith("target") and entity.endswith(".tx")) or entity == "peers.tx-max"


def plot_run(out: Path, vms: pd.DataFrame, series: pd.DataFrame, provenance: Mapping[str, Any]) -> list[Path]:
    """start-latency CDF per variant; repository link utilisation and NAT CPU over time."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for variant, g in vms.groupby("variant"):
        lat = g["start_latency_s"].dropna().sort_values()
        if len(lat):
            ax.plot(lat.to_numpy(), [i / len(lat) for i in range(1, len(lat) + 1)], label=str(variant))
    ax.set_xlabel("VM start latency (s)")
    ax.set_ylabel("fraction of VMs")
    ax.set_title(f"{vms['scenario'].iloc[0] if len(vms) else ''}: VM start latency")
    ax.grid(alpha=0.3)
    ax.legend()
    _stamp(fig, provenance)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths.append(out / "start_latency_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    for metric, ylabel, fname, entity_filter in (
        (
            "link_util",
            "utilisation",
            "repository_link_util.png",
            lambda e: e.startswith("target") and e.endswith(".tx"),
        ),
        ("repo_throughput", "bytes/s", "repository_throughput.png", lambda e: True),
        ("nat_cpu", "CPU utilisation (cores)", "nat_cpu.png", lambda e: True),
        ("conntrack", "entries", "conntrack.png", lambda e: True),
    ):
        sel = series[(series.metric == metric) & series.entity.map(entity_filter)]
        if sel.empty:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, g in sel.groupby(["variant", "entity"]):
            label = " ".join(str(k) for k in key)
            ax.plot(g["time_s"].to_numpy(), g["value"].to_numpy(), label=label, lw=1)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel(ylabel)
        ax.set_title(str(metric).replace("_", " "))
        ax.grid(alpha=0.3)
        if sel.groupby(["variant", "entity"]).ngroups <= 12:
            ax.legend(fontsize=7)
        _stamp(fig, provenance)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        paths.append(out / fname)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
