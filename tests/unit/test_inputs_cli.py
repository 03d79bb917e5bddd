"""The issue's examples through the real CLI, in-process: one ``skycache: error:`` line naming the
bad value, exit 2, no traceback, and no command run (the system runner is replaced by one that fails
the test if anything reaches it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from skycache import runner as runner_mod
from skycache.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"
SIM = ROOT / "scenarios" / "sim-boot-storm.toml"


@pytest.fixture(autouse=True)
def no_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"a command was run: {args}")

    monkeypatch.setattr(runner_mod.SystemRunner, "run", refuse)


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["skycache", *args])
    with pytest.raises(SystemExit) as exc:
        cli_main.main()
    code = exc.value.code
    captured = capsys.readouterr()
    return int(code) if isinstance(code, int) else 1, captured.err


PORT_5000 = "127.0.0.1:" + "9" * 5000


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["image", "create", "r/x", "--size", "9" * 50, "--dry-run"], "--size '99999"),
        (["image", "create", "r/x", "--size", "inf", "--dry-run"], "--size 'inf' is not a size"),
        (["image", "create", "r/x", "--size", "0.1K", "--dry-run"], "not a whole number of bytes"),
        (["attach", "r/x", "--portal", "127.0.0.1:²", "--dry-run"], "invalid port: port '²'"),
        (["attach", "r/x", "--portal", PORT_5000, "--dry-run"], "(a TCP port)"),
        (["attach", "r/x", "--portal", "127.0.0.1", "--timeout", "nan", "--dry-run"], "--timeout 'nan'"),
        (["cache", "flush", "skycache-wb-x", "--timeout", "inf"], "--timeout 'inf'"),
        (["net", "shape", "--rate", "1mbit", "--delay", "nan", "--dry-run"], "--delay 'nan'"),
        (["net", "shape", "gbe-2009", "--port", "9" * 5000, "--dry-run"], "--port '99999"),
        (["sim", "run", str(SIM), "-c", str(CAL), "--seed", "-1"], "--seed '-1' is out of range"),
        (["sim", "run", str(SIM), "-c", str(CAL), "--seed", "1" * 28], "(a 32-bit seed)"),
    ],
)
def test_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, err = run(monkeypatch, capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skycache: error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert len(lines[0]) < 400
