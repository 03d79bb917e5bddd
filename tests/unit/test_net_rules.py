"""iptables-save parsing, isolation and NAT rule builders and plans (from recorded iptables-save
output), namespace plans and address checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeRunner

from skycache.errors import InvalidInput, NotFound, NotOwned
from skycache.net import iptables, isolation, nat, netns
from skycache.plan import Command, PlanFailed

DATA = Path(__file__).parent / "data" / "net"


def test_parse_recorded_iptables_save() -> None:
    rs = iptables.parse_save((DATA / "iptables-save-wk.txt").read_text())
    assert rs.has_chain("filter", "FORWARD") and rs.has_chain("nat", "SKYCACHE-NAT")
    assert rs.owned_chains("filter") == ["SKYCACHE-FWD-x"]
    (jump,) = rs.owned_jumps("filter")
    assert jump.chain == "FORWARD" and jump.comment == "skycache:iso:x" and jump.target == "SKYCACHE-FWD-x"
    assert jump.spec == (
        "-i",
        "skx-wkv",
        "-m",
        "comment",
        "--comment",
        "skycache:iso:x",
        "-j",
        "SKYCACHE-FWD-x",
    )
    assert [r.spec for r in rs.rules_in("nat", "SKYCACHE-NAT")] == [("-j", "MASQUERADE")]


def test_unmarked_jumps_are_not_ours() -> None:
    text = """*filter
:FORWARD ACCEPT [0:0]
:SKYCACHE-FWD-a - [0:0]
-A FORWARD -i tap0 -j SKYCACHE-FWD-a
-A FORWARD -i tap0 -m comment --comment "skycache:iso:a" -j ACCEPT
-A FORWARD -i tap0 -m comment --comment "site rule" -j SKYCACHE-FWD-a
COMMIT
"""
    assert iptables.parse_save(text).owned_jumps("filter") == []


def test_restore_block_declares_only_owned_chains() -> None:
    text = iptables.restore_block("filter", {"SKYCACHE-FWD-a": [["-d", "198.18.3.0/24", "-j", "DROP"]]})
    assert text == "*filter\n:SKYCACHE-FWD-a - [0:0]\n-A SKYCACHE-FWD-a -d 198.18.3.0/24 -j DROP\nCOMMIT\n"
    with pytest.raises(InvalidInput):
        iptables.restore_block("filter", {"FORWARD": []})
    with pytest.raises(InvalidInput):
        iptables.check_chain("SKYCACHE-" + "x" * 30)


def test_isolation_rules() -> None:
    spec = isolation.make_spec(
        "vm1", "tap0", ["198.18.3.0/24", "198.18.4.0/24", "198.18.3.7/24", "198.18.5.1"]
    )
    assert spec.deny == ("198.18.3.0/24", "198.18.4.0/24", "198.18.5.1/32")  # as iptables-save prints
    rules = isolation.chain_rules(spec)
    fwd, inp = rules["SKYCACHE-FWD-vm1"], rules["SKYCACHE-INP-vm1"]
    assert fwd[0] == ["-d", "198.18.3.0/24", "-i", "tap0", *isolation.REJECT]  # iptables-save's order
    assert ["-s", "198.18.4.0/24", "-o", "tap0", "-j", "DROP"] in fwd
    assert fwd[-2] == ["-i", "tap0", "-j", "ACCEPT"]  # egress only after every deny
    assert inp[-1] == isolation.REJECT and not any("67" in r for r in inp)
    jumps = isolation.jump_rules(spec)
    assert [(j.chain, j.spec[0], j.target, j.comment) for j in jumps] == [
        ("FORWARD", "-i", "SKYCACHE-FWD-vm1", "skycache:iso:vm1"),
        ("FORWARD", "-o", "SKYCACHE-FWD-vm1", "skycache:iso:vm1"),
        ("INPUT", "-i", "SKYCACHE-INP-vm1", "skycache:iso:vm1"),
    ]


def test_isolation_no_egress_and_dhcp_dns() -> None:
    spec = isolation.make_spec("vm1", "tap0", [], allow_egress=False, allow_dhcp_dns=True)
    rules = isolation.chain_rules(spec)
    assert rules["SKYCACHE-FWD-vm1"] == [["-i", "tap0", *isolation.REJECT]]
    inp = rules["SKYCACHE-INP-vm1"]
    assert ["-p", "udp", "-m", "udp", "--dport", "67", "-j", "ACCEPT"] in inp
    assert ["-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "ACCEPT"] in inp


def test_isolation_input_errors() -> None:
    with pytest.raises(InvalidInput, match="--deny"):
        isolation.make_spec("vm1", "tap0", [])
    with pytest.raises(InvalidInput, match=r"'10\.0\.0\.0/33'"):
        isolation.make_spec("vm1", "tap0", ["10.0.0.0/33"])
    with pytest.raises(InvalidInput, match="too long"):
        isolation.key_for("skycache-a-very-long-vm-name")
    assert isolation.key_for("skycache-vm1") == "vm1" and isolation.key_for("tap0") == "tap0"


def test_peer_interface_from_recorded_veth_ends() -> None:
    inside = json.loads((DATA / "ip-j-link-vm.json").read_text())
    worker = json.loads((DATA / "ip-s-j-link-wk.json").read_text())
    assert isolation.peer_interface(inside, worker, "skycache-x-vm") == "skx-wkv"
    with pytest.raises(NotFound):
        isolation.peer_interface(inside[:1], worker, "skycache-x-vm")


def test_nat_jump() -> None:
    rule = nat.jump_rule("nb", "wk-out")
    assert rule.table == "nat" and rule.chain == "POSTROUTING" and rule.target == "SKYCACHE-NAT-nb"
    assert rule.comment == "skycache:nat:nb"


@pytest.mark.parametrize("addr", ["198.18.0.1/24", "198.19.255.254", "127.0.0.1"])
def test_addresses_allowed(addr: str) -> None:
    assert netns.check_address(addr) == addr


@pytest.mark.parametrize("addr", ["10.0.0.1/24", "8.8.8.8", "198.20.0.1", "127.0.0.2", "::1", "nonsense"])
def test_addresses_refused(addr: str) -> None:
    with pytest.raises(InvalidInput, match="address"):
        netns.check_address(addr)


def test_namespace_names() -> None:
    assert netns.check_ns("skycache-nb-vm") == "skycache-nb-vm"
    with pytest.raises(NotOwned):
        netns.check_ns("blue")
    with pytest.raises(InvalidInput):
        netns.check_ns("skycache-Bad Name")


def test_topology_plan_creates_veth_inside_namespaces() -> None:
    topo = netns.Topology(
        namespaces=("skycache-a", "skycache-b"),
        links=(netns.Link("skycache-a", "a0", "198.18.1.1/24", "skycache-b", "b0", "198.18.1.2/24"),),
        routes=(netns.Route("skycache-b", "default", "198.18.1.1"),),
        forwarders=("skycache-a",),
    )
    lines = netns.build_plan(topo).describe()
    assert "       $ ip link add a0 netns skycache-a type veth peer name b0 netns skycache-b" in lines
    assert "       $ ip -n skycache-b route add default via 198.18.1.1" in lines
    assert any("net.ipv4.ip_forward=1" in ln for ln in lines)
    plan = netns.build_plan(topo)
    assert plan.actions[0].undo is not None  # namespace creation is undone on failure
    bad = netns.Topology(
        namespaces=("skycache-a",),
        links=(netns.Link("skycache-a", "a0", "10.1.1.1/24", "skycache-a", "a1", "198.18.1.2/24"),),
    )
    with pytest.raises(InvalidInput, match=r"10\.1\.1\.1"):
        netns.build_plan(bad)


def test_parse_netns_list() -> None:
    assert netns.parse_netns_list("") == []
    assert netns.parse_netns_list('[{"name":"skycache-a","id":0},{"name":"x"}]') == ["skycache-a", "x"]


# -- plans from recorded iptables-save output ------------------------------------------------------

WK = "skycache-rec-wk"
X = f"ip netns exec {WK} iptables -w -t"
MARK = "-m comment --comment"
REC_VM = isolation.make_spec("rec-vm", "wk-vm", ["198.18.12.0/24", "198.18.13.5"], allow_egress=True)
WK_OUT = isolation.make_spec("wk-out", "wk-out", [], allow_egress=False, allow_dhcp_dns=True)
JUMPS_REC_VM = [
    f"{X} filter -I FORWARD 1 -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
    f"{X} filter -I FORWARD 1 -o wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
    f"{X} filter -I INPUT 1 -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-INP-rec-vm",
]


def table(recorded: str, name: str) -> str:
    """One table of a recorded ``iptables-save`` (what ``iptables-save -t NAME`` prints)."""
    text = (DATA / recorded).read_text()
    start = text.index(f"*{name}\n")
    return text[start : text.index("COMMIT\n", start) + len("COMMIT\n")]


def owned_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("-A SKYCACHE-")]


def worker(recorded: str | None, *, loaded: bool = True, forwarding: str = "1") -> FakeRunner:
    """The worker namespace as recorded (None: iptables-save prints nothing in a fresh one)."""
    fake = FakeRunner(files={"/proc/sys/kernel/osrelease": "6.1.0-57-amd64\n"})
    if loaded:
        fake.files.update({f"/sys/module/{m}/refcnt": "1\n" for m in iptables.MODULES})
    for name in ("filter", "nat"):
        fake.reply(
            "ip",
            "netns",
            "exec",
            WK,
            "iptables-save",
            "-t",
            name,
            stdout=table(recorded, name) if recorded else "",
        )
    fake.reply("ip", "netns", "exec", WK, "sysctl", "-n", "net.ipv4.ip_forward", stdout=forwarding + "\n")
    return fake


def test_isolate_plans_the_recorded_chains_and_jumps() -> None:
    fake = worker("iptables-save-site.txt")
    plan = isolation.plan_isolate(fake, REC_VM, WK)
    assert plan.commands() == [f"ip netns exec {WK} iptables-restore --noflush", *JUMPS_REC_VM]
    assert fake.ran() == []
    # The ruleset handed to iptables-restore is, rule for rule, what iptables-save printed after
    # the real isolate: that is why the same isolation again plans nothing.
    restore = plan.actions[0].do[0]
    assert isinstance(restore, Command) and isinstance(restore.stdin, str)
    assert owned_lines(restore.stdin) == owned_lines(table("iptables-save-isolated.txt", "filter"))
    assert ":SKYCACHE-FWD-rec-vm - [0:0]" in restore.stdin and "SITE-RULES" not in restore.stdin
    # The dry run shows the ruleset (a here-document), not just "< (stdin)".
    listing = "\n".join(plan.describe())
    assert "iptables-restore --noflush <<'EOF'" in listing and "-A SKYCACHE-INP-rec-vm -j REJECT" in listing
    # Undo: the new chains go, each jump is deleted again.
    assert [c.render() for c in plan.actions[0].undo] == [
        f"{X} filter -F SKYCACHE-FWD-rec-vm", f"{X} filter -X SKYCACHE-FWD-rec-vm",
        f"{X} filter -F SKYCACHE-INP-rec-vm", f"{X} filter -X SKYCACHE-INP-rec-vm",
    ]  # fmt: skip
    assert plan.actions[1].undo[0].render() == JUMPS_REC_VM[0].replace("-I FORWARD 1", "-D FORWARD")
    isolation.isolate(fake, REC_VM, WK)
    assert fake.ran() == plan.commands()


def test_isolate_again_is_an_empty_plan() -> None:
    assert isolation.plan_isolate(worker("iptables-save-isolated.txt"), REC_VM, WK).actions == []
    two = worker("iptables-save-isolated-two.txt")
    assert isolation.plan_isolate(two, REC_VM, WK).actions == []
    assert isolation.plan_isolate(two, WK_OUT, WK).actions == []
    isolation.isolate(two, WK_OUT, WK)
    assert two.ran() == []


def test_modules_are_loaded_only_when_missing_and_only_with_work_to_do() -> None:
    fresh = worker(None, loaded=False)
    fresh.files["/sys/module/nf_tables/refcnt"] = "3\n"
    fresh.files["/lib/modules/6.1.0-57-amd64/modules.builtin"] = "kernel/net/netfilter/xt_comment.ko\n"
    plan = isolation.plan_isolate(fresh, REC_VM, WK)
    want = [m for m in iptables.MODULES if m not in ("nf_tables", "xt_comment")]
    assert plan.commands()[0] == "modprobe -q -a " + " ".join(want)
    assert plan.commands()[1:] == [f"ip netns exec {WK} iptables-restore --noflush", *JUMPS_REC_VM]
    # Already isolated: nothing to do, so no modprobe either.
    assert (
        isolation.plan_isolate(worker("iptables-save-isolated.txt", loaded=False), REC_VM, WK).actions == []
    )


def test_changed_deny_list_redefines_the_chains_only_and_undo_restores_them() -> None:
    fake = worker("iptables-save-isolated.txt")
    spec = isolation.make_spec("rec-vm", "wk-vm", ["198.18.12.0/24"], allow_egress=True)
    plan = isolation.plan_isolate(fake, spec, WK)
    assert plan.commands() == [f"ip netns exec {WK} iptables-restore --noflush"]
    (undo,) = plan.actions[0].undo
    assert isinstance(undo, Command) and isinstance(undo.stdin, str)
    assert owned_lines(undo.stdin) == owned_lines(table("iptables-save-isolated.txt", "filter"))


def test_new_interface_inserts_new_jumps_before_deleting_the_stale_ones() -> None:
    fake = worker("iptables-save-isolated.txt")
    spec = isolation.make_spec("rec-vm", "tap9", ["198.18.12.0/24", "198.18.13.5"], allow_egress=True)
    cmds = isolation.plan_isolate(fake, spec, WK).commands()
    assert cmds[0] == f"ip netns exec {WK} iptables-restore --noflush"
    assert cmds[1:4] == [j.replace("wk-vm", "tap9") for j in JUMPS_REC_VM]
    # Deleted in the form iptables-save printed them (its order: FORWARD -o before -i).
    assert cmds[4:] == [
        f"{X} filter -D INPUT -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-INP-rec-vm",
        f"{X} filter -D FORWARD -o wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
        f"{X} filter -D FORWARD -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
    ]


UNISOLATE_REC_VM = [
    f"{X} filter -D INPUT -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-INP-rec-vm",
    f"{X} filter -D FORWARD -o wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
    f"{X} filter -D FORWARD -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
    f"{X} filter -F SKYCACHE-FWD-rec-vm",
    f"{X} filter -X SKYCACHE-FWD-rec-vm",
    f"{X} filter -F SKYCACHE-INP-rec-vm",
    f"{X} filter -X SKYCACHE-INP-rec-vm",
]


def test_unisolate_removes_exactly_ours() -> None:
    fake = worker("iptables-save-isolated-two.txt")
    assert isolation.plan_unisolate(fake, "rec-vm", WK).commands() == UNISOLATE_REC_VM
    every = isolation.plan_unisolate(fake, None, WK).commands()
    assert len(every) == 6 + 4 * 2 and not [c for c in every if "SITE-RULES" in c or "198.18.99" in c]
    assert isolation.unisolate(fake, "rec-vm", WK) == ["SKYCACHE-FWD-rec-vm", "SKYCACHE-INP-rec-vm"]
    assert fake.ran() == UNISOLATE_REC_VM
    # Nothing of ours left: an empty plan, nothing removed.
    site = worker("iptables-save-site.txt")
    assert isolation.plan_unisolate(site, None, WK).actions == []
    assert isolation.unisolate(site, "rec-vm", WK) == [] and site.ran() == []


def test_unisolate_failing_midway_puts_the_isolation_back() -> None:
    # The chain cannot be deleted (say a site rule jumps to it, unmarked): everything is undone.
    fake = worker("iptables-save-isolated.txt").reply(
        "ip",
        "netns",
        "exec",
        WK,
        "iptables",
        "-w",
        "-t",
        "filter",
        "-X",
        stderr="iptables: Too many links.",
        rc=1,
    )
    with pytest.raises(PlanFailed, match="Too many links"):
        isolation.unisolate(fake, "rec-vm", WK)
    ran = fake.ran()
    assert ran[:5] == UNISOLATE_REC_VM[:5]
    # Undo, newest first: the flushed chain gets its rules back, then the three jumps return.
    assert ran[5:] == [
        f"ip netns exec {WK} iptables-restore --noflush",
        f"{X} filter -I FORWARD 1 -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
        f"{X} filter -I FORWARD 1 -o wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-FWD-rec-vm",
        f"{X} filter -I INPUT 1 -i wk-vm {MARK} skycache:iso:rec-vm -j SKYCACHE-INP-rec-vm",
    ]
    restored = fake.calls[[c.kind for c in fake.calls].index("run") + 5].stdin or ""
    fwd = [ln for ln in owned_lines(table("iptables-save-isolated.txt", "filter")) if "FWD-rec-vm" in ln]
    assert owned_lines(restored) == fwd


def test_planners_refuse_a_namespace_skycache_does_not_own() -> None:
    fake = FakeRunner()
    with pytest.raises(NotOwned, match="'blue'"):
        isolation.plan_isolate(fake, REC_VM, "blue")
    with pytest.raises(NotOwned):
        isolation.plan_unisolate(fake, None, "blue")
    with pytest.raises(NotOwned):
        nat.plan_enable(fake, "rec", "198.18.10.0/24", "wk-out", "blue")
    with pytest.raises(NotOwned):
        nat.plan_disable(fake, "rec", "blue")
    assert fake.calls == []


def test_nat_enable_is_planned_from_the_recorded_table() -> None:
    assert (
        nat.plan_enable(worker("iptables-save-site.txt"), "rec", "198.18.10.0/24", "wk-out", WK).actions == []
    )
    fresh = worker(None, forwarding="0")
    plan = nat.plan_enable(fresh, "rec", "198.18.10.0/24", "wk-out", WK)
    assert plan.commands() == [
        f"ip netns exec {WK} iptables-restore --noflush",
        f"{X} nat -I POSTROUTING 1 -o wk-out {MARK} skycache:nat:rec -j SKYCACHE-NAT-rec",
        f"ip netns exec {WK} sysctl -q -w net.ipv4.ip_forward=1",
    ]
    restore = plan.actions[0].do[0]
    assert isinstance(restore, Command) and isinstance(restore.stdin, str)
    assert owned_lines(restore.stdin) == owned_lines(table("iptables-save-site.txt", "nat"))
    assert plan.actions[-1].undo[0].render() == f"ip netns exec {WK} sysctl -q -w net.ipv4.ip_forward=0"
    nat.enable(fresh, "rec", "198.18.10.0/24", "wk-out", WK)
    assert fresh.ran() == plan.commands()


def test_nat_disable_removes_its_jump_and_chain() -> None:
    fake = worker("iptables-save-site.txt")
    assert nat.disable(fake, "rec", WK) is True
    assert fake.ran() == [
        f"{X} nat -D POSTROUTING -o wk-out {MARK} skycache:nat:rec -j SKYCACHE-NAT-rec",
        f"{X} nat -F SKYCACHE-NAT-rec",
        f"{X} nat -X SKYCACHE-NAT-rec",
    ]
    fresh = worker(None)
    assert nat.disable(fresh, "rec", WK) is False and fresh.ran() == []


def test_netns_plans_read_which_namespaces_exist() -> None:
    topo = netns.Topology(
        namespaces=("skycache-a", "skycache-b"),
        links=(netns.Link("skycache-a", "a0", "198.18.1.1/24", "skycache-b", "b0", "198.18.1.2/24"),),
    )
    fake = FakeRunner().reply(
        "ip", "-j", "netns", "list", stdout='[{"name":"skycache-b","id":1},{"name":"x"}]'
    )
    plan = netns.plan_build(fake, topo)
    # The stale namespace (a crashed run's) goes first; then the topology, as build_plan makes it.
    assert plan.commands() == ["ip netns del skycache-b", *netns.build_plan(topo).commands()]
    netns.teardown(fake, topo)
    assert fake.ran() == ["ip netns del skycache-b"]
    netns.delete(fake, "skycache-a")  # not there: nothing to do
    assert fake.ran() == ["ip netns del skycache-b"]
    with pytest.raises(NotOwned):
        netns.delete(fake, "x")


def test_an_isolation_name_with_dot_dot_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"'n0\.\.n0' holds '\.\.'"):
        isolation.check_key("n0..n0")
    assert isolation.check_key("vm.1") == "vm.1"


def test_an_interface_name_with_dot_dot_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"interface name 'n0\.\.n0' holds '\.\.'"):
        netns.check_dev("n0..n0")
    assert netns.check_dev("eth0.100") == "eth0.100"


def test_a_namespace_name_with_dot_dot_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"'skycache-n0\.\.n0' holds '\.\.'"):
        netns.check_ns("skycache-n0..n0")
