"""iptables: reading ``iptables-save`` and the small set of commands skycache uses.

skycache uses iptables (the ``iptables`` front end, nf_tables backend on Debian 12; the legacy
backend works the same) rather than a private nftables table: on a worker node the rules that
matter (libvirt, Docker, site firewalls) live in iptables' FORWARD/INPUT and nat/POSTROUTING
chains, and an nftables table of our own would run at its own hook priority *beside* them, so an
ACCEPT there would not override their DROP and vice versa. Jumping from those chains into chains
skycache owns keeps our rules in the same evaluation order as everyone else's, visible in
``iptables-save``, and removable without touching anything else.

Ownership: chains are named ``SKYCACHE-*``; each jump rule into one carries a ``skycache:...``
comment. Only rules that have both are ever deleted from chains skycache does not own.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from skycache.errors import InvalidInput
from skycache.net.netns import in_ns
from skycache.runner import Runner

CHAIN_PREFIX = "SKYCACHE-"
COMMENT_PREFIX = "skycache:"
MAX_CHAIN_LEN = 28  # XT_EXTENSION_MAXNAMELEN (29) minus the NUL

# Modules the rules need; the lab kernel (Debian 6.1) has all of them as modules.
MODULES = (
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_masq",
    "nft_reject_ipv4",
    "xt_comment",
    "xt_conntrack",
    "xt_tcpudp",
    "xt_MASQUERADE",
    "ipt_REJECT",
)


def check_chain(name: str) -> str:
    if (
        not name.startswith(CHAIN_PREFIX)
        or len(name) > MAX_CHAIN_LEN
        or not re.match(r"^[A-Za-z0-9_.-]+$", name)
    ):
        raise InvalidInput(
            f"chain name {name!r} is invalid (SKYCACHE-..., at most {MAX_CHAIN_LEN} characters)"
        )
    return name


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    spec: tuple[str, ...]  # the words after "-A CHAIN"

    @property
    def comment(self) -> str | None:
        words = list(self.spec)
        for i, w in enumerate(words[:-1]):
            if w == "--comment":
                return words[i + 1]
        return None

    @property
    def target(self) -> str | None:
        words = list(self.spec)
        for i, w in enumerate(words[:-1]):
            if w in ("-j", "--jump", "-g", "--goto"):
                return words[i + 1]
        return None


@dataclass(frozen=True)
class Ruleset:
    chains: dict[str, tuple[str, ...]]  # table -> chain names (built-in and user)
    rules: tuple[Rule, ...]

    def has_chain(self, table: str, chain: str) -> bool:
        return chain in self.chains.get(table, ())

    def rules_in(self, table: str, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.table == table and r.chain == chain]

    def owned_chains(self, table: str) -> list[str]:
        return [c for c in self.chains.get(table, ()) if c.startswith(CHAIN_PREFIX)]

    def owned_jumps(self, table: str) -> list[Rule]:
        """Rules in chains we do not own that jump into ours and carry our comment."""
        return [
            r
            for r in self.rules
            if r.table == table
            and not r.chain.startswith(CHAIN_PREFIX)
            and (r.target or "").startswith(CHAIN_PREFIX)
            and (r.comment or "").startswith(COMMENT_PREFIX)
        ]


def parse_save(text: str) -> Ruleset:
    """Parse ``iptables-save`` output (any table; comments and counters ignored)."""
    table = ""
    chains: dict[str, list[str]] = {}
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            chains.setdefault(table, [])
        elif line.startswith(":"):
            chains.setdefault(table, []).append(line[1:].split()[0])
        elif line.startswith("-A "):
            words = shlex.split(line)
            rules.append(Rule(table, words[1], tuple(words[2:])))
    return Ruleset({t: tuple(c) for t, c in chains.items()}, tuple(rules))


def save(runner: Runner, table: str, ns: str | None = None) -> Ruleset:
    out = runner.query(in_ns(ns, ["iptables-save", "-t", table]), check=False)
    # A table never used in this namespace is simply absent from the output.
    return parse_save(out.stdout if out.returncode == 0 else "")


def load_modules(runner: Runner) -> None:
    """modprobe what the rules need; ignored where built in or already loaded (check=False)."""
    for module in MODULES:
        runner.run(["modprobe", "-q", module], check=False)


def restore_noflush(runner: Runner, text: str, ns: str | None = None) -> None:
    """Apply a block of ``iptables-restore`` input atomically, leaving other chains alone.

    With ``--noflush`` only chains declared with ``:NAME`` are flushed (checked on iptables 1.8.9,
    nf_tables backend), so the content of an owned chain is replaced in one transaction.
    """
    runner.run(in_ns(ns, ["iptables-restore", "--noflush"]), stdin=text)


def restore_block(table: str, chains: dict[str, list[list[str]]]) -> str:
    """``iptables-restore`` input that (re)defines each owned chain with exactly these rules."""
    lines = [f"*{table}"]
    for chain in chains:
        check_chain(chain)
        lines.append(f":{chain} - [0:0]")
    for chain, specs in chains.items():
        lines += [shlex.join(["-A", chain, *spec]) for spec in specs]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ensure_jump(runner: Runner, table: str, chain: str, spec: list[str], ns: str | None = None) -> None:
    """Insert rule ``spec`` at the top of ``chain`` unless it is there already (``-C``)."""
    check = runner.query(in_ns(ns, ["iptables", "-w", "-t", table, "-C", chain, *spec]), check=False)
    if check.returncode != 0:
        runner.run(in_ns(ns, ["iptables", "-w", "-t", table, "-I", chain, "1", *spec]))


def delete_rule(runner: Runner, rule: Rule, ns: str | None = None) -> None:
    runner.run(in_ns(ns, ["iptables", "-w", "-t", rule.table, "-D", rule.chain, *rule.spec]))


def delete_chain(runner: Runner, table: str, chain: str, ns: str | None = None) -> None:
    check_chain(chain)
    runner.run(in_ns(ns, ["iptables", "-w", "-t", table, "-F", chain]))
    runner.run(in_ns(ns, ["iptables", "-w", "-t", table, "-X", chain]))
