"""The gate on speeds relative to a reference stack of the same round (``--relative-to STACK``).

What it is for: a slower or loaded machine slows the reference stack and the stack under test alike,
so their ratio in each round holds while both absolute figures fall (docs/bench.md, "Regression gate
in CI"). These tests check that the ratio is taken round by round, that a slowdown of both passes and
a slowdown of the stack under test alone fails, and that bad references are one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_fixtures import make_run
from boundary import Outcome, assert_one_error, skycache

from skycache.bench import compare, relative, tidy

ISCSI = [500.0, 620.0, 540.0, 580.0, 600.0]
LOCAL = [1000.0, 1200.0, 1100.0, 1150.0, 1180.0]
# one factor per round that slows both stacks: a machine half as fast, and noisier
ROUNDS = [0.5, 0.35, 0.6, 0.42, 0.55]


def _run(root: Path, iscsi: list[float], local: list[float], run_id: str = "ci") -> Path:
    return make_run(root, {"lvm-iscsi": iscsi, "lvm-local": local}, run_id=run_id)


def gate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Outcome:
    return skycache(capsys, "bench", "compare", *args, "--fail-on-regression", "30")


def test_each_repetition_is_divided_by_the_reference_of_its_own_round(tmp_path: Path) -> None:
    run = _run(tmp_path, ISCSI, LOCAL)
    rep = relative.relative_to(compare.per_rep(tidy.load(run)), "lvm-local")
    assert set(rep["label"]) == {"lvm-iscsi"}  # the reference against itself is not kept
    rep = rep[rep["direction"] == "read"].sort_values("rep")
    assert rep["iops"].tolist() == pytest.approx([a / b for a, b in zip(ISCSI, LOCAL, strict=True)])
    # fio's mean latency of the fixtures is 1e9 / IOPS ns: the latency ratio is the inverse
    assert rep["lat_mean_ns"].tolist() == pytest.approx([b / a for a, b in zip(ISCSI, LOCAL, strict=True)])


def test_a_slower_machine_fails_the_absolute_gate_and_passes_the_relative_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    slow = _run(
        tmp_path / "b",
        [v * f for v, f in zip(ISCSI, ROUNDS, strict=True)],
        [v * f for v, f in zip(LOCAL, ROUNDS, strict=True)],
    )
    assert gate(capsys, base, slow).code == 3
    result = gate(capsys, base, slow, "--relative-to", "lvm-local")
    assert result.code == 0, result
    assert "relative to lvm-local in the same round" in result.out.replace("\n", " ")
    # the geo means are ratios too, shown as such (not as IOPS rounded to 0)
    assert "0.504x lvm-local" in result.out, result.out  # geo mean of ISCSI / LOCAL per round
    assert "no regression beyond 30%" in result.out


def test_a_slowdown_of_the_stack_under_test_alone_fails_the_relative_gate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    worse = _run(
        tmp_path / "b",
        [v * f * 0.5 for v, f in zip(ISCSI, ROUNDS, strict=True)],
        [v * f for v, f in zip(LOCAL, ROUNDS, strict=True)],
    )
    result = gate(capsys, base, worse, "--relative-to", "lvm-local")
    assert result.code == 3, result
    assert "regression: lvm-iscsi [read] iops relative to lvm-local 0.50x" in result.err
    data = json.loads(gate(capsys, base, worse, "--relative-to", "lvm-local", "--json").out)
    assert data["relative_to"] == "lvm-local"
    assert {c["condition"] for c in data["comparisons"]} == {"lvm-iscsi"}
    iops = next(c for c in data["regressions"] if c["metric"] == "iops")
    assert iops["ratio"] == pytest.approx(0.5)
    assert {c["metric"] for c in data["detectable"]["changes"]} >= {"iops", "lat_mean_ns"}


def test_a_round_whose_reference_failed_is_dropped_and_counted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    gap = _run(tmp_path / "b", ISCSI, LOCAL[:4])  # round 5 of the reference is missing
    data = json.loads(
        skycache(capsys, "bench", "compare", base, gap, "--relative-to", "lvm-local", "--json").out
    )
    iops = next(c for c in data["comparisons"] if c["metric"] == "iops")
    assert (iops["n"], iops["baseline_n"], iops["dropped"]) == (4, 5, 1)


def test_a_reference_stack_the_run_does_not_have_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    other = _run(tmp_path / "b", ISCSI, LOCAL)
    result = gate(capsys, base, other, "--relative-to", "lvm-locl")
    assert_one_error(result, "--relative-to lvm-locl", code=2)
    assert "its stacks: lvm-iscsi, lvm-local" in result.err


def test_a_relative_gate_with_only_the_reference_compares_nothing_and_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = make_run(tmp_path / "a", {"lvm-local": LOCAL}, run_id="ci")
    other = make_run(tmp_path / "b", {"lvm-local": LOCAL}, run_id="ci")
    result = gate(capsys, base, other, "--relative-to", "lvm-local")
    assert_one_error(result, "no successful measurements to compare", code=2)


# -- the committed fixtures of make bench-gate-selftest (tools/gate_fixtures.py) -----------------------

FIXTURES = Path(__file__).resolve().parent / "data" / "bench" / "gate" / "relative"


def test_committed_relative_fixtures_fail_and_pass_the_ci_gate(capsys: pytest.CaptureFixture[str]) -> None:
    base = FIXTURES / "base"
    regressed = gate(capsys, base, FIXTURES / "regressed", "--relative-to", "lvm-local")
    assert regressed.code == 3, regressed
    assert "regression: lvm-iscsi [read] iops relative to lvm-local 0.50x" in regressed.err
    aa = gate(capsys, base, FIXTURES / "aa", "--relative-to", "lvm-local")
    assert aa.code == 0, aa
    assert "lvm-iscsi [read] iops: -30% (80% power: -39%; baseline n=5, sd of log values 0.25" in aa.out


# -- the reference's own drift: beyond it the ratios are not trusted -----------------------------------
# Measured with two CPU hogs beside the lab: lvm-local ran at 0.05x, lvm-iscsi at 0.20x, so the ratio
# moved 4x "better" (docs/bench.md, "Regression gate in CI"). These rounds reproduce that shape.


def test_a_reference_slowed_beyond_the_drift_limit_is_not_comparable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    loaded = _run(tmp_path / "b", [v * 0.2 for v in ISCSI], [v * 0.05 for v in LOCAL])
    result = gate(capsys, base, loaded, "--relative-to", "lvm-local")
    line = assert_one_error(result, "not comparable: reference lvm-local ran at 0.05x", code=2)
    assert "beyond --max-reference-drift 4" in line
    # a looser limit, given on purpose, lets the same runs through (and the ratio then reads 4x better)
    loose = gate(capsys, base, loaded, "--relative-to", "lvm-local", "--max-reference-drift", "25")
    assert loose.code == 0, loose


def test_a_reference_within_the_limit_is_compared_and_its_drift_printed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    slow = _run(tmp_path / "b", [v * 0.5 for v in ISCSI], [v * 0.5 for v in LOCAL])
    result = gate(capsys, base, slow, "--relative-to", "lvm-local")
    assert result.code == 0, result
    assert "note: reference lvm-local ran at 0.50x its speed in" in result.out
    as_json = gate(capsys, base, slow, "--relative-to", "lvm-local", "--json")
    (drift,) = json.loads(as_json.out)["reference_drift"]
    assert drift["stack"] == "lvm-local" and drift["ratio"] == pytest.approx(0.5)
    assert (drift["n"], drift["n_baseline"]) == (10, 10)  # read and write of 5 rounds


@pytest.mark.parametrize("factor", ["1", "0.5", "nan", "-4"])
def test_a_drift_limit_that_is_not_a_factor_above_one_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, factor: str
) -> None:
    base = _run(tmp_path / "a", ISCSI, LOCAL)
    result = gate(capsys, base, base, "--relative-to", "lvm-local", "--max-reference-drift", factor)
    assert_one_error(result, f"--max-reference-drift {factor}", code=2)


def test_the_highest_host_load_of_a_run_is_read_from_its_records() -> None:
    # the shape the sampler records (conditions.jsonl of a real loaded run)
    noise = {"cpu": {"steal_pct": 0.0}, "host_load": {"age_s": 0.0, "load1": 4.57, "load5": 2.87}}
    records = [{"noise": noise}, {"noise": {"host_load": {"load1": 1.2}}}, {"status": "failed"}]
    assert relative.max_load1(records) == 4.57
    assert relative.max_load1([{"noise": None}]) is None
