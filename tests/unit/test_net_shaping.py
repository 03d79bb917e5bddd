"""Shaping: profiles, argv builders, the parsers of recorded lab output (tc -j) and the plans made from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeRunner

from skycache.errors import InvalidInput, NotOwned
from skycache.net import shaping
from skycache.plan import PlanFailed

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
    assert shaping.parse_filters((DATA / "tc-filter-shaped.json").read_text()) == [
        shaping.PortMatch("ip", "sport", 3260, "5ca:1"),
        shaping.PortMatch("ip", "dport", 3260, "5ca:2"),
        shaping.PortMatch("ipv6", "sport", 3260, "5ca:1"),
        shaping.PortMatch("ipv6", "dport", 3260, "5ca:2"),
    ]


def test_parse_recorded_default_lo() -> None:
    text = (DATA / "tc-qdisc-default-lo.json").read_text()
    assert shaping.parse_current(text) is None
    root = shaping.parse_root(json.loads(text))
    assert root is not None and root.default and root.kind == "noqueue"


def test_identify_named_profile() -> None:
    assert shaping.identify(50_000_000, 2.0, 0.0).name == "gbe-2009"
    assert shaping.identify(100_000_000, 1.0, 0.0).name == "custom"


# -- plans from recorded tc output -----------------------------------------------------------------

GBE = shaping.PROFILES["gbe-2009"]
INSTALL_GBE_3260 = [
    "tc qdisc add dev lo root handle 5ca: prio bands 3 priomap 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2",
    "tc qdisc add dev lo parent 5ca:1 handle 5cb: netem limit 10000 delay 2000us rate 50000000bit",
    "tc qdisc add dev lo parent 5ca:2 handle 5cc: netem limit 10000 delay 2000us rate 50000000bit",
    "tc filter add dev lo parent 5ca: protocol ip prio 1 u32 match ip sport 3260 0xffff flowid 5ca:1",
    "tc filter add dev lo parent 5ca: protocol ip prio 2 u32 match ip dport 3260 0xffff flowid 5ca:2",
    "tc filter add dev lo parent 5ca: protocol ipv6 prio 3 u32 match ip6 sport 3260 0xffff flowid 5ca:1",
    "tc filter add dev lo parent 5ca: protocol ipv6 prio 4 u32 match ip6 dport 3260 0xffff flowid 5ca:2",
]
DEL_ROOT = "tc qdisc del dev lo root handle 5ca:"


def tc(qdiscs: str, filters: str = "tc-filter-gbe-2009.json") -> FakeRunner:
    """A host whose ``tc -j`` shows these recorded outputs (file names in tests/unit/data/net)."""
    return (
        FakeRunner()
        .reply("tc", "-j", "qdisc", "show", stdout=(DATA / qdiscs).read_text())
        .reply("tc", "-j", "filter", "show", stdout=(DATA / filters).read_text() if filters else "")
    )


def test_shape_on_the_default_root_plans_the_whole_tree_and_runs_nothing() -> None:
    fake = tc("tc-qdisc-default-lo.json", "")
    plan = shaping.plan_shape(fake, GBE, "lo", 3260)
    assert plan.commands() == INSTALL_GBE_3260
    assert fake.ran() == [] and fake.ran("query") == ["tc -j qdisc show dev lo"]
    # Only the root's action has an undo: deleting the root takes its netems and filters along.
    assert [[c.render() for c in a.undo] for a in plan.actions] == [[DEL_ROOT], [], [], []]
    plan.apply(fake)
    assert fake.ran() == INSTALL_GBE_3260


def test_shape_with_the_recorded_tree_installed_is_an_empty_plan() -> None:
    fake = tc("tc-qdisc-gbe-2009.json")
    plan = shaping.plan_shape(fake, GBE, "lo", 3260)
    assert plan.actions == [] and plan.describe()[-1] == "  (nothing to do)"
    shaping.apply(fake, GBE, "lo", 3260)
    assert fake.ran() == []
    assert shaping.current(fake, "lo") == GBE


def test_another_profile_or_port_replaces_the_tree() -> None:
    fake = tc("tc-qdisc-gbe-2009.json")
    ten = shaping.plan_shape(fake, shaping.PROFILES["10gbe"], "lo", 3260).commands()
    assert ten[0] == DEL_ROOT and len(ten) == 8
    assert (
        ten[2]
        == "tc qdisc add dev lo parent 5ca:1 handle 5cb: netem limit 10000 delay 1000us rate 500000000bit"
    )
    other_port = shaping.plan_shape(fake, GBE, "lo", 3261).commands()
    assert other_port == [DEL_ROOT, *[c.replace(" 3260 ", " 3261 ") for c in INSTALL_GBE_3260]]


def test_an_incomplete_or_older_tree_is_replaced() -> None:
    # What a run killed after its first filter leaves: the qdiscs and one IPv4 filter.
    filters = json.loads((DATA / "tc-filter-gbe-2009.json").read_text())[:3]
    fake = tc("tc-qdisc-gbe-2009.json").reply("tc", "-j", "filter", "show", stdout=json.dumps(filters))
    assert shaping.plan_shape(fake, GBE, "lo", 3260).commands() == [DEL_ROOT, *INSTALL_GBE_3260]
    # An older layout (netem limit 1000; the loss on one band only) is not this profile's tree.
    older = tc("tc-qdisc-shaped.json", "tc-filter-shaped.json")
    prof = shaping.ShapingProfile("custom", 100_000_000, 1.0, 0.5)
    assert shaping.current(older) == prof
    assert shaping.plan_shape(older, prof, "lo", 3260).commands()[0] == DEL_ROOT


def test_foreign_root_refused_and_nothing_runs() -> None:
    foreign = tc("tc-qdisc-foreign-prio.json", "")
    with pytest.raises(NotOwned, match=r"root qdisc of lo \(prio 1:\) was not installed by skycache"):
        shaping.plan_shape(foreign, GBE)
    with pytest.raises(NotOwned, match="prio 1:"):
        shaping.plan_unshape(foreign)
    with pytest.raises(NotOwned):
        shaping.apply(foreign, shaping.PROFILES["none"])
    assert foreign.ran() == []


def test_unshape_plans_the_root_removal_or_nothing() -> None:
    assert shaping.plan_unshape(tc("tc-qdisc-gbe-2009.json")).commands() == [DEL_ROOT]
    assert shaping.plan_shape(tc("tc-qdisc-gbe-2009.json"), shaping.PROFILES["none"]).commands() == [DEL_ROOT]
    fake = tc("tc-qdisc-default-lo.json", "")
    assert shaping.plan_unshape(fake).actions == []
    shaping.remove(fake)
    assert fake.ran() == []


def test_plans_inside_a_namespace_run_there() -> None:
    fake = tc("tc-qdisc-default-lo.json", "")
    plan = shaping.plan_shape(fake, GBE, "lo", 3260, ns="skycache-wk")
    assert plan.commands() == [f"ip netns exec skycache-wk {c}" for c in INSTALL_GBE_3260]
    assert fake.ran("query") == ["ip netns exec skycache-wk tc -j qdisc show dev lo"]
    assert plan.actions[0].undo[0].render() == f"ip netns exec skycache-wk {DEL_ROOT}"


def test_a_failing_filter_rolls_the_whole_tree_back() -> None:
    fake = tc("tc-qdisc-default-lo.json", "").reply(
        "tc", "filter", "add", stderr="RTNETLINK answers: Invalid argument", rc=2
    )
    with pytest.raises(PlanFailed, match="Invalid argument"):
        shaping.apply(fake, GBE, "lo", 3260)
    # The root, both netems and the first filter ran; then the root went, and with it everything.
    assert fake.ran() == [*INSTALL_GBE_3260[:4], DEL_ROOT]


def test_a_failing_root_leaves_nothing_to_undo() -> None:
    fake = tc("tc-qdisc-gbe-2009.json").reply("tc", "qdisc", "add", stderr="RTNETLINK answers: busy", rc=2)
    with pytest.raises(PlanFailed):
        shaping.apply(fake, shaping.PROFILES["10gbe"], "lo", 3260)
    # The old tree was removed; the new root failed first thing: no undo of a step that never ran.
    assert fake.ran() == [DEL_ROOT, INSTALL_GBE_3260[0]]  # the root line is the same for every profile


def test_bad_dev_and_port_are_refused_before_any_command() -> None:
    fake = FakeRunner()
    with pytest.raises(InvalidInput):
        shaping.apply(fake, GBE, "lo; rm", 3260)
    with pytest.raises(InvalidInput, match="70000"):
        shaping.apply(fake, GBE, "lo", 70000)
    assert fake.calls == []
