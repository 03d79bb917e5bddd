"""Bench scenario numbers: finite, bounded, sizes exact; and a scenario of more fio runs than its
``max_runs`` (default 1000) refused by ``suite validate`` and ``bench run`` unless --yes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from skycache.bench import scenario
from skycache.cli import main as cli_main
from skycache.errors import InvalidInput

PROFILES = ("none", "gbe-2009", "10gbe")

BASE = """
name = "t"
repetitions = 2
{top}
[[stacks]]
name = "lvm-iscsi"
backend = "lvm"
transport = "iscsi"
{stack}
[[workloads]]
name = "randread"
rw = "randread"
{workload}
{tail}
"""


def body(top: str = "", stack: str = "", workload: str = "", tail: str = "") -> str:
    return BASE.format(top=top, stack=stack, workload=workload, tail=tail)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def refused(tmp_path: Path, text: str, needle: str) -> str:
    with pytest.raises(InvalidInput) as exc:
        scenario.load(write(tmp_path, text), profiles=PROFILES)
    msg = str(exc.value)
    assert "\n" not in msg and needle in msg, msg
    return msg


def factors(n_bs: int, n_depth: int) -> str:
    bs = ", ".join(f'"{4 * (i + 1)}k"' for i in range(n_bs))
    depth = ", ".join(str(i + 1) for i in range(n_depth))
    return f"[factors]\nbs = [{bs}]\niodepth = [{depth}]\n"


@pytest.mark.parametrize(
    ("parts", "needle"),
    [
        ({"top": "image_size = inf"}, "image_size inf is not a size"),
        ({"top": 'image_size = "inf"'}, "image_size 'inf' is not a size"),
        ({"top": 'image_size = "' + "9" * 50 + '"'}, "larger than the largest size"),
        ({"top": 'image_size = "0.1K"'}, "not a whole number of bytes"),
        ({"top": "seed = -1"}, "seed: -1: Input should be greater than or equal to 0"),
        ({"top": "seed = 1234567890123456789012345678"}, "less than or equal to 4294967295"),
        ({"stack": "repo_delay_ms = nan"}, "repo_delay_ms: nan: Input should be a finite number"),
        ({"workload": "runtime_s = nan"}, "runtime_s"),
        ({"workload": "runtime_s = inf"}, "runtime_s"),
        ({"workload": "ramp_s = nan"}, "ramp_s"),
        ({"workload": 'size = "1e400"'}, "size '1e400' is not a size"),
        ({"tail": "[factors]\niodepth = [100000]"}, "at most 4096"),
        ({"top": "max_runs = 0"}, "max_runs"),
    ],
)
def test_bad_numbers(tmp_path: Path, parts: dict[str, str], needle: str) -> None:
    refused(tmp_path, body(**parts), needle)


def test_three_million_runs_refused_at_load_quickly(tmp_path: Path) -> None:
    # 1,000 bs x 1,000 iodepth x 3 repetitions: bounded before the product is expanded.
    t0 = time.perf_counter()
    text = body(top="repetitions = 3", tail=factors(1000, 1000)).replace("repetitions = 2\n", "", 1)
    refused(tmp_path, text, "1,000,000 combinations x 3 repetitions is above the bound of 1,000,000")
    assert time.perf_counter() - t0 < 5


def test_max_runs_default_and_raised(tmp_path: Path) -> None:
    sc = scenario.load(write(tmp_path, body(tail=factors(30, 20))), profiles=PROFILES)  # 1,200 runs
    assert sc.runs == 1200
    with pytest.raises(
        InvalidInput, match=r"1,200 fio runs .* above max_runs = 1,000: pass --yes or set max_runs"
    ):
        scenario.check_runs(sc, yes=False)
    scenario.check_runs(sc, yes=True)
    raised = scenario.load(
        write(tmp_path, body(top="max_runs = 1200", tail=factors(30, 20))), profiles=PROFILES
    )
    scenario.check_runs(raised, yes=False)


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["skycache", *args])
    with pytest.raises(SystemExit) as exc:
        cli_main.main()
    code = exc.value.code
    out = capsys.readouterr()
    return int(code) if isinstance(code, int) else 1, out.out, out.err


def test_suite_validate_needs_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, body(tail=factors(30, 20)))
    code, _, err = run_cli(monkeypatch, capsys, "suite", "validate", str(p))
    assert code == 2 and err.count("\n") == 1 and "above max_runs = 1,000" in err, err
    code, out, err = run_cli(monkeypatch, capsys, "suite", "validate", str(p), "--yes")
    assert code == 0 and "1200 fio runs" in out, (out, err)


def test_bench_run_refuses_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, body(top='where = "host"', tail=factors(30, 20)))
    code, _, err = run_cli(monkeypatch, capsys, "bench", "run", str(p), "--out", str(tmp_path / "out"))
    assert code == 2 and "pass --yes or set max_runs" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
