"""``skycache net``: bad input gives one line naming the bad value, non-zero exit, nothing changed."""

from __future__ import annotations

import sys

import pytest

from skycache.cli import main as cli_main


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["skycache", "net", *args])
    with pytest.raises(SystemExit) as exc:
        cli_main.main()
    code = exc.value.code
    return int(code) if isinstance(code, int) else 1, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["shape", "bogus"], "unknown shaping profile 'bogus'"),
        (["shape", "--rate", "fast", "--delay", "1"], "rate 'fast'"),
        (["shape", "gbe-2009", "--rate", "1mbit"], "not both"),
        (["shape"], "give a PROFILE"),
        (["shape", "gbe-2009", "--port", "0"], "port 0"),
        (["isolate", "tap0", "--allow-egress"], "--deny"),
        (["isolate", "tap0", "--allow-egress", "--deny", "300.1.1.0/24"], "'300.1.1.0/24'"),
        (["isolate", "bad/name", "--deny", "198.18.3.0/24"], "'bad/name'"),
        (["unisolate"], "TARGET or --all"),
        (["nat-bench", "--repetitions", "0"], "--repetitions 0"),
        (["shape", "gbe-2009", "--netns", "blue"], "'blue'"),
    ],
)
def test_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, err = _run(monkeypatch, capsys, *args)
    assert code != 0
    assert err.startswith("skycache: error: ") and needle in err and err.count("\n") == 1
