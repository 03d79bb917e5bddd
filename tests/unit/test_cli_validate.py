"""``skycache validate FILE...``: one verb for every kind of input file, each checked as its own verb
checks it; and a file given to the wrong kind's verb gets advice naming the right one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from boundary import assert_one_error, skycache

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
BENCH, SIM, CAL = (
    SCENARIOS / "quickstart.toml",
    SCENARIOS / "sim-nat.toml",
    SCENARIOS / "sim-calibration-example.toml",
)


def test_each_kind_is_detected_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "validate", BENCH, SIM, CAL)
    assert r.code == 0 and r.err == "", r
    assert r.out.splitlines() == [
        f"{BENCH}: ok, bench scenario (8 conditions, 32 fio runs at most)",
        f"{SIM}: ok, sim scenario (nat: 3 variant(s), 3 sweep point(s))",
        f"{CAL}: ok, sim calibration (10 values)",
    ]


def test_a_directory_checks_every_toml_in_it_sim_files_too(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "validate", SCENARIOS, "--json")
    assert r.code == 0, r
    rows = json.loads(r.out)
    kinds = {Path(str(x["file"])).name: x["kind"] for x in rows}
    assert kinds["regression.toml"] == "bench scenario" and kinds["sim-scale.toml"] == "sim scenario"
    assert kinds["sim-calibration-example.toml"] == "sim calibration" and all(x["valid"] for x in rows)
    assert len(rows) == len(list(SCENARIOS.glob("*.toml")))


def test_an_invalid_file_is_one_line_naming_the_value_and_the_others_still_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BENCH.read_text().replace('image_size = "64M"', 'image_size = "64 parsecs"'))
    r = skycache(capsys, "validate", bad, SIM, "--json")
    assert r.code == 2
    assert_one_error(r, str(bad), "image_size", "64 parsecs")
    rows = json.loads(r.out)
    assert [(x["kind"], x["valid"]) for x in rows] == [("bench scenario", False), ("sim scenario", True)]
    assert "64 parsecs" in str(rows[0]["error"])


def test_a_bad_sim_scenario_gets_the_sim_checks_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "sim-bad.toml"
    text = SIM.read_text().replace('"sim-calibration-example.toml"', f'"{CAL}"')
    bad.write_text(text.replace("nodes = 500", "nodes = -3", 1))
    r = skycache(capsys, "validate", bad)
    assert_one_error(r, str(bad), "nodes", "-3", code=2)
    assert skycache(capsys, "sim", "check", bad).err == r.err  # the same check as sim check's


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('name = "x"\n', "not a file skycache knows (a bench scenario has [[stacks]] and [[workloads]]"),
        ("not toml [", "not valid TOML"),
        ('[scenario]\nname = "x"\n[[stacks]]\nname = "s"\n', "stacks: unknown key"),  # the sim kind's error
    ],
)
def test_a_file_of_no_kind_is_one_line_saying_what_each_kind_has(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, fragment: str
) -> None:
    f = tmp_path / "x.toml"
    f.write_text(content)
    assert_one_error(skycache(capsys, "validate", f), str(f), fragment, code=2)


def test_a_missing_file_and_an_empty_directory_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert_one_error(skycache(capsys, "validate", tmp_path / "nope.toml"), "nope.toml", code=2)
    assert_one_error(skycache(capsys, "validate", tmp_path), "no *.toml files", code=2)


def test_suite_validate_of_a_sim_scenario_names_sim_check(capsys: pytest.CaptureFixture[str]) -> None:
    sim = SCENARIOS / "sim-scale.toml"
    assert_one_error(
        skycache(capsys, "suite", "validate", sim),
        f"{sim} is a sim scenario, not a bench scenario: check it with `skycache sim check {sim}`",
        "skycache validate",
        code=2,
    )


def test_sim_check_of_a_fio_suite_names_suite_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_error(
        skycache(capsys, "sim", "check", BENCH),
        f"{BENCH} is a bench scenario, not a sim scenario: check it with `skycache suite validate {BENCH}`",
        code=2,
    )
    # a scenario given where a calibration is read
    assert_one_error(
        skycache(capsys, "sim", "check", SIM, "-c", SIM), "is a sim scenario, not a sim calibration"
    )


def test_the_old_verbs_still_check_their_own_kind(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "suite", "validate", BENCH)
    assert r.code == 0 and r.out == f"{BENCH}: ok (8 conditions, 32 fio runs at most)\n", r
    r = skycache(capsys, "sim", "check", SIM)
    assert r.code == 0 and r.out == "ok: nat: 3 variant(s), 3 sweep point(s)\n", r


@pytest.mark.parametrize(
    ("args", "verb"),
    [(["suite", "validate", "scenarios/sim-scale.toml"], "skycache sim check"),
     (["sim", "check", "scenarios/quickstart.toml"], "skycache suite validate")],
)  # fmt: skip
def test_the_advice_holds_in_a_real_start_that_loads_one_portion(args: list[str], verb: str) -> None:
    # a real start loads only the portion its verb names (cli/main.py): the other kinds must load
    r = subprocess.run(
        [sys.executable, "-m", "skycache.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and verb in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
