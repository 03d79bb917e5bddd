"""``bench run --no-report`` and the host half of a lab run: the lab runs fio only, the host draws.

A lab run started outside the lab passes ``--no-report`` to the guest, then reads the guest's
summary.json and draws the plots and report.md itself (matplotlib under TCG took 1 min 43 s of a
13 min 40 s ``make demo``). Here the guest's half is a real host run with ``--no-report`` (fio on a
file image, no root), and the host's half is the same closing code called on its run directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench_fixtures import TINY_FILE_STACK_AND_JOBS

from skycache.bench import cli, scenario

pytestmark = pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed")

ROOT = Path(__file__).resolve().parents[2]
PLOTS = ["iops.png", "latency.png", "latency-percentiles.png", "cache.png"]
SCENARIO = 'name = "tiny"\nwhere = "host"\nrepetitions = 2\nimage_size = "8M"\n' + TINY_FILE_STACK_AND_JOBS


def _sky(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skycache.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def undrawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(scenario file, run directory) of a real run made with --no-report."""
    tmp = tmp_path_factory.mktemp("noreport")
    sc = tmp / "tiny.toml"
    sc.write_text(SCENARIO)
    r = _sky("bench", "run", str(sc), "--out", str(tmp / "res"), "--workdir", str(tmp / "work"),
             "--run-id", "r1", "--no-report", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] == 4 and doc["plots"] == [] and doc["report"] is None and doc["comparisons"] == []
    # in a log (stderr is a pipe here) the end of the run is not minutes of silence: the teardown says so
    assert "bench: tearing down the repository and node storage\n" in r.stderr
    assert re.search(r"^bench: teardown done in [0-9.]+ s$", r.stderr, re.M), r.stderr
    return sc, tmp / "res" / "tiny" / "r1"


def test_no_report_draws_nothing_and_says_how_to_draw(undrawn: tuple[Path, Path]) -> None:
    _, run = undrawn
    assert not (run / "report.md").exists() and not (run / "plots").exists()
    summary = json.loads((run / cli.RUN_SUMMARY).read_text())
    assert summary["run_id"] == "r1" and summary["failed"] == 0


def test_the_host_half_draws_from_the_summary_the_lab_left(
    undrawn: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sc_path, run = undrawn
    copy = tmp_path / "r1"
    shutil.copytree(run, copy)
    finished = cli._lab_outcome(copy)
    assert finished is not None and (finished.run_id, finished.ok, finished.failed) == ("r1", 4, 0)
    cli._close(scenario.load(sc_path), finished, None, as_json=True, draw=True)
    out, err = capsys.readouterr()
    doc = json.loads(out)
    # a line as each figure and each step of report.md starts, with the time since drawing began
    step = r"^bench: (drawing plots|writing report.md) \((\d) of (\d): ([\w.-]+)\) \.\.\. [0-9.]+ s$"
    steps = re.findall(step, err, re.M)
    assert [s[3] for s in steps] == [*PLOTS, "comparisons", "report.md"]
    assert steps[0][1:3] == ("1", "4")
    assert re.search(r"^bench: drawing plots: 4 plots in [0-9.]+ s$", err, re.M), err
    assert (copy / "report.md").is_file() and doc["report"] == str(copy / "report.md")
    assert {Path(p).name for p in doc["plots"]} >= {"iops.png", "latency.png"}
    assert json.loads((copy / cli.RUN_SUMMARY).read_text()) == doc  # the host's summary replaced the lab's


def test_no_summary_or_a_corrupt_one_means_the_lab_stopped_early(tmp_path: Path) -> None:
    assert cli._lab_outcome(tmp_path) is None
    (tmp_path / cli.RUN_SUMMARY).write_text('{"run_id": "x", "ok": ')
    assert cli._lab_outcome(tmp_path) is None
    (tmp_path / cli.RUN_SUMMARY).write_text('["not", "a", "summary"]')
    assert cli._lab_outcome(tmp_path) is None


def test_bench_plots_draws_an_undrawn_run_later(undrawn: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = undrawn
    copy = tmp_path / "r1"
    shutil.copytree(run, copy)
    r = _sky("bench", "plots", str(copy))
    assert r.returncode == 0, r.stderr
    assert (copy / "plots" / "iops.png").is_file() and not (copy / "report.md").exists()  # plots only
    assert r.stdout.split() == [str(copy / "plots" / n) for n in PLOTS]
    assert "bench: drawing plots (4 of 4: cache.png)" in r.stderr
    r = _sky("bench", "report", str(copy))
    assert r.returncode == 0 and r.stdout == f"{copy / 'report.md'}\n", r.stderr
    assert "![iops](plots/iops.png)" in (copy / "report.md").read_text()
    assert "bench: writing report.md (2 of 2: report.md)" in r.stderr


def test_bench_report_of_an_undrawn_run_says_how_to_draw_the_plots(
    undrawn: tuple[Path, Path], tmp_path: Path
) -> None:
    _, run = undrawn
    copy = tmp_path / "r1"
    shutil.copytree(run, copy)
    r = _sky("bench", "report", str(copy), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["report"] == str(copy / "report.md") and not (copy / "plots").exists()
    assert "(none drawn yet: `skycache bench plots RUN` draws them)" in (copy / "report.md").read_text()


def test_the_guest_of_a_host_drawn_run_prints_one_line_and_leaves_the_summary(tmp_path: Path) -> None:
    # what the lab's `bench run` does when the host booted it: no table, no JSON, no "not drawn" hint
    sc = tmp_path / "tiny.toml"
    sc.write_text(SCENARIO)
    r = _sky("bench", "run", str(sc), "--out", str(tmp_path / "res"), "--workdir", str(tmp_path / "work"),
             "--run-id", "g", "--no-report", "--host-draws", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout == ""
        and r.stderr.rstrip().splitlines()[-1] == "bench: fio runs done (4 ok, 0 failed); the host draws"
    )
    run = tmp_path / "res" / "tiny" / "g"
    finished = cli._lab_outcome(run)
    assert finished is not None and finished.ok == 4 and not (run / "report.md").exists()
