"""Shaping: profiles, argv builders and the parsers of recorded lab output (tc -j)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from skycache.errors import InvalidInput, NotOwned
from skycache.net import shaping
from skycache.runner import Arg, Completed, SystemRunner

DATA = Path(__file__).parent / "data" / "net"


def test_named_profiles_and_lab_scale() -> None:
    gbe = shaping.PROFILES["gbe-2009"]
    assert gbe.rate_bps == 1_000_000_000 // shaping.LAB_SCALE == 50_000_000
    assert gbe.delay_ms == pytest.approx(0.1 * shaping.LAB_SCALE)
    assert shaping.PROFILES["10gbe"].rate_bps == 500_000_000
    assert shaping.PROFILES["none"].is_noop()
    assert shaping.PROFILES["gbe-2009-native"].rate_bps == 10**9
    with pytest.raises(InvalidInput, match="'bogus'"):
        shaping.profile("bogus")


@pytest.mark.parametrize(
    ("text", "bps"),
    [("100mbit", 10**8), ("1gbit", 10**9), ("2.5Mbit", 2_500_000), ("64kbit", 64_000), ("10mbps", 10**7),
     ("5000000", 5_000_000)],
)  # fmt: skip
def test_parse_rate(text: str, bps: int) -> None:
    assert shaping.parse_rate(text) == bps


@pytest.mark.parametrize("text", ["fast", "", "-1mbit", "10", "1tbit", "nanmbit"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        shaping.parse_rate(text)


def test_custom_validates() -> None:
    assert shaping.custom("50mbit", 2.0, 1.0) == shaping.ShapingProfile("custom", 50_000_000, 2.0, 1.0)
    with pytest.raises(InvalidInput, match="delay"):
        shaping.custom(None, -1)
    with pytest.raises(InvalidInput, match="loss"):
        shaping.custom(None, 1, 100)


def test_apply_commands_match_port_both_directions() -> None:
    cmds = shaping.apply_commands(shaping.PROFILES["gbe-2009"], "lo", 3260)
    assert cmds[0][:9] == ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "5ca:", "prio"]
    assert cmds[0][-16:] == ["2"] * 16  # unmatched traffic to the third band, untouched
    netem = cmds[1]
    assert netem[netem.index("delay") + 1] == "2000us" and netem[netem.index("rate") + 1] == "50000000bit"
    assert "loss" not in netem
    filters = [c for c in cmds if c[1] == "filter"]
    assert [(c[c.index("match") + 2], c[-1]) for c in filters] == [
        ("sport", "5ca:1"), ("dport", "5ca:2"), ("sport", "5ca:1"), ("dport", "5ca:2")
    ]  # fmt: skip
    assert all(c[c.index("match") + 3 : c.index("match") + 5] == ["3260", "0xffff"] for c in filters)


def test_parse_recorded_shaped_qdisc() -> None:
    # Recorded: delay 1ms, rate 100mbit and 0.5% loss on the 5ca:1 band.
    prof = shaping.parse_current((DATA / "tc-qdisc-shaped.json").read_text())
    assert prof == shaping.ShapingProfile("custom", 100_000_000, 1.0, 0.5)
    assert shaping.parse_filter_port((DATA / "tc-filter-shaped.json").read_text()) == 3260


def test_parse_recorded_default_lo() -> None:
    text = (DATA / "tc-qdisc-default-lo.json").read_text()
    assert shaping.parse_current(text) is None
    root = shaping.parse_root(__import__("json").loads(text))
    assert root is not None and root.default and root.kind == "noqueue"


def test_identify_named_profile() -> None:
    assert shaping.identify(50_000_000, 2.0, 0.0).name == "gbe-2009"
    assert shaping.identify(100_000_000, 1.0, 0.0).name == "custom"


class FakeRunner(SystemRunner):
    """Answers tc queries from recorded output and records the changing commands."""

    def __init__(self, qdisc_json: str, filter_json: str = "[]") -> None:
        super().__init__()
        self.qdisc_json = qdisc_json
        self.filter_json = filter_json
        self.ran: list[list[str]] = []

    def query(self, argv: Sequence[Arg], **kw: object) -> Completed:
        words = [str(a) for a in argv]
        out = self.filter_json if "filter" in words else self.qdisc_json
        return Completed(tuple(words), 0, out, "")

    def run(self, argv: Sequence[Arg], **kw: object) -> Completed:
        self.ran.append([str(a) for a in argv])
        return Completed(tuple(self.ran[-1]), 0, "", "")


def test_apply_on_default_root_installs_and_same_profile_is_noop() -> None:
    fake = FakeRunner((DATA / "tc-qdisc-default-lo.json").read_text())
    shaping.apply(fake, shaping.PROFILES["gbe-2009"], "lo", 3260)
    assert fake.ran == shaping.apply_commands(shaping.PROFILES["gbe-2009"], "lo", 3260)
    installed = FakeRunner(
        (DATA / "tc-qdisc-shaped.json").read_text(), (DATA / "tc-filter-shaped.json").read_text()
    )
    shaping.apply(installed, shaping.ShapingProfile("x", 100_000_000, 1.0, 0.5), "lo", 3260)
    assert installed.ran == []
    # Same values, other port: replaced.
    shaping.apply(installed, shaping.ShapingProfile("x", 100_000_000, 1.0, 0.5), "lo", 3261)
    assert installed.ran[0] == ["tc", "qdisc", "del", "dev", "lo", "root", "handle", "5ca:"]


def test_foreign_root_refused() -> None:
    foreign = FakeRunner('[{"kind":"htb","handle":"1:","root":true,"options":{}}]')
    with pytest.raises(NotOwned, match="htb 1:"):
        shaping.apply(foreign, shaping.PROFILES["gbe-2009"])
    with pytest.raises(NotOwned):
        shaping.remove(foreign)
    assert foreign.ran == []


def test_bad_dev_and_port() -> None:
    fake = FakeRunner("[]")
    with pytest.raises(InvalidInput):
        shaping.apply(fake, shaping.PROFILES["gbe-2009"], "lo; rm", 3260)
    with pytest.raises(InvalidInput, match="70000"):
        shaping.apply(fake, shaping.PROFILES["gbe-2009"], "lo", 70000)
