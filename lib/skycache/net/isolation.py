"""VM isolation: a VM reaches the outside (through NAT) but not the internal networks or the node.

For one VM (its interface on the worker, e.g. a tap device or the worker end of a veth) skycache
installs two chains in the filter table and jumps to them first thing from FORWARD and INPUT:

    FORWARD -i IF  -m comment --comment skycache:iso:KEY -j SKYCACHE-FWD-KEY
    FORWARD -o IF  -m comment --comment skycache:iso:KEY -j SKYCACHE-FWD-KEY
    INPUT   -i IF  -m comment --comment skycache:iso:KEY -j SKYCACHE-INP-KEY

    SKYCACHE-FWD-KEY  (traffic routed through the node)
      -i IF -d DENIED   REJECT (icmp-admin-prohibited)     for each denied network
      -o IF -s DENIED   DROP                               unsolicited traffic from them to the VM
      -i IF             ACCEPT   (--allow-egress)  or  REJECT (no egress at all)
      -o IF  ESTABLISHED,RELATED ACCEPT (--allow-egress: replies from the outside)
    SKYCACHE-INP-KEY  (traffic to the node itself)
      udp 67, udp/tcp 53 ACCEPT (only with --allow-dhcp-dns)
      ESTABLISHED,RELATED ACCEPT  (connections the node opened to the VM)
      REJECT

The jumps go to position 1 so that no earlier ACCEPT of the site's rules can let VM traffic past
the deny list; REJECT (rather than DROP) makes a denied attempt fail at once instead of after a
timeout. FORWARD sees the packet after DNAT and before SNAT/MASQUERADE, so ``-d`` matches the real
internal destination even when the VM's outgoing traffic is masqueraded.

Planning reads ``iptables-save`` once and plans only what differs: the chains' content (one atomic
``iptables-restore``), missing jumps, stale jumps of the same VM; the same isolation again is an
empty plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from skycache.errors import InvalidInput, NotFound
from skycache.net import iptables
from skycache.net.iptables import COMMENT_PREFIX, Rule, Ruleset
from skycache.net.netns import canonical_network, check_dev, check_ns, check_optional_ns, in_ns
from skycache.ownership import NAME_PREFIX
from skycache.plan import Plan
from skycache.runner import Runner

FWD_PREFIX = "SKYCACHE-FWD-"
INP_PREFIX = "SKYCACHE-INP-"
ISO_COMMENT = COMMENT_PREFIX + "iso:"
REJECT = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
ESTABLISHED = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]


@dataclass(frozen=True)
class IsolationSpec:
    key: str  # names the chains: SKYCACHE-FWD-<key>, SKYCACHE-INP-<key>
    interface: str  # where the VM's traffic enters the worker
    deny: tuple[str, ...]
    allow_egress: bool = True
    allow_dhcp_dns: bool = False

    @property
    def fwd_chain(self) -> str:
        return FWD_PREFIX + self.key

    @property
    def inp_chain(self) -> str:
        return INP_PREFIX + self.key

    @property
    def comment(self) -> str:
        return ISO_COMMENT + self.key


def check_key(key: str) -> str:
    if not key or len(FWD_PREFIX + key) > iptables.MAX_CHAIN_LEN:
        raise InvalidInput(f"isolation name {key!r} is too long for a chain name (at most 15 characters)")
    iptables.check_chain(FWD_PREFIX + key)
    if ".." in key:
        # Legal in a chain and (inside) an interface name, but no name skycache gives holds it, and the
        # same name becomes a path elsewhere (the VM's state notes), where ".." climbs out.
        raise InvalidInput(f"isolation name {key!r} holds '..'")
    return key


def key_for(target: str) -> str:
    """The chain key of a target: a namespace ``skycache-vm1`` -> ``vm1``; an interface -> itself."""
    return check_key(target[len(NAME_PREFIX) :] if target.startswith(NAME_PREFIX) else target)


def make_spec(
    key: str, interface: str, deny: list[str], *, allow_egress: bool = True, allow_dhcp_dns: bool = False
) -> IsolationSpec:
    check_key(key)
    check_dev(interface)
    if not deny and allow_egress:
        raise InvalidInput("nothing to isolate: give at least one --deny CIDR (or leave out --allow-egress)")
    # As iptables-save prints them (198.18.13.5 -> 198.18.13.5/32), ordered, duplicates dropped.
    nets = tuple(dict.fromkeys(canonical_network(c) for c in deny))
    return IsolationSpec(key, interface, nets, allow_egress, allow_dhcp_dns)


# -- pure builders ---------------------------------------------------------------------------------


def chain_rules(spec: IsolationSpec) -> dict[str, list[list[str]]]:
    """The exact content of the two owned chains, each rule in the form ``iptables-save`` prints
    (``-s -d -i -o -p`` in that order), so an installed chain compares equal to its plan."""
    dev = spec.interface
    fwd: list[list[str]] = [["-d", net, "-i", dev, *REJECT] for net in spec.deny]
    fwd += [["-s", net, "-o", dev, "-j", "DROP"] for net in spec.deny]
    if spec.allow_egress:
        fwd.append(["-i", dev, "-j", "ACCEPT"])
        fwd.append(["-o", dev, *ESTABLISHED, "-j", "ACCEPT"])
    else:
        fwd.append(["-i", dev, *REJECT])
    inp: list[list[str]] = []
    if spec.allow_dhcp_dns:
        inp += [
            ["-p", "udp", "-m", "udp", "--dport", "67", "-j", "ACCEPT"],
            ["-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"],
            ["-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "ACCEPT"],
        ]
    inp.append([*ESTABLISHED, "-j", "ACCEPT"])
    inp.append(REJECT)
    return {spec.fwd_chain: fwd, spec.inp_chain: inp}


def jump_rules(spec: IsolationSpec) -> list[Rule]:
    """The jumps from the built-in chains, each marked with the comment."""
    mark = ["-m", "comment", "--comment", spec.comment]
    return [
        Rule("filter", "FORWARD", ("-i", spec.interface, *mark, "-j", spec.fwd_chain)),
        Rule("filter", "FORWARD", ("-o", spec.interface, *mark, "-j", spec.fwd_chain)),
        Rule("filter", "INPUT", ("-i", spec.interface, *mark, "-j", spec.inp_chain)),
    ]


def isolate_plan(rules: Ruleset, spec: IsolationSpec, ns: str | None, missing_modules: list[str]) -> Plan:
    """The plan of :func:`plan_isolate` from the state it read: the filter table and the
    netfilter modules not yet loaded."""
    plan = Plan(f"isolate {spec.key} (interface {spec.interface})")
    define = iptables.define_chains_action(rules, "filter", chain_rules(spec), ns)
    jumps = iptables.jump_actions(rules, "filter", jump_rules(spec), spec.comment, ns)
    if (define is not None or jumps) and missing_modules:
        plan.add(iptables.modules_action(missing_modules))
    if define is not None:
        plan.add(define)  # before the jumps: a jump into a chain that does not exist is refused
    return plan.extend(jumps)


def _matches(key: str | None, comment: str) -> bool:
    return comment == ISO_COMMENT + key if key is not None else comment.startswith(ISO_COMMENT)


def isolated_chains(rules: Ruleset, key: str | None) -> list[str]:
    """The owned chains of ``key``'s isolation (every VM's when None), as the table lists them."""
    names = (FWD_PREFIX + key, INP_PREFIX + key) if key is not None else ()
    return [
        c
        for c in rules.owned_chains("filter")
        if c in names or (key is None and c.startswith((FWD_PREFIX, INP_PREFIX)))
    ]


def unisolate_plan(rules: Ruleset, key: str | None, ns: str | None) -> Plan:
    """The plan of :func:`plan_unisolate` from the filter table it read."""
    plan = Plan(f"remove the isolation of {key if key is not None else 'every VM'}")
    # The jumps first: a chain still jumped to cannot be deleted. Each undo puts its part back.
    for rule in rules.owned_jumps("filter"):
        if _matches(key, rule.comment or ""):
            plan.add(iptables.delete_action(rule, ns))
    for chain in isolated_chains(rules, key):
        plan.add(iptables.remove_chain_action(rules, "filter", chain, ns))
    return plan


# -- planners --------------------------------------------------------------------------------------


def resolve_interface(runner: Runner, target: str, ns: str | None = None) -> str:
    """The worker-side interface of ``target``: an interface name as is, or for an owned namespace
    the peer (in the worker's namespace ``ns``) of the veth inside it."""
    if not target.startswith(NAME_PREFIX):
        return check_dev(target)
    check_ns(target)
    inside = json.loads(runner.query(["ip", "-n", target, "-j", "link", "show"]).stdout or "[]")
    worker = json.loads(runner.query(in_ns(ns, ["ip", "-j", "link", "show"])).stdout or "[]")
    return peer_interface(inside, worker, target)


def peer_interface(inside: list[dict[str, object]], worker: list[dict[str, object]], target: str) -> str:
    """Pure part of :func:`resolve_interface`: match veth ends by each other's ``link_index``."""
    for vm_end in inside:
        if "link_netnsid" not in vm_end or "link_index" not in vm_end:
            continue
        for w in worker:
            if w.get("ifindex") == vm_end["link_index"] and w.get("link_index") == vm_end["ifindex"]:
                return str(w["ifname"])
    raise NotFound(f"namespace {target!r} has no veth whose other end is in the worker's namespace")


def read_rules(runner: Runner, ns: str | None = None) -> Ruleset:
    """The filter table of the worker (namespace ``ns``), the state isolation plans from."""
    return iptables.save(runner, "filter", ns)


def plan_isolate(runner: Runner, spec: IsolationSpec, ns: str | None = None) -> Plan:
    """Install (or update) the isolation of one VM; an empty plan when it is in place already."""
    check_optional_ns(ns)
    return isolate_plan(read_rules(runner, ns), spec, ns, iptables.missing_modules(runner))


def plan_unisolate(runner: Runner, key: str | None = None, ns: str | None = None) -> Plan:
    """Remove the isolation of ``key`` (or of every VM): exactly the jumps and chains skycache made."""
    check_optional_ns(ns)
    if key is not None:
        check_key(key)
    return unisolate_plan(read_rules(runner, ns), key, ns)


# -- the imperative helpers other code calls: plan, then apply ------------------------------------


def isolate(runner: Runner, spec: IsolationSpec, ns: str | None = None) -> None:
    """Install (or update) the isolation of one VM; idempotent."""
    plan_isolate(runner, spec, ns).apply(runner)


def unisolate(runner: Runner, key: str | None = None, ns: str | None = None) -> list[str]:
    """Remove the isolation of ``key`` (or of every VM); returns the chains removed. Nothing else in
    any table is touched."""
    check_optional_ns(ns)
    if key is not None:
        check_key(key)
    rules = read_rules(runner, ns)
    unisolate_plan(rules, key, ns).apply(runner)
    return isolated_chains(rules, key)


@dataclass(frozen=True)
class Isolated:
    key: str
    interfaces: tuple[str, ...]
    rules: int


def status(runner: Runner, ns: str | None = None) -> list[Isolated]:
    ruleset = read_rules(runner, ns)
    out = []
    for chain in ruleset.owned_chains("filter"):
        if not chain.startswith(FWD_PREFIX):
            continue
        key = chain[len(FWD_PREFIX) :]
        jumps = [r for r in ruleset.owned_jumps("filter") if r.comment == ISO_COMMENT + key]
        devs = sorted({r.spec[1] for r in jumps if r.spec[:1] in (("-i",), ("-o",))})
        count = len(ruleset.rules_in("filter", chain)) + len(ruleset.rules_in("filter", INP_PREFIX + key))
        out.append(Isolated(key, tuple(devs), count))
    return out
