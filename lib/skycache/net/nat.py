"""Source NAT (MASQUERADE) for VM networks, in an owned chain of the nat table.

    nat/POSTROUTING -o OUT -m comment --comment skycache:nat:KEY -j SKYCACHE-NAT-KEY
    SKYCACHE-NAT-KEY: -s VMNET -j MASQUERADE

MASQUERADE needs connection tracking: the first NAT rule in a network namespace registers conntrack's
hooks there (nf_ct_netns_get), so every packet of every flow through it is then tracked. That
per-packet and per-connection cost is what ``skycache net nat-bench`` measures.
"""

from __future__ import annotations

from skycache.errors import InvalidInput
from skycache.net import iptables
from skycache.net.iptables import COMMENT_PREFIX, Rule
from skycache.net.netns import check_dev, check_network, in_ns
from skycache.runner import Runner

NAT_PREFIX = "SKYCACHE-NAT-"
NAT_COMMENT = COMMENT_PREFIX + "nat:"


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


def enable(runner: Runner, key: str, source: str, out_dev: str, ns: str | None = None) -> None:
    """Masquerade traffic from ``source`` leaving through ``out_dev``; enable forwarding. Idempotent."""
    check_network(source)
    check_dev(out_dev)
    iptables.load_modules(runner)
    block = iptables.restore_block("nat", {chain_for(key): [["-s", source, "-j", "MASQUERADE"]]})
    iptables.restore_noflush(runner, block, ns)
    rule = jump_rule(key, out_dev)
    iptables.ensure_jump(runner, rule.table, rule.chain, list(rule.spec), ns)
    runner.run(in_ns(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))


def disable(runner: Runner, key: str, ns: str | None = None) -> bool:
    """Remove the NAT of ``key`` (its jump and chain only); returns whether anything was there."""
    chain = chain_for(key)
    ruleset = iptables.save(runner, "nat", ns)
    for rule in ruleset.owned_jumps("nat"):
        if rule.comment == NAT_COMMENT + key:
            iptables.delete_rule(runner, rule, ns)
    if ruleset.has_chain("nat", chain):
        iptables.delete_chain(runner, "nat", chain, ns)
        return True
    return False
