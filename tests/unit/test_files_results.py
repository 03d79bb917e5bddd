"""Result directories and output directories (issue 18, "State and result directories"): a
truncated tidy.parquet, a corrupt or list-shaped manifest.json, broken run records, a read-only run
directory for ``bench plots``, and ``--out`` that is a file, under a file, read-only or under /proc:
one ``skycache: error:`` line, a non-zero exit, nothing changed on disk, nothing run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bench_fixtures import make_run
from boundary import assert_one_error, skycache, snapshot, touched

from skycache.bench import store

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "results", {"a": [100, 110, 105], "b": [200, 190, 210]})


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """chmod a directory 0555 for the test (restored after, so pytest can clean up)."""
    made: list[Path] = []

    def make(p: Path) -> Path:
        p.mkdir(parents=True, exist_ok=True)
        p.chmod(0o555)
        made.append(p)
        return p

    yield make
    for p in made:
        p.chmod(0o755)


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "verb", [("bench", "show"), ("bench", "compare"), ("bench", "plots"), ("bench", "report")]
)
@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_a_damaged_tidy_table_is_one_line(
    capsys: pytest.CaptureFixture[str], run_dir: Path, verb: tuple[str, ...], damage: str
) -> None:
    table = run_dir / store.TIDY
    if damage == "truncated":
        _truncate(table)
    else:
        table.write_text("" if damage == "empty" else "a,b\n1,2\n")
    before = snapshot(run_dir)
    result = skycache(capsys, *verb, run_dir)
    assert_one_error(result, str(table), "tidy table cannot be read", code=2)
    assert touched(before, [run_dir]) == []


MANIFESTS = {
    "corrupt": ('{"scenario": "x", ', "is not valid JSON"),
    "list-shaped": ('["scenario", "x"]\n', "is a JSON list, not an object"),
    "binary": ("\x00\x01\x02", "holds a NUL byte"),
    "a section that is a list": ('{"environment": ["x"]}\n', "environment is not a JSON object"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("verb", [("bench", "compare"), ("bench", "plots"), ("bench", "report")])
@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_bad_manifest_is_one_line(
    capsys: pytest.CaptureFixture[str], run_dir: Path, verb: tuple[str, ...], case: str
) -> None:
    text, problem = MANIFESTS[case]
    manifest = run_dir / store.MANIFEST
    manifest.write_text(text)
    before = snapshot(run_dir)
    assert_one_error(skycache(capsys, *verb, run_dir), str(manifest), problem, code=2)
    assert touched(before, [run_dir]) == []


def test_a_manifest_that_is_a_directory_is_one_line(
    capsys: pytest.CaptureFixture[str], run_dir: Path
) -> None:
    manifest = run_dir / store.MANIFEST
    manifest.unlink()
    manifest.mkdir()
    before = snapshot(run_dir)
    assert_one_error(skycache(capsys, "bench", "plots", run_dir), str(manifest), "is a directory", code=2)
    assert touched(before, [run_dir]) == []


def test_a_broken_record_line_is_named(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    records = run_dir / store.RECORDS
    records.write_text(records.read_text() + "[1, 2]\n")
    n = len(records.read_text().splitlines())
    before = snapshot(run_dir)
    result = skycache(capsys, "bench", "plots", run_dir)
    assert_one_error(result, f"{records}: line {n} is a JSON list", code=2)
    assert touched(before, [run_dir]) == []


@pytest.mark.parametrize("verb", ["plots", "report"])
def test_bench_plots_and_report_refuse_a_read_only_run_directory(
    capsys: pytest.CaptureFixture[str], run_dir: Path, read_only: Callable[[Path], Path], verb: str
) -> None:
    read_only(run_dir)
    before = snapshot(run_dir)
    result = skycache(capsys, "bench", verb, run_dir)
    assert_one_error(result, f"run directory {run_dir}", "read-only (mode 0555)", code=2)
    assert touched(before, [run_dir]) == []


def test_bench_plots_and_report_redraw_a_good_run(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    result = skycache(capsys, "bench", "plots", run_dir)
    assert result.code == 0 and (run_dir / "plots" / "iops.png").is_file(), result
    result = skycache(capsys, "bench", "report", run_dir)
    assert result.code == 0 and (run_dir / "report.md").is_file(), result


# -- --out checked before anything runs --------------------------------------------------------------


def _file(tmp: Path, ro: Callable[[Path], Path]) -> tuple[Path, str]:
    (tmp / "out").write_text("x")
    return tmp / "out", "is a file, not a directory"


def _under_file(tmp: Path, ro: Callable[[Path], Path]) -> tuple[Path, str]:
    (tmp / "out").write_text("x")
    return tmp / "out" / "results", f"{tmp / 'out'} is a file, not a directory"


def _read_only(tmp: Path, ro: Callable[[Path], Path]) -> tuple[Path, str]:
    return ro(tmp / "out") / "results", "read-only (mode 0555)"


def _proc(tmp: Path, ro: Callable[[Path], Path]) -> tuple[Path, str]:
    return Path("/proc/self/results"), "is under /proc or /sys"


OUTS = {"a file": _file, "under a file": _under_file, "read-only": _read_only, "under /proc": _proc}


def _never(*args: object, **kwargs: object) -> int:
    raise AssertionError("the run started")


@pytest.mark.parametrize("case", list(OUTS))
def test_bench_run_refuses_a_bad_out_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    read_only: Callable[[Path], Path],
) -> None:
    from skycache.bench import cli as bench_cli
    from skycache.bench import orchestrate

    monkeypatch.setattr(bench_cli, "_run_in_lab", _never)
    monkeypatch.setattr(orchestrate, "run_scenario", _never)
    out, problem = OUTS[case](tmp_path, read_only)
    before = snapshot(tmp_path)
    for where in ("lab", "host"):
        result = skycache(
            capsys, "bench", "run", SCENARIOS / "quickstart.toml", "--out", out, "--where", where
        )
        assert_one_error(result, f"--out {out}", problem, code=2)
    assert touched(before, [tmp_path]) == []


@pytest.mark.parametrize("case", list(OUTS))
def test_the_orchestrator_refuses_a_bad_results_directory_itself(
    tmp_path: Path, case: str, read_only: Callable[[Path], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes import FakeRunner

    from skycache.bench import orchestrate, scenario
    from skycache.errors import InvalidInput

    monkeypatch.setattr(orchestrate.Orchestrator, "run", _never)
    out, problem = OUTS[case](tmp_path, read_only)
    sc = scenario.load(SCENARIOS / "quickstart.toml")
    with pytest.raises(InvalidInput, match="--out") as err:
        orchestrate.run_scenario(sc, orchestrate.RunOptions(results=out, where="host"), runner=FakeRunner())
    assert problem in str(err.value)


@pytest.mark.parametrize("verb", ["run", "sweep"])
@pytest.mark.parametrize("case", list(OUTS))
def test_sim_refuses_a_bad_out_before_it_simulates(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: str,
    verb: str,
    monkeypatch: pytest.MonkeyPatch,
    read_only: Callable[[Path], Path],
) -> None:
    from skycache.sim import model, sweep

    monkeypatch.setattr(model, "simulate", _never)
    monkeypatch.setattr(sweep, "run_sweep", _never)
    out, problem = OUTS[case](tmp_path, read_only)
    before = snapshot(tmp_path)
    result = skycache(capsys, "sim", verb, SCENARIOS / "sim-nat.toml", "--out", out)
    assert_one_error(result, f"--out {out}", problem, code=2)
    assert touched(before, [tmp_path]) == []


def test_a_good_manifest_still_reads(run_dir: Path) -> None:
    manifest = store.read_manifest(run_dir)
    assert manifest["environment"]["where"] == "test"
    assert json.loads((run_dir / store.MANIFEST).read_text())["scenario"] == "synthetic"


@pytest.mark.parametrize("case", list(OUTS))
def test_nat_bench_refuses_a_bad_out_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    read_only: Callable[[Path], Path],
) -> None:
    from skycache.bench import natbench
    from skycache.runner import SystemRunner

    monkeypatch.setattr(natbench, "run", _never)
    monkeypatch.setattr(SystemRunner, "stream", _never)
    out, problem = OUTS[case](tmp_path, read_only)
    before = snapshot(tmp_path)
    for where in ("lab", "host"):
        result = skycache(capsys, "net", "nat-bench", "--where", where, "--out", out)
        assert_one_error(result, f"--out {out}", problem, code=2)
    assert touched(before, [tmp_path]) == []
