"""Source NAT (MASQUERADE) for VM networks, in an owned chain of the nat table.

    nat/POSTROUTING -o OUT -m comment --comment skycache:nat:KEY -j SKYCACHE-NAT-KEY
    SKYCACHE-NAT-KEY: -s VMNET -j MASQUERADE

MASQUERADE needs connection tracking: the first NAT rule in a network namespace registers conntrack's
hooks there (nf_ct_netns_get), so every packet of every flow through it is then tracked. That
per-packet and per-connection cost is what ``skycache bench nat`` measures.

Planned like isolation (:mod:`skycache.net.isolation`): one read of ``iptables-save -t nat`` and of
the forwarding switch, and only what differs becomes an action.
"""

from __future__ import annotations

from skycache.errors import InvalidInput
from skycache.net import iptables
from skycache.net.iptables import COMMENT_PREFIX, Rule, Ruleset
from skycache.net.netns import canonical_network, check_dev, check_optional_ns, in_ns
from skycache.plan import Action, Plan
from skycache.runner import Runner

NAT_PREFIX = "SKYCACHE-NAT-"
NAT_COMMENT = COMMENT_PREFIX + "nat:"
FORWARDING = "net.ipv4.ip_forward"


def chain_for(key: str) -> str:
    chain = NAT_PREFIX + key
    if len(chain) > iptables.MAX_CHAIN_LEN:
        raise InvalidInput(f"NAT name {key!r} is too long for a chain name (at most 15 characters)")
    return iptables.check_chain(chain)


def jump_rule(key: str, out_dev: str) -> Rule:
    return Rule(
        "nat",
        "POSTROUTING",
        ("-o", out_dev, "-m", "comment", "--comment", NAT_COMMENT + key, "-j", chain_for(key)),
    )


def _where(ns: str | None) -> str:
    return "" if ns is None else f" in {ns}"


def enable_plan(
    rules: Ruleset,
    forwarding: str,
    key: str,
    source: str,
    out_dev: str,
    ns: str | None,
    missing_modules: list[str],
) -> Plan:
    """The plan of :func:`plan_enable` from the state it read: the nat table, the forwarding switch
    (``sysctl -n``) and the netfilter modules not yet loaded."""
    chain = chain_for(key)
    net = canonical_network(source)
    check_dev(out_dev)
    plan = Plan(f"NAT {net} out of {out_dev}{_where(ns)}")
    define = iptables.define_chains_action(rules, "nat", {chain: [["-s", net, "-j", "MASQUERADE"]]}, ns)
    jumps = iptables.jump_actions(rules, "nat", [jump_rule(key, out_dev)], NAT_COMMENT + key, ns)
    if (define is not None or jumps) and missing_modules:
        plan.add(iptables.modules_action(missing_modules))
    if define is not None:
        plan.add(define)  # before the jump: a jump into a chain that does not exist is refused
    plan.extend(jumps)
    if forwarding != "1":
        plan.add(
            Action.command(
                f"enable IPv4 forwarding{_where(ns)}",
                in_ns(ns, ["sysctl", "-q", "-w", f"{FORWARDING}=1"]),
                in_ns(ns, ["sysctl", "-q", "-w", f"{FORWARDING}={forwarding or '0'}"]),
            )
        )
    return plan


def disable_plan(rules: Ruleset, key: str, ns: str | None) -> Plan:
    """The plan of :func:`plan_disable` from the nat table it read."""
    chain = chain_for(key)
    plan = Plan(f"remove the NAT {key}{_where(ns)}")
    # The jump first: a chain still jumped to cannot be deleted.
    for rule in rules.owned_jumps("nat"):
        if rule.comment == NAT_COMMENT + key:
            plan.add(iptables.delete_action(rule, ns))
    if rules.has_chain("nat", chain):
        plan.add(iptables.remove_chain_action(rules, "nat", chain, ns))
    return plan


def plan_enable(runner: Runner, key: str, source: str, out_dev: str, ns: str | None = None) -> Plan:
    """Masquerade traffic from ``source`` leaving through ``out_dev``, with forwarding on; an empty
    plan when that is so already."""
    check_optional_ns(ns)
    chain_for(key)
    canonical_network(source)
    check_dev(out_dev)
    rules = iptables.save(runner, "nat", ns)
    forwarding = runner.query(in_ns(ns, ["sysctl", "-n", FORWARDING])).stdout.strip()
    return enable_plan(rules, forwarding, key, source, out_dev, ns, iptables.missing_modules(runner))


def plan_disable(runner: Runner, key: str, ns: str | None = None) -> Plan:
    """Remove the NAT of ``key``: its jumps and its chain only (forwarding stays as it is)."""
    check_optional_ns(ns)
    chain_for(key)
    return disable_plan(iptables.save(runner, "nat", ns), key, ns)


# -- the imperative helpers other code calls: plan, then apply ------------------------------------


def enable(runner: Runner, key: str, source: str, out_dev: str, ns: str | None = None) -> None:
    """Apply :func:`plan_enable` (idempotent)."""
    plan_enable(runner, key, source, out_dev, ns).apply(runner)


def disable(runner: Runner, key: str, ns: str | None = None) -> bool:
    """Remove the NAT of ``key`` (its jump and chain only); returns whether its chain was there."""
    check_optional_ns(ns)
    chain = chain_for(key)
    rules = iptables.save(runner, "nat", ns)
    disable_plan(rules, key, ns).apply(runner)
    return rules.has_chain("nat", chain)
