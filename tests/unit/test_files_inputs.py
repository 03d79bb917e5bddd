"""Files a user hands in (issue 18, "Files"): every bad bench scenario, suite, sim scenario,
calibration and SWF trace ends in one ``skycache: error:`` line naming the path, a non-zero exit, no
change on disk, and never blocks (a FIFO)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from boundary import assert_one_error, deadline, skycache, snapshot, touched

from skycache import files
from skycache.errors import InvalidInput

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _directory(p: Path) -> str:
    p.mkdir()
    return "is a directory"


def _binary(p: Path) -> str:
    p.write_bytes(bytes(range(256)))
    return "holds a NUL byte"


def _latin1(p: Path) -> str:
    p.write_bytes('name = "café"\n'.encode("latin-1"))
    return "is not UTF-8 text (byte 0xe9"


def _fifo(p: Path) -> str:
    os.mkfifo(p)
    return "is a FIFO"


def _loop(p: Path) -> str:
    p.symlink_to(p)
    return "symlink loop"


def _nul(p: Path) -> str:
    p.write_bytes(b'name = "a\x00b"\n')
    return "holds a NUL byte at offset 9"


def _deep(p: Path) -> str:
    p.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    return "nested too deeply"


def _huge(p: Path) -> str:
    with p.open("wb") as f:  # sparse: the size is refused from fstat, nothing is read
        f.truncate(files.MAX_TEXT_BYTES + 1)
    return "is too large"


def _proc(p: Path) -> str:
    p.symlink_to("/proc/self/mem")
    return "is under /proc or /sys"


def _device(p: Path) -> str:
    p.symlink_to("/dev/zero")
    return "is a device"


def _missing(p: Path) -> str:
    return "not found"


BAD_FILES: dict[str, Callable[[Path], str]] = {
    "directory": _directory,
    "binary": _binary,
    "latin-1": _latin1,
    "fifo": _fifo,
    "symlink loop": _loop,
    "embedded NUL": _nul,
    "deep nesting": _deep,
    "over-large": _huge,
    "/proc/self/mem": _proc,
    "device": _device,
    "missing": _missing,
}
# The SWF reader takes text, not TOML: nesting is not its concern; its bound is larger.
SWF_CASES = [k for k in BAD_FILES if k not in ("deep nesting", "over-large")]


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_the_reader_refuses_with_one_line_naming_the_path(tmp_path: Path, case: str) -> None:
    p = tmp_path / "bad.toml"
    problem = BAD_FILES[case](p)
    with deadline(10), pytest.raises(InvalidInput) as err:
        files.load_toml(p, what="scenario file")
    message = str(err.value)
    assert message.startswith(f"{p}: scenario file ") and problem in message
    assert "\n" not in message


def test_a_path_with_a_newline_is_shown_quoted_on_one_line(tmp_path: Path) -> None:
    p = tmp_path / "a\nb.toml"
    with pytest.raises(InvalidInput) as err:
        files.read_text(p, what="scenario file")
    assert "\n" not in str(err.value) and repr(str(p)) in str(err.value)


def test_a_nul_in_the_path_is_refused() -> None:
    with pytest.raises(InvalidInput, match="path contains a NUL byte"):
        files.read_text("a\0b", what="scenario file")


def test_the_reader_stops_one_byte_after_the_bound(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("x" * 11)
    assert files.read_text(p, what="trace", max_bytes=11) == "x" * 11
    with pytest.raises(InvalidInput, match=r"too large \(11 bytes; at most 10\)"):
        files.read_text(p, what="trace", max_bytes=10)


def test_good_text_and_toml_are_read(tmp_path: Path) -> None:
    p = tmp_path / "ok.toml"
    p.write_text('name = "café"\n[a]\nb = [[1], [2]]\n', encoding="utf-8")
    assert files.load_toml(p, what="scenario file") == {"name": "café", "a": {"b": [[1], [2]]}}


def test_a_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("a = \n")
    with pytest.raises(InvalidInput) as err:
        files.load_toml(p, what="scenario file")
    assert "is not valid TOML: " in str(err.value) and "\n" not in str(err.value)


# -- through the command: bench scenarios and suites, sim scenarios, calibrations, traces ------------


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("verb", [("suite", "validate"), ("suite", "show"), ("suite", "list", "--json")])
def test_suite_verbs_refuse_a_bad_scenario_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, verb: tuple[str, ...]
) -> None:
    p = tmp_path / "bad.toml"
    problem = BAD_FILES[case](p)
    if case == "directory" and verb[1] != "show":  # these verbs take directories of scenarios
        problem = "no scenario files in"
    before = snapshot(tmp_path)
    result = skycache(capsys, *verb, p)
    assert touched(before, [tmp_path]) == []
    if (
        verb[1] == "list" and case != "directory"
    ):  # a listing reports each file's error in its row, and succeeds
        assert result.code == 0 and problem in result.out and "Traceback" not in result.err
        return
    assert_one_error(result, str(p), problem, code=2)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bench_run_refuses_a_bad_scenario_before_anything_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skycache.bench import cli as bench_cli
    from skycache.bench import orchestrate

    def never(*args: object, **kwargs: object) -> int:
        raise AssertionError("the run started")

    monkeypatch.setattr(bench_cli, "_run_in_lab", never)
    monkeypatch.setattr(orchestrate, "run_scenario", never)
    p = tmp_path / "bad.toml"
    problem = BAD_FILES[case](p)
    before = snapshot(tmp_path)
    result = skycache(capsys, "bench", "run", p, "--out", tmp_path / "results", "--where", "host")
    assert_one_error(result, str(p), problem, code=2)
    assert touched(before, [tmp_path]) == []


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_sim_check_refuses_a_bad_scenario_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    p = tmp_path / "sim-bad.toml"
    problem = BAD_FILES[case](p)
    before = snapshot(tmp_path)
    assert_one_error(skycache(capsys, "sim", "check", p), str(p), problem, code=2)
    assert touched(before, [tmp_path]) == []


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_sim_check_refuses_a_bad_calibration_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    p = tmp_path / "cal.toml"
    problem = BAD_FILES[case](p)
    before = snapshot(tmp_path)
    result = skycache(capsys, "sim", "check", SCENARIOS / "sim-nat.toml", "--calibration", p)
    assert_one_error(result, str(p), "calibration file", problem, code=2)
    assert touched(before, [tmp_path]) == []


@pytest.mark.parametrize("case", SWF_CASES)
def test_sim_check_refuses_a_bad_swf_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    scenario = tmp_path / "sim-swf-trace.toml"
    shutil.copy(SCENARIOS / "sim-swf-trace.toml", scenario)
    shutil.copy(SCENARIOS / "sim-calibration-example.toml", tmp_path)
    trace = tmp_path / "sim-sample.swf"
    problem = BAD_FILES[case](trace)
    before = snapshot(tmp_path)
    result = skycache(capsys, "sim", "check", scenario)
    assert_one_error(result, "sim-sample.swf", problem, code=2)
    assert touched(before, [tmp_path]) == []


def test_the_good_swf_scenario_passes_the_same_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("sim-swf-trace.toml", "sim-calibration-example.toml", "sim-sample.swf"):
        shutil.copy(SCENARIOS / name, tmp_path)
    result = skycache(capsys, "sim", "check", tmp_path / "sim-swf-trace.toml")
    assert result.code == 0 and result.out.startswith("ok: swf-trace"), result


@pytest.mark.parametrize("case", ["binary", "latin-1", "fifo", "embedded NUL", "/proc/self/mem", "device"])
def test_a_bad_fio_job_file_is_refused_before_the_run_directory_exists(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes import FakeRunner

    from skycache.bench import orchestrate, scenario

    job = tmp_path / "job.fio"
    job.write_text("[mine]\nrw=randread\nbs=4k\n")
    text = (SCENARIOS / "quickstart.toml").read_text()
    sc = scenario.load(SCENARIOS / "quickstart.toml")
    custom = sc.model.workloads[0].model_copy(update={"rw": None, "job_file": "job.fio"})
    sc = dataclasses.replace(
        sc, path=tmp_path / "s.toml", model=sc.model.model_copy(update={"workloads": [custom]})
    )
    (tmp_path / "s.toml").write_text(text)
    job.unlink()
    problem = BAD_FILES[case](job)
    results = tmp_path / "results"
    orch = orchestrate.Orchestrator(sc, orchestrate.RunOptions(results=results, where="host"), FakeRunner(),
                                    orchestrate.NullReporter())  # fmt: skip
    with deadline(10), pytest.raises(InvalidInput) as err:
        orch.run()
    assert f"{job}: fio job file" in str(err.value) and problem in str(err.value)
    assert not results.exists()
