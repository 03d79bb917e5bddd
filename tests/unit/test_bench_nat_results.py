"""The NAT benchmark under ``bench``: ``bench nat`` (``net nat-bench`` stays), and its runs read by
``bench show`` and ``bench compare`` like fio runs (the committed run is the data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from boundary import assert_one_error, skycache

from skycache.bench import natbench

ROOT = Path(__file__).resolve().parents[2]
NAT_RUN = ROOT / "results" / "nat-bench" / "20261125T122106Z"
FIO_RUN = ROOT / "results" / "quickstart" / "20261125T164441Z"


def test_bench_show_prints_the_nat_table(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "bench", "show", NAT_RUN)
    assert r.code == 0 and r.err == "", r
    assert "(NAT benchmark)" in r.out and "throughput (Mbit/s)      107.1 [69.96, 144.3]" in r.out
    assert "over 5 repetition(s) per condition" in r.out
    doc = json.loads(skycache(capsys, "bench", "show", NAT_RUN, "--json").out)
    committed = json.loads((NAT_RUN / "manifest.json").read_text())["summary"]
    assert doc["summary"] == committed  # the same figures the run printed when it finished


def test_bench_compare_of_one_nat_run_is_nat_against_routed(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "bench", "compare", NAT_RUN, "--json")
    assert r.code == 0, r
    comps = {c["metric"]: c for c in json.loads(r.out)["comparisons"]}
    assert set(comps) == {"throughput_bps", "conn_per_s", "cpu_ns_per_packet", "softirq_ns_per_packet",
                          "cpu_ns_per_conn", "conntrack_entries", "conntrack_bytes"}  # fmt: skip
    t = comps["throughput_bps"]
    assert (t["condition"], t["baseline"], t["direction"], t["n"], t["baseline_n"]) == (
        "nat",
        "routed",
        "net",
        5,
        5,
    )
    assert t["verdict"] == "not significant" and 0.5 < t["ratio"] < 2
    # routed traffic leaves conntrack empty: a floor makes zero a value, and NAT's entries stand out
    assert comps["conntrack_entries"]["verdict"] == "higher" and comps["conntrack_entries"]["ratio"] > 10
    table = skycache(capsys, "bench", "compare", NAT_RUN)
    assert table.code == 0 and "ratio to baseline (routed)" in table.out and "Mbit/s" in table.out


def test_bench_compare_of_nat_runs_compares_each_condition_with_the_first_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(NAT_RUN, a)
    shutil.copytree(NAT_RUN, b)
    r = skycache(capsys, "bench", "compare", a, b, "--metric", "throughput_bps", "--json")
    assert r.code == 0, r
    comps = [c for c in json.loads(r.out)["comparisons"] if c["metric"] == "throughput_bps"]
    assert {c["condition"] for c in comps} == {"nat", "routed"}
    assert all(c["ratio"] == pytest.approx(1.0) for c in comps)
    gate = skycache(capsys, "bench", "compare", a, b, "--fail-on-regression", "10")
    assert gate.code == 0, gate


def test_nat_and_fio_runs_are_not_compared(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "bench", "compare", NAT_RUN, FIO_RUN)
    assert_one_error(r, "not comparable", "NAT benchmark run", "a fio run", code=2)
    r = skycache(capsys, "bench", "compare", NAT_RUN, "--relative-to", "lvm-local")
    assert_one_error(r, "--relative-to", code=2)


def test_nat_runs_with_another_kernel_are_refused_like_fio_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(NAT_RUN, a)
    shutil.copytree(NAT_RUN, b)
    m = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**m, "kernel": "6.6.0-1-amd64"}))
    assert_one_error(skycache(capsys, "bench", "compare", a, b), "not comparable", "kernel", code=2)


@pytest.mark.parametrize("verb", [("bench", "nat"), ("net", "nat-bench")])
def test_both_names_run_the_nat_benchmark(capsys: pytest.CaptureFixture[str], verb: tuple[str, str]) -> None:
    assert skycache(capsys, *verb, "--help").code == 0
    assert_one_error(skycache(capsys, *verb, "--repetitions", "0"), "--repetitions 0", code=2)


def test_the_lab_runs_the_new_name() -> None:
    argv = natbench.lab_argv(natbench.NatBenchOptions(), "skycache")
    assert argv[argv.index("--") + 1 :][:3] == ["skycache", "bench", "nat"]
