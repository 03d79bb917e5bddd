"""Issue 12, items 3-5: provenance recorded, only comparable runs compared, a gate that can fail.

The gate is ``bench compare BASELINE RUN --fail-on-regression PCT``: exit 3 on a regression, exit 2
(one line) when the runs cannot be compared or there is nothing to compare, 0 otherwise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import TINY_FILE_STACK_AND_JOBS, make_run, manifest
from boundary import Outcome, assert_one_error, skycache
from fakes import FakeRunner
from scipy import stats as sps

from skycache.bench import comparable, gate, orchestrate, provenance, scenario, store
from skycache.lab import hostinfo

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "tests" / "unit" / "data" / "bench" / "gate" / "base"
FIXTURES = ROOT / "tests" / "unit" / "data" / "bench" / "gate"
STEADY = [1000.0, 1010.0, 990.0, 1005.0]


def _set_manifest(run: Path, **environment: object) -> None:
    m = store.read_manifest(run)
    m["environment"] = {**m["environment"], **environment}
    store.RunDir(run).write_manifest({k: v for k, v in m.items() if k != "format"})


def gate_run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Outcome:
    return skycache(capsys, "bench", "compare", *args, "--fail-on-regression", "30")


# -- runs are identified by their directory ------------------------------------------------------


def test_two_runs_with_the_same_id_stay_two_and_the_regression_is_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="ci")
    worse = make_run(tmp_path / "b", {"c": [v * 0.5 for v in STEADY]}, run_id="ci")
    result = gate_run(capsys, base, worse)
    assert result.code == 3, result
    assert "regression: c [read] iops 0.50x" in result.err
    assert f"vs {base}:c" in result.err.replace("\n", "")  # labelled by path, since both are "ci"


def test_same_id_labels_are_the_paths_and_distinct_ids_stay_ids(tmp_path: Path) -> None:
    import skycache.bench

    a = make_run(tmp_path / "a", {"c": STEADY}, run_id="ci")
    b = make_run(tmp_path / "b", {"c": STEADY}, run_id="ci")
    c = make_run(tmp_path / "c", {"c": STEADY}, run_id="other")
    df = comparable.identify_runs(skycache.bench.load([a, b, c]))
    assert list(dict.fromkeys(df["run_id"])) == [str(a), str(b), "other"]


def test_the_same_run_given_twice_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = make_run(tmp_path, {"c": STEADY}, run_id="ci")
    assert_one_error(gate_run(capsys, run, run), "the same run is given twice", code=2)
    assert_one_error(gate_run(capsys, tmp_path, run), "the same run is given twice", code=2)


# -- a gate with nothing to compare fails ---------------------------------------------------------


def test_a_gate_with_no_shared_condition_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="ci")
    other = make_run(tmp_path / "b", {"d": STEADY}, run_id="ci")
    assert_one_error(gate_run(capsys, base, other), "share no condition", code=2)


def test_a_gate_on_one_run_with_one_condition_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = make_run(tmp_path, {"c": STEADY}, run_id="ci")
    assert_one_error(gate_run(capsys, run), "gate: no pair of conditions to compare", code=2)
    # without the gate the same command still just shows an (empty) comparison
    assert skycache(capsys, "bench", "compare", run).code == 0


def test_a_gate_whose_comparisons_cannot_be_significant_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = make_run(tmp_path / "a", {"c": [1000.0]})
    worse = make_run(tmp_path / "b", {"c": [100.0]})
    assert_one_error(gate_run(capsys, base, worse), "no comparison has an interval", "n=1", code=2)


# -- only comparable runs are compared ------------------------------------------------------------


def test_a_different_lab_kernel_is_refused_then_allowed_and_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="base")
    new = make_run(tmp_path / "b", {"c": STEADY}, run_id="new")
    _set_manifest(new, kernel="6.1.0-57-amd64", lab_kernel="6.1.0-57-amd64")
    line = assert_one_error(gate_run(capsys, base, new), "kernel differs", code=2)
    assert "6.1.0-56-amd64 vs 6.1.0-57-amd64" in line and "--allow-different kernel" in line
    result = gate_run(capsys, base, new, "--allow-different", "kernel")
    assert result.code == 0, result
    assert (
        "allowed difference: kernel differs between base and new (6.1.0-56-amd64 vs 6.1.0-57-amd64)"
        in result.out
    )
    data = json.loads(
        skycache(capsys, "bench", "compare", base, new, "--allow-different=kernel", "--json").out
    )
    assert [d["key"] for d in data["differences"]] == ["kernel"]


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [("accel", "kvm", "acceleration"), ("fio_version", "fio-3.36", "fio")],
)
def test_acceleration_and_fio_differences_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, field: str, value: str, key: str
) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="base")
    new = make_run(tmp_path / "b", {"c": STEADY}, run_id="new")
    _set_manifest(new, **{field: value})
    assert_one_error(gate_run(capsys, base, new), f"{key} differs", code=2)
    assert gate_run(capsys, base, new, "--allow-different", key).code == 0


def test_workload_stack_and_shaping_differences_are_named(tmp_path: Path) -> None:
    base = manifest("s", "a")
    other = manifest("s", "b")
    other["workloads"] = {"randrw": {"name": "randrw", "rw": "randrw", "bs": "4k", "iodepth": 8}}
    other["stacks"] = {"c": "lvm image, local"}
    other["shaping"] = {"name": "gbe", "rate_bps": 1e9, "detail": "tc"}
    found = comparable.differences(
        "a", comparable.facts(tmp_path, base), "b", comparable.facts(tmp_path, other)
    )
    by_key = {d.key: d.detail for d in found}
    assert set(by_key) == {"stacks", "workloads", "shaping"}
    assert by_key["workloads"] == "jobs.randrw.iodepth: 1 vs 8"
    assert by_key["stacks"] == "c: lvm image, over iSCSI vs lvm image, local"


def test_a_run_without_provenance_is_unknown_and_refused_unless_allowed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="base")
    old = make_run(tmp_path / "b", {"c": STEADY}, run_id="old")
    _set_manifest(old, fio_version=None)
    line = assert_one_error(gate_run(capsys, base, old), "fio differs", "not recorded by old", code=2)
    assert "--allow-different fio" in line
    assert gate_run(capsys, base, old, "--allow-different", "fio").code == 0


def test_an_unknown_allow_key_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="base")
    assert_one_error(gate_run(capsys, base, "--allow-different", "moon"), "'moon'", "kernel", code=2)


def test_the_committed_format_1_baseline_derives_its_workloads_from_its_scenario() -> None:
    facts = comparable.facts(BASELINE, store.read_manifest(BASELINE))
    assert not any(v is comparable.UNKNOWN for v in facts.values()), facts
    assert facts["kernel"] == "6.1.0-56-amd64" and facts["acceleration"] == "tcg"
    assert facts["workloads"]["jobs"]["randread"]["iodepth"] == 4


# -- the format version and damaged results -------------------------------------------------------


@pytest.mark.parametrize("fmt", ["99", '"2"', "true", "null"])
def test_an_unknown_format_version_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str
) -> None:
    run = make_run(tmp_path, {"c": STEADY, "d": STEADY})
    path = run / store.MANIFEST
    path.write_text(path.read_text().replace('"format": 2', f'"format": {fmt}'))
    assert_one_error(skycache(capsys, "bench", "compare", run), str(path), "format", "(1, 2)", code=2)


def test_a_truncated_tidy_table_in_a_gate_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = make_run(tmp_path / "a", {"c": STEADY}, run_id="base")
    table = base / store.TIDY
    table.write_bytes(table.read_bytes()[:200])
    new = make_run(tmp_path / "b", {"c": STEADY}, run_id="new")
    assert_one_error(gate_run(capsys, base, new), str(table), "cannot be read", code=2)


# -- the committed fixtures: the gate fails on a regression and passes on A/A -----------------------


def test_the_committed_regressed_fixture_fails_the_gate(capsys: pytest.CaptureFixture[str]) -> None:
    result = gate_run(capsys, BASELINE, FIXTURES / "regressed")
    assert result.code == 3, result
    assert "regression: lvm-iscsi [read] iops 0.20x" in result.err
    assert "regression: lvm-iscsi [read] lat_mean_ns 5.00x" in result.err


def test_an_aa_pair_passes_the_gate_and_says_what_it_could_detect(capsys: pytest.CaptureFixture[str]) -> None:
    result = gate_run(capsys, BASELINE, FIXTURES / "aa")
    assert result.code == 0, result
    assert "no regression beyond 30%" in result.out
    assert "lvm-iscsi [read] iops: -62% (80% power: -73%; baseline n=5, sd of log values 0.66" in result.out
    data = json.loads(gate_run(capsys, BASELINE, FIXTURES / "aa", "--json").out)
    iops = next(c for c in data["detectable"]["changes"] if c["metric"] == "iops")
    assert iops["baseline_n"] == 5 and 0.37 < iops["ratio_50pct_power"] < 0.39


# -- the detectable change ------------------------------------------------------------------------


@pytest.mark.parametrize(("n_a", "n_b", "sd"), [(3, 3, 0.1), (5, 5, 0.66), (3, 10, 0.3)])
def test_a_change_at_the_threshold_is_exactly_significant_for_welch(n_a: int, n_b: int, sd: float) -> None:
    d = gate.log_threshold(sd, n_a, n_b, 0.05)
    # two samples with exactly that spread, d apart: Welch's test puts them at p = alpha

    def sample(n: int, shift: float) -> np.ndarray:
        z = np.linspace(-1.0, 1.0, n)
        return shift + sd * z / np.std(z, ddof=1)

    p = sps.ttest_ind(sample(n_a, 0.0), sample(n_b, d), equal_var=False).pvalue
    assert p == pytest.approx(0.05, abs=1e-6)
    assert gate.log_threshold(sd, n_a, n_b, 0.05, power=0.8) > d
    assert math.isinf(gate.log_threshold(sd, 1, n_b, 0.05))


# -- provenance ------------------------------------------------------------------------------------

CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"


def test_environment_records_host_facts_and_null_for_missing_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYCACHE_IN_LAB", raising=False)
    runner = FakeRunner(files={"/proc/cpuinfo": CPUINFO})
    runner.reply("uname", "-r", stdout="6.12.0-1-amd64\n")
    runner.reply("git", "rev-parse", stdout="abc123\n")
    runner.reply("git", "status", stdout=" M lib/x.py\n")
    runner.reply("fio", stderr="fio: not found", rc=127)
    runner.reply("qemu-system-x86_64", stdout="QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)\n")
    runner.reply("vng", rc=127)
    env = provenance.environment(runner, "host")
    assert env["fio_version"] is None and env["host"]["vng_version"] is None
    assert env["host"] == {
        "cpu_model": "AMD EPYC 7B13",
        "cpus": 2,
        "kernel": "6.12.0-1-amd64",
        "qemu_version": "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)",
        "vng_version": None,
    }
    assert env["git_commit"] == "abc123+dirty" and env["git_dirty"] is True
    assert env["accel"] == "none" and env["lab_kernel"] is None


def test_inside_the_lab_host_facts_and_load_come_from_the_booting_side(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host = FakeRunner(files={"/proc/cpuinfo": CPUINFO, "/proc/loadavg": "3.91 2.50 1.20 3/467 12345\n"})
    host.reply("uname", "-r", stdout="6.12.0-1-amd64\n")
    facts = {**hostinfo.host_facts(host), "accel": "tcg", "lab_kernel": "6.1.0-57-amd64"}
    with hostinfo.HostShare(host, tmp_path, facts):
        pass  # the first load sample is written as the thread starts
    monkeypatch.setenv("SKYCACHE_IN_LAB", "1")
    monkeypatch.setenv(hostinfo.HOST_DIR_ENV, str(tmp_path))
    guest = FakeRunner()
    guest.reply("uname", "-r", stdout="6.1.0-57-amd64\n")
    env = provenance.environment(guest, "lab")
    assert env["accel"] == "tcg" and env["lab_kernel"] == "6.1.0-57-amd64"
    assert env["host"]["cpu_model"] == "AMD EPYC 7B13" and env["host"]["kernel"] == "6.12.0-1-amd64"
    load = provenance.host_load(guest)
    assert load is not None and load["load1"] == 3.91 and load["age_s"] is not None


def test_inside_a_lab_that_left_no_host_facts_nothing_is_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCACHE_IN_LAB", "1")
    monkeypatch.delenv(hostinfo.HOST_DIR_ENV, raising=False)
    guest = FakeRunner(
        files={"/proc/cpuinfo": "model name : QEMU TCG CPU\n", "/proc/loadavg": "0.1 0.1 0.1 1/2 3\n"}
    )
    env = provenance.environment(guest, "lab")
    assert env["host"]["cpu_model"] is None  # the emulated CPU is not the host's
    assert provenance.host_load(guest) is None  # nor is the guest's load


def test_cpu_delta_gives_busy_and_steal_seconds() -> None:
    before = {
        "user": 100,
        "nice": 0,
        "system": 50,
        "idle": 800,
        "iowait": 50,
        "irq": 0,
        "softirq": 0,
        "steal": 0,
    }
    after = {**before, "user": 300, "system": 100, "idle": 1000, "steal": 100}
    d = provenance.cpu_delta(before, after)
    assert d == {"cpu_busy_s": 2.5, "idle_s": 2.0, "iowait_s": 0.0, "steal_s": 1.0, "steal_pct": 18.18}
    assert provenance.cpu_delta(after, before) is None and provenance.cpu_delta(None, after) is None


def test_cpu_times_reads_the_aggregate_line_and_tolerates_a_missing_file() -> None:
    stat = "cpu  10 1 5 100 2 0 1 7 0 0\ncpu0 5 0 2 50 1 0 0 3 0 0\n"
    assert provenance.cpu_times(FakeRunner(files={"/proc/stat": stat})) == {
        "user": 10, "nice": 1, "system": 5, "idle": 100, "iowait": 2, "irq": 0, "softirq": 1, "steal": 7,
    }  # fmt: skip
    assert provenance.cpu_times(FakeRunner()) is None


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed")
def test_a_host_run_records_provenance_and_noise_per_repetition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKYCACHE_IN_LAB", raising=False)
    f = tmp_path / "s.toml"
    f.write_text(
        'name = "host-tiny"\nwhere = "host"\nrepetitions = 2\nimage_size = "8M"\n' + TINY_FILE_STACK_AND_JOBS
    )
    opts = orchestrate.RunOptions(results=tmp_path / "results", where="host", workdir=tmp_path / "work")
    out = orchestrate.run_scenario(scenario.load(f), opts)
    assert out.failed == 0, out.errors
    m = out.run.manifest()
    assert m["format"] == store.FORMAT_VERSION == 2
    env = m["environment"]
    assert env["host"]["kernel"] == os.uname().release and env["host"]["cpus"] == os.cpu_count()
    assert env["accel"] == "none" and env["lab_kernel"] is None and isinstance(env["git_dirty"], bool)
    assert m["workloads"]["randread"]["rw"] == "randread" and m["workloads"]["randread"]["iodepth"] == 1
    records = list(out.run.records())
    assert len(records) == 4
    for rec in records:
        noise = rec["noise"]
        assert noise["host_load"]["load1"] >= 0 and noise["wall_s"] > 0
        assert noise["cpu"]["cpu_busy_s"] >= 0 and 0 <= noise["cpu"]["steal_pct"] <= 100
