"""Tidy tables and the summary of a simulation run, and writing them to a directory."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skycache.sim.model import SimResult

SUMMARY_FORMAT = "skycache-sim-summary/1"


def vm_table(res: SimResult) -> pd.DataFrame:
    """One row per VM: arrival, node, image, queue wait, boot time, start latency, cache hit, end."""
    v = res.vm
    df = pd.DataFrame(
        {
            "scenario": res.scenario.name,
            "variant": res.scenario.variant,
            "seed": res.seed,
            "vm": np.arange(len(v["arrival"]), dtype=np.int64),
            "image": v["image"],
            "node": v["node"],
            "arrival_s": v["arrival"],
            "queue_wait_s": v["boot_start"] - v["arrival"],
            "boot_s": v["running_at"] - v["boot_start"],
            "start_latency_s": v["running_at"] - v["arrival"],
            "cache_hit": v["cache_hit"].astype(bool),
            "end_s": v["end"],
        }
    )
    return df


def series_table(res: SimResult) -> pd.DataFrame:
    """Time series, long form: time_s, metric, entity, value (utilisation as a fraction, rates in B/s)."""
    df = pd.DataFrame(res.series, columns=["time_s", "metric", "entity", "value"])
    df.insert(0, "variant", res.scenario.variant)
    df.insert(0, "scenario", res.scenario.name)
    df.insert(2, "seed", res.seed)
    return df


def _largest(values: Sequence[float | None]) -> float | None:
    known = [x for x in values if x is not None]
    return max(known) if known else None


def _pct(a: np.ndarray[Any, Any], q: float) -> float | None:
    a = a[~np.isnan(a)]
    return float(np.percentile(a, q)) if len(a) else None


def _loaded_mean(frame: pd.DataFrame, until: float | None, dt: float) -> float | None:
    """Mean of interval-average values over the samples that end before ``until`` + one interval:
    the period in which VMs are starting, not the long tail of runs that no longer fetch."""
    if until is None or not len(frame):
        return None
    loaded = frame[frame.time_s <= until + dt]
    if not len(loaded):
        loaded = frame[frame.time_s == frame.time_s.min()]
    return float(loaded.value.mean())


def summarise(res: SimResult, *, wall_s: float | None = None) -> dict[str, Any]:
    """Headline figures of one run (JSON-ready)."""
    sc, v, c = res.scenario, res.vm, res.counters
    latency = v["running_at"] - v["arrival"]
    started = int(np.sum(~np.isnan(v["running_at"])))
    boots = max(1, started)
    series = pd.DataFrame(res.series, columns=["time_s", "metric", "entity", "value"])
    util = series[series.metric == "link_util"]
    ent = util.entity.astype(str)
    repo_util = util[(ent.str.startswith("target") & ent.str.endswith(".tx")) | (ent == "peers.tx-max")]
    disk_util = util[ent.str.endswith(".disk") | (ent == "peers.disk-max")]
    nat = series[series.metric == "nat_cpu"]
    ct = series[series.metric == "conntrack"]
    ctd = series[series.metric == "conntrack_demand"]
    tput = series[series.metric == "repo_throughput"]
    rack_max = util[(ent == "racks.tx-max") | (ent == "racks.rx-max")]
    last_start = float(np.nanmax(v["running_at"])) if started else None
    dt = sc.sample_interval
    # Means over the starting period, per link and then the busiest link (or rack direction).
    repo_means = [_loaded_mean(g, last_start, dt) for _, g in repo_util.groupby("entity", sort=True)]
    disk_means = [_loaded_mean(g, last_start, dt) for _, g in disk_util.groupby("entity", sort=True)]
    rack_means = [
        _loaded_mean(util[ent == f"racks.{d}-mean"], last_start, dt) for d in ("tx", "rx") if sc.cluster.racks
    ]
    inst_peaks = {k.split(":", 1)[1]: v_ for k, v_ in c.items() if k.startswith("peak_inst_util:")}
    repo_inst = [
        val for name, val in inst_peaks.items() if name.endswith(".tx") and name.startswith("target")
    ]
    if sc.repository.kind == "distributed":
        repo_inst = [inst_peaks.get("peer-uplinks", 0.0)]
    nat_peak: float | None = None
    if sc.nat.mode == "per-node":
        nat_peak = float(c["peak_node_running"] * c["nat_cpu_per_vm"] / sc.nat.cores)
    elif sc.nat.mode == "central":
        nat_peak = max((val for k, val in c.items() if k.startswith("peak_nat_cpu:")), default=0.0)
    return {
        "format": SUMMARY_FORMAT,
        "scenario": sc.name,
        "variant": sc.variant,
        "seed": res.seed,
        "repository": sc.repository.kind,
        "read_cache_bytes": sc.cluster.read_cache,
        "nat_mode": sc.nat.mode,
        "nodes": sc.cluster.nodes,
        "vms": len(v["arrival"]),
        "vms_started": started,
        "vms_finished": int(np.sum(~np.isnan(v["end"]))),
        "start_latency_median_s": _pct(latency, 50),
        "start_latency_p99_s": _pct(latency, 99),
        "start_latency_mean_s": float(np.nanmean(latency)) if started else None,
        "queue_wait_p99_s": _pct(v["boot_start"] - v["arrival"], 99),
        "cache_hit_ratio": float(v["cache_hit"].sum()) / boots,
        "repo_fetches": int(c["fetches"]),
        "repo_read_bytes": c["repo_read_bytes"],
        "repo_write_bytes": c["repo_write_bytes"],
        "repo_link_util_peak": float(repo_util.value.max()) if len(repo_util) else None,
        "repo_link_util_peak_instant": max(repo_inst) if repo_inst else None,
        "repo_disk_util_peak": float(disk_util.value.max()) if len(disk_util) else None,
        "repo_link_util_mean": _largest(repo_means),
        "repo_disk_util_mean": _largest(disk_means),
        "racks": sc.cluster.racks,
        "rack_uplink_util_peak": float(rack_max.value.max()) if len(rack_max) else None,
        "rack_uplink_util_peak_instant": _largest(
            [inst_peaks.get("rack-uplinks"), inst_peaks.get("rack-downlinks")]
        ),
        "rack_uplink_util_mean": _largest(rack_means),
        "repo_throughput_peak_Bps": float(tput.value.max()) if len(tput) else None,
        "nat_cpu_util_peak": nat_peak,
        "nat_cpu_util_peak_sampled": float(nat.value.max()) if len(nat) else None,
        "conntrack_peak": float(ct.value.max()) if len(ct) else None,
        "conntrack_limit": sc.nat.conntrack_max if sc.nat.mode != "none" else None,
        "conntrack_over_limit": bool(len(ctd) and float(ctd.value.max()) > sc.nat.conntrack_max),
        "sample_interval_s": sc.sample_interval,
        "sim_end_s": c["sim_end"],
        "events": int(c["events"]),
        "flows": int(c["flows"]),
        "rate_recomputes": int(c["recomputes"]),
        "wall_s": wall_s,
    }


def write_run(
    out: Path,
    results: Sequence[SimResult],
    summaries: Sequence[Mapping[str, Any]],
    provenance: Mapping[str, Any],
) -> list[Path]:
    """Write vms.parquet, timeseries.parquet and summary.json (all variants together) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    vms = pd.concat([vm_table(r) for r in results], ignore_index=True)
    series = pd.concat([series_table(r) for r in results], ignore_index=True)
    paths = [out / "vms.parquet", out / "timeseries.parquet", out / "summary.json"]
    vms.to_parquet(paths[0], index=False)
    series.to_parquet(paths[1], index=False)
    doc = {"format": SUMMARY_FORMAT, "provenance": dict(provenance), "variants": list(summaries)}
    paths[2].write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return paths
