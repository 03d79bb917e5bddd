"""The bench and suite verbs, end to end through the real CLI entry point (no root, no lab)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench_fixtures import make_run

ROOT = Path(__file__).resolve().parents[2]


def sky(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skycache.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_suite_validate_ok_and_bad(tmp_path: Path) -> None:
    ok = sky("suite", "validate", "scenarios")
    assert ok.returncode == 0, ok.stderr
    assert "quickstart.toml: ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "b"\nrepetitions = -1\n[[stacks]]\nname = "s"\n[[workloads]]\nname = "w"\nrw = "read"\n'
    )
    r = sky("suite", "validate", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.toml: repetitions:" in lines[0] and "Traceback" not in r.stderr


def test_bench_run_refuses_invalid_scenario_before_building(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "b"\n[[stacks]]\nname = "s"\nbackend = "file"\ncow = "thin"\n'
        '[[workloads]]\nname = "w"\nrw = "read"\n'
    )
    r = sky("bench", "run", str(bad), "--where", "host", "--out", str(tmp_path / "res"))
    assert r.returncode == 2
    assert r.stderr.startswith("skycache: error: ") and "cow = 'thin' needs backend = 'lvm'" in r.stderr
    assert not (tmp_path / "res").exists()  # nothing made


def test_bench_run_where_hosts_needs_hosts_and_bad_where_is_one_line(tmp_path: Path) -> None:
    r = sky("bench", "run", "scenarios/regression.toml", "--where", "hosts", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--where hosts" in r.stderr and "no fio server hosts" in r.stderr
    r = sky("bench", "run", "scenarios/regression.toml", "--where", "moon", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "'moon'" in r.stderr and "use lab, host or hosts" in r.stderr
    assert not (tmp_path / "r").exists()


def test_suite_show_json() -> None:
    r = sky("suite", "show", "scenarios/quickstart.toml", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    labels = [c["label"] for c in data["conditions"]]
    assert "lvm-iscsi-rcache/randread/warm" in labels and "lvm-iscsi-wcache/randwrite/cold" in labels


def test_compare_and_regression_gate(tmp_path: Path) -> None:
    base = make_run(tmp_path, {"c": [1000, 1010, 990, 1005]}, run_id="base")
    worse = make_run(tmp_path, {"c": [700, 710, 690, 705]}, run_id="worse")
    same = make_run(tmp_path, {"c": [1000, 990, 1012, 1001]}, run_id="same")
    r = sky("bench", "compare", str(base), str(worse), "--fail-on-regression", "10")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "regression: c [read] iops 0.70x" in r.stderr
    r = sky("bench", "compare", str(base), str(same), "--fail-on-regression", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no regression beyond 10%" in r.stdout
    r = sky("bench", "compare", str(base), str(worse), "--json")
    data = json.loads(r.stdout)
    assert any(c["metric"] == "iops" and c["verdict"] == "worse" for c in data["comparisons"])


def test_plots_verb_writes_pngs_and_report_verb_the_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"fast": [2000, 2100, 1900], "base": [1000, 1010, 990]}, failed=["broken"])
    r = sky("bench", "plots", str(run))
    assert r.returncode == 0, r.stderr
    pngs = [Path(line) for line in r.stdout.split() if line.endswith(".png")]
    assert {p.name for p in pngs} == {"iops.png", "latency.png", "latency-percentiles.png", "cache.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "report.md").exists()  # plots only
    # the form from before `bench report` still runs, and says where its --baseline went
    r = sky("bench", "plots", str(run), "--baseline", "stack=base")
    assert r.returncode == 0 and "skycache bench report" in r.stderr and not (run / "report.md").exists()
    r = sky("bench", "report", str(run), "--baseline", "stack=base")
    assert r.returncode == 0 and r.stdout == f"{run / 'report.md'}\n", r.stderr
    report = (run / "report.md").read_text()
    assert "| fast | base | read | iops |" in report
    assert "broken rep 1: boom: iSCSI login refused" in report
    assert "![iops](plots/iops.png)" in report


def test_show_verb(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": [1000, 1100, 900]})
    r = sky("bench", "show", str(run), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["condition"] == "a" and rows[0]["n"] == 3
