"""iptables-save parsing, isolation and NAT rule builders, namespace/address checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skycache.errors import InvalidInput, NotFound, NotOwned
from skycache.net import iptables, isolation, nat, netns

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
    spec = isolation.make_spec("vm1", "tap0", ["198.18.3.0/24", "198.18.4.0/24", "198.18.3.0/24"])
    assert spec.deny == ("198.18.3.0/24", "198.18.4.0/24")
    rules = isolation.chain_rules(spec)
    fwd, inp = rules["SKYCACHE-FWD-vm1"], rules["SKYCACHE-INP-vm1"]
    assert fwd[0] == ["-i", "tap0", "-d", "198.18.3.0/24", *isolation.REJECT]
    assert ["-o", "tap0", "-s", "198.18.4.0/24", "-j", "DROP"] in fwd
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
