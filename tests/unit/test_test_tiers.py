"""tools/test_tiers.py: the lab tier's per-file times and its budget warning."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("test_tiers_tool", ROOT / "tools" / "test_tiers.py")
assert _spec and _spec.loader
tiers = importlib.util.module_from_spec(_spec)
sys.modules["test_tiers_tool"] = tiers
_spec.loader.exec_module(tiers)

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="3" time="70">
<testcase classname="tests.lab.test_a" name="test_one" time="10.5"/>
<testcase classname="tests.lab.test_a" name="test_two" time="20.0"/>
<testcase classname="tests.lab.test_b.TestGroup" name="test_three" time="40.0">
<failure message="x"/></testcase>
</testsuite></testsuites>
"""


def test_file_seconds_sums_per_file_and_folds_classes(tmp_path: Path) -> None:
    xml = tmp_path / "lab.xml"
    xml.write_text(REPORT)
    assert tiers.file_seconds(xml) == {"tests/lab/test_a.py": 30.5, "tests/lab/test_b.py": 40.0}
    assert tiers.counts(xml) == (2, 1, 0)


def test_time_report_lists_slowest_first_and_warns_over_budget(tmp_path: Path) -> None:
    xml = tmp_path / "lab.xml"
    xml.write_text(REPORT)
    lines = tiers.lab_time_report([xml], wall_s=90, budget_s=60)
    assert lines[1].split() == ["40", "tests/lab/test_b.py"]
    assert lines[2].split() == ["30", "tests/lab/test_a.py"]
    assert "WARNING: over its budget of 1 min" in lines[-1]
    assert "within" in tiers.lab_time_report([xml], wall_s=30, budget_s=60)[-1]


def test_lab_switches_reach_the_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SKYCACHE_LAB_SSH=1 make test-lab ...` must run the opt-in file: the guest's pytest sees the
    switch (and 0 when it is not set), every switch the lab tests read."""
    monkeypatch.setenv("SKYCACHE_LAB_SSH", "1")
    monkeypatch.delenv("SKYCACHE_BENCH_FIGURES", raising=False)
    argv = tiers.lab_argv(["tests/lab/test_x.py"], Path("build/r/lab.xml"), [])
    env = argv[argv.index("env") + 1 : argv.index("-m", argv.index("env"))]
    assert "SKYCACHE_LAB_SSH=1" in env and "SKYCACHE_BENCH_FIGURES=0" in env
    read = {
        name
        for f in (ROOT / "tests" / "lab").glob("*.py")
        for name in re.findall(r'environ\.get\("(SKYCACHE_[A-Z_]+)"', f.read_text())
    }
    set_by_the_lab = {"SKYCACHE_IN_LAB", "SKYCACHE_LAB_DISKS"}
    assert read - set_by_the_lab <= set(tiers.LAB_SWITCHES), read
