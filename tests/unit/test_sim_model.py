"""The cluster model: closed forms at model level, caches, NAT, determinism, CLI output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from skycache.sim.calibration import load_calibration
from skycache.sim.cli import app
from skycache.sim.model import simulate
from skycache.sim.results import summarise
from skycache.sim.scenario import ScenarioFile, load_scenario, parse_scenario_file

ROOT = Path(__file__).resolve().parents[2]
CAL = load_calibration(ROOT / "scenarios" / "sim-calibration-example.toml")
MiB = 2**20


def scenario(tmp_path: Path, **sections: dict[str, Any]) -> ScenarioFile:
    data: dict[str, Any] = {
        "scenario": {"name": "t", "seed": 5, "sample_interval": "1 s"},
        "cluster": {"nodes": 8, "slots_per_node": 1, "nic": "10 Gbit/s", "read_cache": "0 B"},
        "repository": {"kind": "central", "link": "10 Gbit/s"},
        "images": {"count": 1, "working_set": "100 MiB"},
        "workload": {"arrivals": "burst", "count": 8, "runtime": "10 s", "runtime_dist": "fixed"},
    }
    for name, over in sections.items():
        data.setdefault(name, {}).update(over)
    return parse_scenario_file(data, tmp_path / "s.toml")


def test_burst_on_a_shared_disk_matches_n_size_over_capacity(tmp_path: Path) -> None:
    sf = scenario(tmp_path)
    res = simulate(sf.base, CAL)
    lat = res.vm["running_at"] - res.vm["arrival"]
    disk = CAL.backend("lvm")
    expected = disk.latency.value + 8 * 100 * MiB / disk.read_bw.value  # 8 flows share the disk
    assert np.allclose(lat, expected, rtol=1e-9)
    s = summarise(res)
    assert s["repo_fetches"] == 8
    assert s["repo_disk_util_peak"] == pytest.approx(1.0)


def test_repository_disk_queue_matches_mg1_processor_sharing(tmp_path: Path) -> None:
    """Poisson boots of a fixed working set through one disk: E[boot] = latency + E[S] / (1 - rho)."""
    lam = 2.0
    sf = scenario(
        tmp_path,
        cluster={"nodes": 400, "slots_per_node": 8},
        workload={"arrivals": "poisson", "rate": f"{lam} /s", "count": 20000, "runtime": "1 s"},
    )
    res = simulate(sf.base, CAL)
    disk = CAL.backend("lvm")
    s_mean = 100 * MiB / disk.read_bw.value
    rho = lam * s_mean
    boot = (res.vm["running_at"] - res.vm["boot_start"])[2000:]
    pred = disk.latency.value + s_mean / (1 - rho)
    err = abs(boot.mean() - pred) / pred
    print(f"M/G/1-PS disk: mean boot {boot.mean():.4f} s vs {pred:.4f} s ({err:.1%})")
    assert err < 0.08


def test_read_cache_fetches_once_per_node(tmp_path: Path) -> None:
    sf = scenario(
        tmp_path,
        cluster={"nodes": 4, "slots_per_node": 4, "read_cache": "1 GiB"},
        workload={"count": 16},
    )
    with_cache = summarise(simulate(sf.base, CAL))
    assert with_cache["repo_fetches"] == 4
    assert with_cache["cache_hit_ratio"] == pytest.approx(12 / 16)
    sf2 = scenario(tmp_path, cluster={"nodes": 4, "slots_per_node": 4}, workload={"count": 16})
    without = summarise(simulate(sf2.base, CAL))
    assert without["repo_fetches"] == 16
    assert with_cache["start_latency_median_s"] < without["start_latency_median_s"]


def test_lru_eviction(tmp_path: Path) -> None:
    sf = scenario(
        tmp_path,
        cluster={"nodes": 1, "slots_per_node": 1, "read_cache": "250 MiB"},  # room for 2 images
        images={"count": 3, "zipf": 0.0},
        workload={"arrivals": "poisson", "rate": "0.01 /s", "count": 60, "runtime": "1 s"},
    )
    res = simulate(sf.base, CAL)
    assert res.counters["evictions"] > 0
    assert res.counters["fetches"] == 60 - int(res.vm["cache_hit"].sum())


def test_full_cluster_queues_vms(tmp_path: Path) -> None:
    sf = scenario(tmp_path, cluster={"nodes": 2}, workload={"count": 6})
    res = simulate(sf.base, CAL)
    wait = res.vm["boot_start"] - res.vm["arrival"]
    assert (wait > 0).sum() == 4
    assert res.counters["peak_queue"] == 4
    assert np.all(~np.isnan(res.vm["end"]))


def test_distributed_repository_fetches_from_peers(tmp_path: Path) -> None:
    sf = scenario(
        tmp_path,
        repository={"kind": "distributed", "replicas": 2},
        cluster={"nodes": 8, "nic": "1 Gbit/s"},
    )
    s = summarise(simulate(sf.base, CAL))
    assert s["repository"] == "distributed"
    assert s["vms_started"] == 8
    assert s["repo_fetches"] == 8
    assert s["repo_link_util_peak_instant"] == pytest.approx(1.0)  # a peer's 1 Gbit/s uplink saturates


def test_central_nat_cpu_and_conntrack(tmp_path: Path) -> None:
    sf = scenario(
        tmp_path,
        workload={"runtime": "100 s"},
        nat={
            "mode": "central",
            "gateways": 1,
            "cores": 2,
            "egress": "12 Mbit/s",
            "packet_size": "1500 B",
            "conn_rate": "10 /s",
            "conn_lifetime": "60 s",
            "conntrack_max": 4000,
        },
    )
    s = summarise(simulate(sf.base, CAL))
    pps = 12e6 / 8 / 1500  # 1000 packets/s per VM
    per_vm = pps * CAL.nat_cpu_per_packet.value + 10 * CAL.nat_cpu_per_conn.value
    assert s["nat_cpu_util_peak"] == pytest.approx(8 * per_vm / 2)
    assert s["conntrack_peak"] == pytest.approx(4000)  # demand 8 x 600 = 4800 > limit
    assert s["conntrack_over_limit"] is True


def test_same_seed_same_result_other_seed_differs(tmp_path: Path) -> None:
    sf = scenario(
        tmp_path,
        cluster={"nodes": 20, "slots_per_node": 2, "read_cache": "1 GiB"},
        images={"count": 5},
        workload={"arrivals": "poisson", "rate": "1 /s", "count": 200},
    )
    a, b, c = simulate(sf.base, CAL, 1), simulate(sf.base, CAL, 1), simulate(sf.base, CAL, 2)
    assert np.array_equal(a.vm["running_at"], b.vm["running_at"])
    assert not np.array_equal(a.vm["node"], c.vm["node"])


def test_swf_trace_workload(tmp_path: Path) -> None:
    sf = load_scenario(ROOT / "scenarios" / "sim-swf-trace.toml")
    res = simulate(sf.base, CAL)
    assert len(res.arrivals) == 1 + 2 + 1 + 4 + 1  # one VM per processor
    assert res.arrivals.time.tolist()[:3] == [0, 10, 10]
    assert np.all(~np.isnan(res.vm["end"]))


def test_boot_storm_cli_states_peak_link_and_latencies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(ROOT / "scenarios" / "sim-boot-storm.toml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    base = next(line for line in lines if line.startswith("base:"))
    nocache = next(line for line in lines if line.startswith("no-read-cache:"))
    for line in (base, nocache):
        assert "peak repository link utilisation" in line
        assert "start latency median" in line and "p99" in line
    doc = json.loads((out / "summary.json").read_text())
    by = {v["variant"]: v for v in doc["variants"]}
    assert by["base"]["read_cache_bytes"] > 0 and by["no-read-cache"]["read_cache_bytes"] == 0
    assert by["base"]["start_latency_median_s"] < by["no-read-cache"]["start_latency_median_s"]
    assert by["base"]["repo_link_util_peak"] > 0
    assert {"vms.parquet", "timeseries.parquet", "summary.json"} <= {p.name for p in out.iterdir()}
    assert (out / "plots" / "start_latency_cdf.png").stat().st_size > 1000
    import pandas as pd

    vms = pd.read_parquet(out / "vms.parquet")
    assert len(vms) == 800 and set(vms.variant) == {"base", "no-read-cache"}
    series = pd.read_parquet(out / "timeseries.parquet")
    assert {"link_util", "repo_throughput", "nat_cpu", "conntrack"} <= set(series.metric)
