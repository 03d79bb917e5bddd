"""Racks in the cluster model: closed forms for rack uplinks (central and distributed), the rack
utilisation outputs, the new keys' one-line errors, and scenarios without racks left unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from boundary import skycache

from skycache.sim.calibration import load_calibration
from skycache.sim.model import SimResult, simulate
from skycache.sim.results import summarise
from skycache.sim.scenario import ScenarioFile, load_scenario, parse_scenario_file

ROOT = Path(__file__).resolve().parents[2]
CAL_PATH = ROOT / "scenarios" / "sim-calibration-example.toml"
CAL = load_calibration(CAL_PATH)
MiB = 2**20
GBIT = 1e9 / 8
WS = 100 * MiB


def scenario(tmp_path: Path, *, fast_repo: bool = True, **sections: dict[str, Any]) -> ScenarioFile:
    # A fast and immediate repository, so that the rack uplinks are the only bottleneck.
    repo = {"link": "1000 Gbit/s", "read_bw": "1000 Gbit/s", "latency": "0 s"} if fast_repo else {}
    data: dict[str, Any] = {
        "scenario": {"name": "t", "seed": 5, "sample_interval": "1 s"},
        "cluster": {"nodes": 8, "slots_per_node": 1, "nic": "10 Gbit/s", "read_cache": "0 B"},
        "repository": repo,
        "images": {"count": 1, "working_set": "100 MiB"},
        "workload": {"arrivals": "burst", "count": 8, "runtime": "10 s", "runtime_dist": "fixed"},
    }
    for name, over in sections.items():
        data.setdefault(name, {}).update(over)
    return parse_scenario_file(data, tmp_path / "s.toml")


def latencies(res: SimResult) -> np.ndarray[Any, Any]:
    return np.asarray(res.vm["running_at"] - res.vm["arrival"])


def test_one_rack_behind_a_slow_uplink_takes_n_size_over_uplink(tmp_path: Path) -> None:
    """8 nodes, one rack, 1 Gbit/s uplink < 8 x 10 Gbit/s NICs: every fetch ends at 8 x size / uplink."""
    sf = scenario(tmp_path, cluster={"racks": 1, "rack_uplink": "1 Gbit/s"})
    res = simulate(sf.base, CAL)
    assert np.allclose(latencies(res), 8 * WS / GBIT, rtol=1e-9)
    s = summarise(res)
    assert s["racks"] == 1
    assert s["rack_uplink_util_peak_instant"] == pytest.approx(1.0)
    assert s["rack_uplink_util_peak"] == pytest.approx(1.0)  # the fetch lasts 6.7 s: whole samples
    # Mean over the samples up to the one holding the last start (at 6.71 s): 6.71 s busy of 7.
    busy = 8 * WS / GBIT
    assert s["rack_uplink_util_mean"] == pytest.approx(busy / np.ceil(busy), rel=1e-9)
    # the target's 1000 Gbit/s link carries the same bytes over the same samples
    assert s["repo_link_util_mean"] == pytest.approx(busy / np.ceil(busy) / 1000, rel=1e-9)


def test_uneven_racks_each_share_their_own_uplink(tmp_path: Path) -> None:
    """10 nodes in 3 contiguous racks of 4, 3 and 3: a fetch takes rack size x size / uplink."""
    sf = scenario(
        tmp_path,
        cluster={"nodes": 10, "racks": 3, "rack_uplink": "1 Gbit/s"},
        workload={"count": 10},
    )
    res = simulate(sf.base, CAL)
    rack_size = np.where(res.vm["node"] < 4, 4, 3)
    assert np.allclose(latencies(res), rack_size * WS / GBIT, rtol=1e-9)


def test_fast_uplinks_leave_the_nics_as_the_bottleneck(tmp_path: Path) -> None:
    sf = scenario(tmp_path, cluster={"racks": 2, "rack_uplink": "100 Gbit/s"})
    res = simulate(sf.base, CAL)
    assert np.allclose(latencies(res), WS / (10 * GBIT), rtol=1e-9)
    assert summarise(res)["rack_uplink_util_peak_instant"] == pytest.approx(4 * 10 / 100)


def test_peer_fetches_cross_rack_uplinks_only_between_racks(tmp_path: Path) -> None:
    """One replica on node 0 (rack 0 of nodes 0-1): node 1 fetches inside the rack at the holder's
    NIC rate less what the others take; nodes 2 and 3 share rack 0's 100 Mbit/s uplink; node 0 reads
    its own disk."""
    sf = scenario(
        tmp_path,
        cluster={"nodes": 4, "racks": 2, "rack_uplink": "100 Mbit/s"},
        repository={"kind": "distributed", "replicas": 1, "read_bw": "1000 Gbit/s", "latency": "0 s"},
        workload={"count": 4},
    )
    res = simulate(sf.base, CAL)
    by_node = dict(zip(res.vm["node"].tolist(), latencies(res).tolist(), strict=True))
    uplink = 0.1 * GBIT
    assert by_node[0] == pytest.approx(WS / (1000 * GBIT), rel=1e-9)
    assert by_node[1] == pytest.approx(WS / (10 * GBIT - uplink), rel=1e-9)
    assert by_node[2] == pytest.approx(2 * WS / uplink, rel=1e-9)
    assert by_node[3] == pytest.approx(2 * WS / uplink, rel=1e-9)
    s = summarise(res)
    assert s["rack_uplink_util_peak_instant"] == pytest.approx(1.0)


def test_writes_through_to_a_central_target_cross_the_rack_uplink(tmp_path: Path) -> None:
    """Without a write cache the writes of the 8 VMs of one rack share its 1 Gbit/s uplink (tx):
    8 x 1 GiB at 1 Gbit/s is longer than the run, so each VM ends when its writes are done."""
    sf = scenario(
        tmp_path,
        cluster={"racks": 1, "rack_uplink": "1 Gbit/s", "write_cache": False},
        repository={"write_bw": "1000 Gbit/s"},
        workload={"write_bytes": "1 GiB"},
    )
    res = simulate(sf.base, CAL)
    started = res.vm["running_at"]
    # writes start at each VM's start (all equal), at min(cap, uplink / 8) each
    assert np.allclose(res.vm["end"] - started, 8 * 2**30 / GBIT, rtol=1e-9)


# -- validation of the new keys: one line, naming the problem ------------------------------------

BASE = """\
[scenario]
name = "t"

[cluster]
nodes = 4
nic = "1 Gbit/s"
racks = 2
rack_uplink = "10 Gbit/s"

[repository]
link = "1 Gbit/s"

[images]
working_set = "100 MiB"

[workload]
arrivals = "burst"
count = 6
runtime = "10 s"
"""

CASES = [
    ("racks = 2", "racks = 5", "cluster: racks = 5 is more racks than nodes (4)"),
    ("racks = 2", 'racks = "2"', "cluster.racks: '2' is not a whole number"),
    ("racks = 2", "racks = -1", "cluster.racks: -1 is out of range [0, 1000000] (the model's node bound)"),
    ('rack_uplink = "10 Gbit/s"', "", "cluster: rack_uplink is required (and positive) when racks > 0"),
    (
        'rack_uplink = "10 Gbit/s"',
        'rack_uplink = "10 Gb/s"',
        'cluster.rack_uplink: \'10 Gb/s\' is not a bandwidth (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    (
        'rack_uplink = "10 Gbit/s"',
        "rack_uplink = 10",
        'cluster.rack_uplink: 10 needs a unit, written as a string (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    (
        "racks = 2",
        "racks = 0",
        "cluster: rack_uplink is set but racks = 0 (no racks): set racks or drop rack_uplink",
    ),
    ("racks = 2", "rakcs = 2", "cluster.rakcs: unknown key"),
]


def run_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str, Path]:
    """``skycache sim check`` of ``text`` through the real entry point: exit code, stderr, the file."""
    p = tmp_path / "s.toml"
    p.write_text(text)
    result = skycache(capsys, "sim", "check", p, "-c", CAL_PATH)
    return result.code, result.err, p


def test_the_base_with_racks_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run_check(tmp_path, capsys, BASE)
    assert code == 0, err


@pytest.mark.parametrize(("old", "new", "line"), CASES)
def test_bad_rack_keys_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    line: str,
) -> None:
    assert old in BASE
    code, err, path = run_check(tmp_path, capsys, BASE.replace(old, new, 1))
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"skycache: error: {path}: {line}"), err


# -- no racks: the model as it was ------------------------------------------------------------------


def digest(res: SimResult) -> str:
    h = hashlib.sha256()
    for k in sorted(res.vm):
        h.update(np.ascontiguousarray(res.vm[k]).tobytes())
    h.update(repr(res.series).encode())
    return h.hexdigest()[:16]


# Digests of the per-VM arrays and the time series, computed with the model before racks existed
# (main at 73127ae): a change to a scenario without racks, down to the last bit, fails here.
BEFORE_RACKS = {
    ("sim-boot-storm.toml", "base"): "cd148a730a68d381",
    ("sim-boot-storm.toml", "no-read-cache"): "84cf378500a6f1f4",
    ("sim-swf-trace.toml", "base"): "0a701c970a8cdb56",
}
# distributed_without_racks below, same build until the network's per-link load bounds (branch
# h16b) left a holder's NIC out of its disk's pool: the last bits moved (every per-VM time and
# sample within 6.3e-14 relative of d774942d5f31c687's), so the digest is this build's.
DISTRIBUTED_BEFORE_RACKS = "b04889f722552a22"


@pytest.mark.parametrize(("name", "variant"), list(BEFORE_RACKS))
def test_committed_scenarios_without_racks_are_bit_identical(name: str, variant: str) -> None:
    sf = load_scenario(ROOT / "scenarios" / name)
    sc = next(v for v in sf.all_variants() if v.variant == variant)
    assert sc.cluster.racks == 0
    assert digest(simulate(sc, CAL)) == BEFORE_RACKS[(name, variant)]


def test_distributed_without_racks_is_bit_identical(tmp_path: Path) -> None:
    """The peer and write paths were rewritten for racks; without racks they are the same links."""
    sf = distributed_without_racks(tmp_path)
    assert digest(simulate(sf.base, CAL)) == DISTRIBUTED_BEFORE_RACKS


def distributed_without_racks(tmp_path: Path) -> ScenarioFile:
    return scenario(
        tmp_path,
        fast_repo=False,
        cluster={"nodes": 12, "slots_per_node": 2, "nic": "1 Gbit/s", "write_cache": False},
        repository={"kind": "distributed", "replicas": 2},
        images={"count": 3},
        workload={"arrivals": "poisson", "rate": "2 /s", "count": 60, "write_bytes": "50 MiB"},
    )
