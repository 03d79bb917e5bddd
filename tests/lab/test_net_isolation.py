"""Isolation proven by real TCP, UDP and ICMP attempts through the real kernel's netfilter.

Namespaces (198.18.0.0/15 only):
    vm   198.18.10.2 ---- worker 198.18.10.1 | 198.18.11.1 ---- out   198.18.11.2 (no route back: NAT)
                                  worker 198.18.12.1 ---- storage 198.18.12.2 (routes back directly)
                                  worker 198.18.13.1 ---- node2   198.18.13.2 (routes back directly)
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from _storage import sk_inproc

from skycache.net import iptables, isolation, measure, nat, netns
from skycache.net.netns import Link, Route, Topology, in_ns, python_argv
from skycache.runner import Runner

VM, WK, OUT, ST, ND = (f"skycache-ti-{n}" for n in ("vm", "wk", "out", "st", "nd"))
PORT = 7000
TOPO = Topology(
    namespaces=(VM, WK, OUT, ST, ND),
    links=(
        Link(VM, "vm0", "198.18.10.2/24", WK, "wk-vm", "198.18.10.1/24"),
        Link(WK, "wk-out", "198.18.11.1/24", OUT, "out0", "198.18.11.2/24"),
        Link(WK, "wk-st", "198.18.12.1/24", ST, "st0", "198.18.12.2/24"),
        Link(WK, "wk-nd", "198.18.13.1/24", ND, "nd0", "198.18.13.2/24"),
    ),
    routes=(
        Route(VM, "default", "198.18.10.1"),
        Route(ST, "198.18.10.0/24", "198.18.12.1"),
        Route(ND, "198.18.10.0/24", "198.18.13.1"),
    ),
    forwarders=(WK,),
)
OUTSIDE = "198.18.11.2"
DENIED = {"storage": "198.18.12.2", "node2": "198.18.13.2"}
NODE = {"node-vm-side": "198.18.10.1", "node-storage-side": "198.18.12.1"}
FOREIGN = """*filter
:SITE-RULES - [0:0]
-A INPUT -j SITE-RULES
-A FORWARD -s 198.18.99.0/24 -j ACCEPT
-A SITE-RULES -p tcp -m tcp --dport 2222 -j ACCEPT
COMMIT
*nat
-A POSTROUTING -s 198.18.98.0/24 -o wk-out -j MASQUERADE
COMMIT
"""


def _targets(addr: str) -> list[str]:
    return [f"tcp:{addr}:{PORT}", f"udp:{addr}:{PORT}", f"icmp:{addr}"]


def _rules(runner: Runner) -> list[str]:
    """iptables-save of the worker without comments and counters, for exact comparison."""
    text = runner.query(in_ns(WK, ["iptables-save"])).stdout
    return [re.sub(r" \[\d+:\d+\]$", "", ln) for ln in text.splitlines() if ln and not ln.startswith("#")]


def _skycache(runner: Runner, *args: str) -> str:
    """``skycache net ARGS`` in this process (the CLI's app and error handling; a fresh CLI process
    costs many seconds under TCG)."""
    code, out, err = sk_inproc("net", *args)
    assert code == 0, (args, out, err)
    return out


@pytest.fixture
def lab_net(runner: Runner) -> Iterator[list[measure.Background]]:
    iptables.load_modules(runner)
    netns.build(runner, TOPO)
    servers = []
    addrs = ((OUT, OUTSIDE), (ST, DENIED["storage"]), (ND, DENIED["node2"]),
             (WK, NODE["node-vm-side"]), (WK, NODE["node-storage-side"]))  # fmt: skip
    try:
        nat.enable(runner, "ti", "198.18.10.0/24", "wk-out", ns=WK)
        runner.run(in_ns(WK, ["iptables-restore", "--noflush"]), stdin=FOREIGN)
        for ns, addr in addrs:
            argv = python_argv(
                "skycache.net.connload", "serve", "--bind", addr, "--port", str(PORT), "--seconds", "1800"
            )
            servers.append(measure.Background(runner, in_ns(ns, argv), timeout_s=1860))
        for (ns, addr), server in zip(addrs, servers, strict=True):
            measure.wait_listening(runner, ns, PORT, addr=addr, server=server)
        yield servers
    finally:
        isolation.unisolate(runner, None, WK)
        for ns, addr in addrs[: len(servers)]:
            measure.stop_server(runner, ns, addr, PORT)
        netns.teardown(runner, TOPO)  # the servers' sockets go with their namespaces
        for s in servers:
            s.join(60)


def test_isolation_by_real_attempts(runner: Runner, lab_net: list[measure.Background]) -> None:
    everything = [t for a in [OUTSIDE, *DENIED.values(), *NODE.values()] for t in _targets(a)]
    before_rules = _rules(runner)

    # Without isolation every destination answers (so the test can see a difference).
    reach = measure.probes(runner, VM, everything)
    assert all(reach.values()), reach

    out = _skycache(
        runner,
        "isolate",
        VM,
        "--allow-egress",
        "--deny",
        "198.18.12.0/24",
        "--deny",
        "198.18.13.0/24",
        "--netns",
        WK,
    )
    assert "SKYCACHE-FWD-ti-vm" in out
    isolated_rules = _rules(runner)
    reach = measure.probes(runner, VM, everything)
    print(reach)
    for t in _targets(OUTSIDE):
        assert reach[t], f"{t} must stay reachable through NAT"
    for addr in [*DENIED.values(), *NODE.values()]:
        for t in _targets(addr):
            assert not reach[t], f"{t} must be blocked"

    # Pre-existing rules are still there, in their chains; ours only in SKYCACHE-* plus 3 marked jumps.
    for line in before_rules:
        assert line in isolated_rules
    added = [ln for ln in isolated_rules if ln not in before_rules]
    assert all("SKYCACHE-" in ln for ln in added), added
    jumps = [ln for ln in added if ln.startswith(("-A FORWARD", "-A INPUT"))]
    assert len(jumps) == 3 and all('--comment "skycache:iso:ti-vm"' in j for j in jumps)

    # Idempotent: a second isolate changes nothing.
    _skycache(
        runner, "isolate", VM, "--allow-egress", "--deny", "198.18.12.0/24,198.18.13.0/24", "--netns", WK
    )
    assert _rules(runner) == isolated_rules
    # ... because nothing was planned: the rules read back in exactly the planned form.
    spec = isolation.make_spec("ti-vm", "wk-vm", ["198.18.12.0/24", "198.18.13.0/24"], allow_egress=True)
    assert isolation.plan_isolate(runner, spec, WK).actions == []

    # unisolate removes exactly ours: the rules are as before, and everything answers again.
    out = _skycache(runner, "unisolate", VM, "--netns", WK)
    assert "SKYCACHE-FWD-ti-vm" in out and "SKYCACHE-INP-ti-vm" in out
    assert _rules(runner) == before_rules
    reach = measure.probes(runner, VM, everything)
    assert all(reach.values()), reach


def test_dhcp_dns_to_node_when_enabled_and_no_egress_mode(
    runner: Runner, lab_net: list[measure.Background]
) -> None:
    dns = measure.Background(
        runner,
        in_ns(
            WK,
            python_argv(
                "skycache.net.connload", "serve", "--bind", "198.18.10.1", "--port", "53", "--seconds", "1200"
            ),
        ),
        timeout_s=1260,
    )
    try:
        measure.wait_listening(runner, WK, 53, addr="198.18.10.1", server=dns)
        spec = isolation.make_spec(
            "ti-vm", "wk-vm", ["198.18.12.0/24"], allow_egress=False, allow_dhcp_dns=True
        )
        isolation.isolate(runner, spec, WK)
        reach = measure.probes(
            runner,
            VM,
            [
                "udp:198.18.10.1:53",
                "tcp:198.18.10.1:53",
                f"tcp:198.18.10.1:{PORT}",
                f"icmp:{OUTSIDE}",
                f"tcp:{OUTSIDE}:{PORT}",
            ],
        )
        print(reach)
        assert reach["udp:198.18.10.1:53"] and reach["tcp:198.18.10.1:53"]
        assert not reach[f"tcp:198.18.10.1:{PORT}"]
        assert not reach[f"icmp:{OUTSIDE}"] and not reach[f"tcp:{OUTSIDE}:{PORT}"]  # no egress at all
        assert isolation.plan_isolate(runner, spec, WK).actions == []
        assert isolation.unisolate(runner, "ti-vm", WK) == ["SKYCACHE-FWD-ti-vm", "SKYCACHE-INP-ti-vm"]
    finally:
        measure.stop_server(runner, WK, "198.18.10.1", 53)
        dns.join(120)
