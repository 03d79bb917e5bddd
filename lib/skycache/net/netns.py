"""Owned network namespaces and the veth links between them.

A :class:`Topology` describes namespaces, point-to-point veth links with addresses, routes and which
namespaces forward; :func:`build_plan` turns it into a :class:`~skycache.plan.Plan` whose undo
deletes the namespaces again (a veth end disappears with its namespace, so nothing is left in the
root namespace); :func:`plan_build` and :func:`plan_delete` read which owned namespaces exist first.
Addresses are restricted to 198.18.0.0/15 (RFC 2544's benchmarking range).
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from skycache.errors import InvalidInput, NotOwned
from skycache.ownership import NAME_PREFIX
from skycache.plan import Action, Plan
from skycache.runner import Runner

BENCH_NET = ipaddress.ip_network("198.18.0.0/15")
LOOPBACK = ipaddress.ip_address("127.0.0.1")

_NS_RE = re.compile(r"skycache-[a-z0-9][a-z0-9_.-]{0,30}")
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
_DEV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")


def check_ns(name: str) -> str:
    """Return ``name`` if it is a valid owned namespace name (``skycache-...``)."""
    if not name.startswith(NAME_PREFIX):
        raise NotOwned(f"network namespace {name!r} was not created by skycache (no {NAME_PREFIX!r} prefix)")
    if not _NS_RE.fullmatch(name):
        raise InvalidInput(f"network namespace name {name!r} is invalid (skycache-[a-z0-9_.-], max 40)")
    if ".." in name:
        # A namespace is the file /run/netns/NAME: refused like every name holding "..".
        raise InvalidInput(f"network namespace name {name!r} holds '..'")
    return name


def check_optional_ns(name: str | None) -> str | None:
    """:func:`check_ns` for a planner's ``ns`` argument, where None is the caller's own namespace."""
    return check_ns(name) if name is not None else None


def check_dev(name: str) -> str:
    if not _DEV_RE.fullmatch(name):
        raise InvalidInput(f"interface name {name!r} is invalid (1-15 characters of A-Za-z0-9_.-)")
    if ".." in name:
        # The kernel refuses "." and ".." (names under /sys/class/net); skycache refuses ".." anywhere
        # in a name, as in every other name it takes, so a name never climbs a path it becomes part of.
        raise InvalidInput(f"interface name {name!r} holds '..'")
    return name


def check_address(cidr: str) -> str:
    """Accept ``a.b.c.d/len`` or a plain address inside 198.18.0.0/15, or 127.0.0.1."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise InvalidInput(f"address {cidr!r} is not an IPv4 address or CIDR") from exc
    if iface.ip == LOOPBACK:
        return cidr
    if iface.version != 4 or iface.ip not in BENCH_NET:
        raise InvalidInput(f"address {cidr!r} is outside the benchmarking range {BENCH_NET} (RFC 2544)")
    return cidr


def canonical_network(cidr: str) -> str:
    """A network given on the command line (any valid IPv4 CIDR or address), written the way
    ``iptables-save`` prints it: host bits cleared, the prefix length always there
    (``198.18.3.5`` -> ``198.18.3.5/32``), so planned rules compare equal to installed ones."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise InvalidInput(f"network {cidr!r} is not a CIDR (e.g. 198.18.3.0/24)") from exc
    if net.version != 4:
        raise InvalidInput(f"network {cidr!r} is not IPv4")
    return str(net)


def in_ns(ns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside namespace ``ns`` (``ip netns exec``), or as is when ``ns`` is None."""
    return list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]


def python_argv(module: str, *args: str) -> list[str]:
    """Run one of skycache's own helper modules with this interpreter (the venv's python)."""
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class Link:
    """A veth pair from ``dev_a`` in ``ns_a`` to ``dev_b`` in ``ns_b``, each end with an address."""

    ns_a: str
    dev_a: str
    addr_a: str
    ns_b: str
    dev_b: str
    addr_b: str


@dataclass(frozen=True)
class Route:
    ns: str
    dest: str  # "default" or a CIDR
    via: str


@dataclass(frozen=True)
class Topology:
    namespaces: tuple[str, ...]
    links: tuple[Link, ...] = ()
    routes: tuple[Route, ...] = ()
    forwarders: tuple[str, ...] = ()

    def validate(self) -> None:
        for ns in self.namespaces:
            check_ns(ns)
        known = set(self.namespaces)
        for link in self.links:
            for ns, dev, addr in ((link.ns_a, link.dev_a, link.addr_a), (link.ns_b, link.dev_b, link.addr_b)):
                if ns not in known:
                    raise InvalidInput(f"link end {dev!r} is in namespace {ns!r}, which the topology lacks")
                check_dev(dev)
                check_address(addr)
        for route in self.routes:
            if route.dest != "default":
                check_address(route.dest)
            check_address(route.via)
        for ns in self.forwarders:
            if ns not in known:
                raise InvalidInput(f"forwarder {ns!r} is not one of the topology's namespaces")


def build_plan(topo: Topology, *, title: str = "network topology") -> Plan:
    """The actions that create ``topo``; undoing the namespace actions removes everything."""
    topo.validate()
    plan = Plan(title)
    for ns in topo.namespaces:
        plan.add(
            Action.command(
                f"create network namespace {ns}", ["ip", "netns", "add", ns], ["ip", "netns", "del", ns]
            )
        )
        plan.add(Action.command(f"bring lo up in {ns}", ["ip", "-n", ns, "link", "set", "lo", "up"]))
    for link in topo.links:
        # Create both ends directly inside their namespaces: no veth ever appears in the root
        # namespace, so a failure halfway cannot leave one there.
        plan.add(
            Action.command(
                f"veth {link.ns_a}/{link.dev_a} <-> {link.ns_b}/{link.dev_b}",
                ["ip", "link", "add", link.dev_a, "netns", link.ns_a, "type", "veth",
                 "peer", "name", link.dev_b, "netns", link.ns_b],
            )
        )  # fmt: skip
        for ns, dev, addr in ((link.ns_a, link.dev_a, link.addr_a), (link.ns_b, link.dev_b, link.addr_b)):
            plan.add(
                Action.command(
                    f"address {addr} on {ns}/{dev}", ["ip", "-n", ns, "addr", "add", addr, "dev", dev]
                )
            )
            plan.add(Action.command(f"bring {ns}/{dev} up", ["ip", "-n", ns, "link", "set", dev, "up"]))
    for route in topo.routes:
        plan.add(
            Action.command(
                f"route {route.dest} via {route.via} in {route.ns}",
                ["ip", "-n", route.ns, "route", "add", route.dest, "via", route.via],
            )
        )
    for ns in topo.forwarders:
        plan.add(
            Action.command(
                f"enable IPv4 forwarding in {ns}", in_ns(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            )
        )
    return plan


def parse_netns_list(text: str) -> list[str]:
    """Names from ``ip -j netns list`` (iproute2 prints nothing at all when there are none)."""
    if not text.strip():
        return []
    return [entry["name"] for entry in json.loads(text)]


def list_owned(runner: Runner) -> list[str]:
    out = runner.query(["ip", "-j", "netns", "list"]).stdout
    return [ns for ns in parse_netns_list(out) if ns.startswith(NAME_PREFIX)]


def plan_delete(runner: Runner, names: Sequence[str], *, title: str = "delete network namespaces") -> Plan:
    """Delete these owned namespaces, in this order; those that do not exist are no action. A veth
    end goes with its namespace, and with it the link's other end."""
    for ns in names:
        check_ns(ns)
    present = set(list_owned(runner))
    return Plan(
        title,
        [
            Action.command(f"delete network namespace {ns}", ["ip", "netns", "del", ns])
            for ns in names
            if ns in present
        ],
    )


def plan_build(runner: Runner, topo: Topology) -> Plan:
    """:func:`build_plan`, first deleting owned namespaces of the same names (a crashed run's)."""
    build = build_plan(topo)
    stale = plan_delete(runner, list(reversed(topo.namespaces)))
    return Plan(build.title, [*stale.actions, *build.actions])


def delete(runner: Runner, ns: str) -> None:
    """Delete an owned namespace (idempotent: a missing one is fine)."""
    plan_delete(runner, [ns]).apply(runner)


def teardown(runner: Runner, topo: Topology) -> None:
    plan_delete(runner, list(reversed(topo.namespaces))).apply(runner)


def build(runner: Runner, topo: Topology) -> None:
    """Create ``topo``, first removing stale owned namespaces of the same names (a crashed run)."""
    plan_build(runner, topo).apply(runner)
