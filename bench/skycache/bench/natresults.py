"""NAT benchmark runs (``skycache bench nat``) read by ``bench show`` and ``bench compare``.

A NAT run's tidy table has one row per condition (``nat``, ``routed``) x repetition with network
metrics, not fio's rows per job and direction. ``as_compared`` gives it the columns ``compare`` works
on (label, rep, direction ``net``, status), so NAT runs are compared with the method fio runs are
(ratios of geometric means, Welch t on log values, Holm per metric): NAT against routed within a run,
or each condition against the first run's across runs. ``facts`` are its comparability facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

KIND = "nat-bench"
BASELINE = "routed"  # within one run: what NAT costs over plain routing
DIRECTION = "net"
# metric -> True when higher is better, False when lower is, None when neither (compare.METRICS)
METRICS: dict[str, bool | None] = {
    "throughput_bps": True,
    "conn_per_s": True,
    "cpu_ns_per_packet": False,
    "softirq_ns_per_packet": False,
    "cpu_ns_per_conn": False,
    "conntrack_entries": None,  # as many as the connections made: not better or worse
    "conntrack_bytes": None,
}
# Routed traffic leaves conntrack empty (no rule hooks it in): zero is a value, as for the cache
# counts of compare.FLOORS (one entry; one slab page).
FLOORS = {"conntrack_entries": 1.0, "conntrack_bytes": 4096.0}
GATED = ("throughput_bps", "conn_per_s", "cpu_ns_per_packet", "cpu_ns_per_conn")


def is_nat(manifest: Mapping[str, Any]) -> bool:
    return manifest.get("kind") == KIND


def as_compared(df: pd.DataFrame) -> pd.DataFrame:
    """A NAT tidy table in the shape ``compare.per_rep`` reads (one row per condition x repetition)."""
    out = df.copy()
    out["label"] = out["condition"]
    out["rep"] = out["repetition"].astype(int) + 1
    out["direction"] = DIRECTION
    out["status"] = "ok"
    return out


def facts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What must agree for two NAT runs to be compared (comparable.KEYS): the machine's facts are at
    the manifest's top level; the topology is the "stack", the durations and bounds the "workload"."""
    options = manifest.get("options")
    opts = options if isinstance(options, dict) else {}
    return {
        "accel": manifest.get("accel"),
        "kernel": manifest.get("kernel"),
        "fio_version": "none (nat-bench runs iperf3)",
        "stacks": {"nat-bench": manifest.get("topology") or "namespaces nat/routed"},
        "workloads": {k: v for k, v in opts.items() if k in ("bulk_seconds", "conn_seconds", "max_conns")},
    }
