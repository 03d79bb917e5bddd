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

Planners (:mod:`.isolation`, :mod:`.nat`) read ``iptables-save`` once and build their plans from the
action builders here; each action carries its undo (a deleted jump is inserted again, a removed
chain is defined again with the rules it had).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from skycache.errors import InvalidInput
from skycache.net.netns import in_ns
from skycache.plan import Action, Command, Plan
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
        or not re.fullmatch(r"[A-Za-z0-9_.-]+", name)
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


# -- kernel modules --------------------------------------------------------------------------------


def missing_modules(runner: Runner) -> list[str]:
    """The :data:`MODULES` neither loaded nor built into the target's kernel (read, not probed:
    a module already there is no command of the plan)."""
    release = (runner.read_text("/proc/sys/kernel/osrelease") or "").strip()
    builtin_text = (runner.read_text(f"/lib/modules/{release}/modules.builtin") or "") if release else ""
    # modules.builtin lists paths (kernel/net/netfilter/xt_comment.ko); module names use '_' for '-'.
    builtin = {
        PurePosixPath(line.strip()).name.removesuffix(".ko").replace("-", "_")
        for line in builtin_text.splitlines()
        if line.strip()
    }
    return [m for m in MODULES if m not in builtin and not runner.exists(f"/sys/module/{m}")]


def modules_action(missing: Sequence[str]) -> Action:
    # Exit 1 (a module this kernel does not have) is tolerated as before: a rule that needs it
    # then fails with iptables' own message, naming the match or target.
    return Action.command(
        f"load kernel modules {', '.join(missing)}",
        ["modprobe", "-q", "-a", *missing],
        ok_codes=frozenset({0, 1}),
    )


def plan_modules(runner: Runner) -> Plan:
    missing = missing_modules(runner)
    return Plan("load the netfilter modules", [modules_action(missing)] if missing else [])


def load_modules(runner: Runner) -> None:
    """Load what the rules need (nothing when everything is loaded or built in)."""
    plan_modules(runner).apply(runner)


# -- actions ---------------------------------------------------------------------------------------


def restore_block(table: str, chains: Mapping[str, Sequence[Sequence[str]]]) -> str:
    """``iptables-restore`` input that (re)defines each owned chain with exactly these rules."""
    lines = [f"*{table}"]
    for chain in chains:
        check_chain(chain)
        lines.append(f":{chain} - [0:0]")
    for chain, specs in chains.items():
        lines += [shlex.join(["-A", chain, *spec]) for spec in specs]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def restore_command(table: str, chains: Mapping[str, Sequence[Sequence[str]]], ns: str | None) -> Command:
    """Apply :func:`restore_block` in one transaction, leaving other chains alone.

    With ``--noflush`` only chains declared with ``:NAME`` are flushed (checked on iptables 1.8.9,
    nf_tables backend), so the content of an owned chain is replaced atomically.
    """
    return Command(
        tuple(in_ns(ns, ["iptables-restore", "--noflush"])),
        stdin=restore_block(table, chains),
        show_stdin=True,
    )


def _iptables(ns: str | None, table: str, *args: str) -> Command:
    return Command(tuple(in_ns(ns, ["iptables", "-w", "-t", table, *args])))


def define_chains_action(
    rules: Ruleset, table: str, wanted: Mapping[str, Sequence[Sequence[str]]], ns: str | None = None
) -> Action | None:
    """Give the owned chains ``wanted`` exactly these rules; None when they have them already.

    ``wanted`` is written in the form ``iptables-save`` prints, so the comparison is textual; a
    form that differs only costs a redundant (atomic, identical) restore. The undo puts back the
    content of chains that existed and deletes the ones this created.
    """
    current = {
        c: [list(r.spec) for r in rules.rules_in(table, c)] for c in wanted if rules.has_chain(table, c)
    }
    if all(current.get(c) == [list(s) for s in specs] for c, specs in wanted.items()):
        return None
    undo: list[Command] = []
    if current:
        undo.append(restore_command(table, current, ns))
    for chain in wanted:
        if chain not in current:
            undo += [_iptables(ns, table, "-F", chain), _iptables(ns, table, "-X", chain)]
    count = sum(len(s) for s in wanted.values())
    return Action(
        f"define {table} chains {', '.join(wanted)} ({count} rules)",
        (restore_command(table, wanted, ns),),
        tuple(undo),
    )


def insert_action(rule: Rule, ns: str | None = None, why: str = "") -> Action:
    """Insert ``rule`` at the top of its chain (before every rule of the site's)."""
    return Action(
        f"insert {rule.table}/{rule.chain} rule -> {rule.target}{why}",
        (_iptables(ns, rule.table, "-I", rule.chain, "1", *rule.spec),),
        (_iptables(ns, rule.table, "-D", rule.chain, *rule.spec),),
    )


def delete_action(rule: Rule, ns: str | None = None, why: str = "") -> Action:
    return Action(
        f"delete {rule.table}/{rule.chain} rule -> {rule.target}{why}",
        (_iptables(ns, rule.table, "-D", rule.chain, *rule.spec),),
        (_iptables(ns, rule.table, "-I", rule.chain, "1", *rule.spec),),
    )


def jump_actions(
    rules: Ruleset, table: str, wanted: Sequence[Rule], comment: str, ns: str | None = None
) -> list[Action]:
    """Insert the jumps of ``wanted`` that are missing, then delete the other jumps with this
    comment (left by an earlier run with another interface): inserting first leaves no moment
    without a jump. A jump that reads back in another form than ``wanted`` is inserted and then
    deleted in its old form (``-D`` removes the first equal rule), so it is never doubled."""
    actions = [insert_action(r, ns) for r in wanted if r not in rules.rules]
    actions += [
        delete_action(r, ns, " (stale)")
        for r in rules.owned_jumps(table)
        if r.comment == comment and r not in wanted
    ]
    return actions


def remove_chain_action(rules: Ruleset, table: str, chain: str, ns: str | None = None) -> Action:
    """Flush and delete an owned chain; the undo defines it again with the rules it had."""
    check_chain(chain)
    old = [list(r.spec) for r in rules.rules_in(table, chain)]
    return Action(
        f"remove {table} chain {chain} ({len(old)} rules)",
        (_iptables(ns, table, "-F", chain), _iptables(ns, table, "-X", chain)),
        (restore_command(table, {chain: old}, ns),),
    )
