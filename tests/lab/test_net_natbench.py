"""nat-bench on the real kernel: namespaces, MASQUERADE, conntrack; results readable as a table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from skycache.bench import natbench
from skycache.net import netns
from skycache.runner import Runner


def test_nat_bench_small_run(runner: Runner, tmp_path: Path) -> None:
    opts = natbench.NatBenchOptions(repetitions=2, bulk_seconds=2, conn_seconds=2, out=tmp_path)
    result = natbench.run(runner, opts)
    df = pd.read_parquet(result.run_dir / "tidy.parquet")
    assert len(df) == 4
    assert sorted(df["condition"]) == ["nat", "nat", "routed", "routed"]
    assert (df["throughput_bps"] > 1e6).all()
    assert (df["conn_per_s"] > 1).all()
    assert (df["cpu_ns_per_packet"] > 0).all()
    nat_rows, routed_rows = df[df["condition"] == "nat"], df[df["condition"] == "routed"]
    # MASQUERADE tracks every short connection (TIME_WAIT entries stay 120 s); routing tracks none.
    assert (nat_rows["conntrack_entries"] >= 0.9 * nat_rows["connections"]).all()
    assert (routed_rows["conntrack_entries"] == 0).all()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["where"] == "lab" and manifest["kernel"]
    table = natbench.format_table(result.summary, 2)
    print(table)
    assert "throughput" in table and "CPU per packet" in table and "connections/s" in table
    assert all(not math.isnan(r.nat.low) for r in result.summary if r.metric == "throughput_bps")
    assert not [ns for ns in netns.list_owned(runner) if ns.startswith("skycache-nb-")]
