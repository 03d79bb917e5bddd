"""``skycache net``: bad input gives one line naming the bad value, non-zero exit, nothing changed;
``--dry-run`` prints the plan the real run executes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fakes import FakeRunner

from skycache.cli import main as cli_main
from skycache.cli import net as cli_net
from skycache.net import iptables, shaping

DATA = Path(__file__).parent / "data" / "net"


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
        (["shape", "gbe-2009", "--port", "0"], "--port '0'"),
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


def _out(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stdout of ``skycache net ARGS``."""
    monkeypatch.setattr(sys, "argv", ["skycache", "net", *args])
    with pytest.raises(SystemExit) as exc:
        cli_main.main()
    return int(exc.value.code or 0), capsys.readouterr().out


def test_dry_run_prints_the_plan_and_the_real_run_executes_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    default_lo = (DATA / "tc-qdisc-default-lo.json").read_text()
    fake = FakeRunner().reply("tc", "-j", "qdisc", "show", stdout=default_lo)
    monkeypatch.setattr(cli_net, "cli_runner", lambda: fake)
    plan = shaping.plan_shape(FakeRunner().reply("tc", stdout=default_lo), shaping.PROFILES["gbe-2009"])
    code, out = _out(monkeypatch, capsys, "shape", "gbe-2009", "--dry-run")
    assert code == 0 and out.splitlines() == plan.describe() and fake.ran() == []
    code, out = _out(monkeypatch, capsys, "shape", "gbe-2009")
    assert code == 0 and fake.ran() == plan.commands() and out.startswith("shaped TCP port 3260 on lo")


def test_isolate_dry_run_lists_the_ruleset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRunner(files={f"/sys/module/{m}/refcnt": "1" for m in iptables.MODULES})
    monkeypatch.setattr(cli_net, "cli_runner", lambda: fake)
    code, out = _out(monkeypatch, capsys, "isolate", "tap0", "--deny", "198.18.3.0/24", "--dry-run")
    assert code == 0 and fake.ran() == []
    assert out.startswith("plan: isolate tap0 (interface tap0)\n")
    rule = "-A SKYCACHE-FWD-tap0 -d 198.18.3.0/24 -i tap0 -j REJECT --reject-with icmp-admin-prohibited"
    assert f"\n         {rule}\n" in out
    jump = (
        "iptables -w -t filter -I INPUT 1 -i tap0 -m comment --comment skycache:iso:tap0 -j SKYCACHE-INP-tap0"
    )
    assert f"\n       $ {jump}\n" in out
