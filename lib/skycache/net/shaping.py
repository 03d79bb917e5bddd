"""Shaping of the iSCSI path with tc: rate, delay and loss on one TCP port, other traffic untouched.

Layout on the device (one egress tree; on ``lo`` both directions of a connection pass through it):

    root  prio handle 5ca: bands 3, priomap all -> band 3   (unmatched traffic: plain FIFO)
      5ca:1  netem (delay, rate, loss)   <- u32 match source port == PORT      (target -> initiator)
      5ca:2  netem (delay, rate, loss)   <- u32 match destination port == PORT (initiator -> target)

Each direction gets its own netem, so the link is full duplex: ``rate_bps`` is the rate per direction
and ``delay_ms`` the one-way delay (a round trip over ``lo`` gains ``2 * delay_ms``). netem does both
rate and delay itself, so the whole profile reads back from ``tc -j qdisc show`` (iproute2 6.1 prints
no JSON for htb classes). The root handle 0x5ca is skycache's mark: a root qdisc with another
explicit handle belongs to someone else and is never replaced or removed.

Lab scale (docs/net.md, "Lab scale"): under TCG one TCP stream over ``lo`` tops out at 1.2 Gbit/s on an idle
machine and at 0.47 Gbit/s on the shared 2-core machine (measured with iperf3 in the lab), and the
iSCSI path (LIO + iscsi_tcp) costs more CPU per byte than bare TCP. TCG's timers also add about
0.1 ms to every netem delay (measured: 2.24 ms added round trip for 2 x 1 ms). Emulated links are
therefore slowed by :data:`LAB_SCALE` = 20: rates divided by 20 and latencies multiplied by 20, so
the bandwidth-delay product stays that of the real link, the shaped path (50 Mbit/s for GbE) is the
bottleneck rather than the emulator's CPU, and the timer error stays a few percent of the delay.

Planning (:func:`plan_shape`, :func:`plan_unshape`) reads the device's qdiscs and filters first and
returns a :class:`~skycache.plan.Plan`: empty when the wanted tree is there already, else the removal
of another skycache tree, then the new one, whose root qdisc's undo takes the whole tree back when a
later step fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from skycache.errors import InvalidInput, NotOwned, SkycacheError
from skycache.net.netns import check_dev, check_optional_ns, in_ns
from skycache.numbers import parse_port
from skycache.plan import Action, Command, Plan
from skycache.runner import Runner

ROOT_HANDLE = "5ca:"
BAND_FROM_PORT = "5ca:1"  # source port == PORT: the target's replies (read data)
BAND_TO_PORT = "5ca:2"  # destination port == PORT: the initiator's requests (write data)
NETEM_LIMIT = 10000  # packets; enough for the BDP of every profile, even with MTU-size packets

# Rates divided by, latencies multiplied by this factor in the *lab* profiles (see module docstring).
LAB_SCALE = 20


@dataclass(frozen=True)
class ShapingProfile:
    """A link to emulate on the iSCSI path: rate per direction, one-way delay, random loss."""

    name: str
    rate_bps: int | None  # bits per second per direction; None = unlimited
    delay_ms: float  # one-way delay added in each direction
    loss_pct: float = 0.0

    def is_noop(self) -> bool:
        return self.rate_bps is None and self.delay_ms == 0 and self.loss_pct == 0

    def describe(self) -> str:
        rate = "unlimited" if self.rate_bps is None else format_rate(self.rate_bps)
        return f"{self.name}: rate {rate}, delay {self.delay_ms:g} ms one-way, loss {self.loss_pct:g}%"

    def to_json(self) -> dict[str, Any]:
        """For result manifests (helper B records the profile with every run)."""
        return {
            "name": self.name,
            "rate_bps": self.rate_bps,
            "delay_ms": self.delay_ms,
            "loss_pct": self.loss_pct,
        }


def _scaled(name: str, rate_bps: int, delay_ms: float) -> ShapingProfile:
    return ShapingProfile(name, rate_bps // LAB_SCALE, delay_ms * LAB_SCALE, 0.0)


# The 2009 testbed: switched Gigabit Ethernet, ~0.2 ms round trip between nodes (0.1 ms one-way).
GBE_2009_NATIVE = ShapingProfile("gbe-2009-native", 1_000_000_000, 0.1, 0.0)
TEN_GBE_NATIVE = ShapingProfile("10gbe-native", 10_000_000_000, 0.05, 0.0)

PROFILES: dict[str, ShapingProfile] = {
    "gbe-2009": _scaled("gbe-2009", GBE_2009_NATIVE.rate_bps or 0, GBE_2009_NATIVE.delay_ms),
    "10gbe": _scaled("10gbe", TEN_GBE_NATIVE.rate_bps or 0, TEN_GBE_NATIVE.delay_ms),
    "gbe-2009-native": GBE_2009_NATIVE,
    "10gbe-native": TEN_GBE_NATIVE,
    "none": ShapingProfile("none", None, 0.0, 0.0),
}

_RATE_UNITS = {
    "": 1,
    "bit": 1,
    "k": 10**3,
    "kbit": 10**3,
    "m": 10**6,
    "mbit": 10**6,
    "g": 10**9,
    "gbit": 10**9,
}


# netem's rate is 64-bit bytes/s; 10 Tbit/s is far above any NIC and keeps every figure exact.
MAX_RATE_BPS = 10 * 10**12


def parse_rate(text: str) -> int:
    """``100mbit``, ``1gbit``, ``2500000`` (bit/s) -> bits per second; decimal units like tc's."""
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if unit.endswith("bps"):
        unit = unit[:-3] + "bit"  # "mbps" is how people write it; treat as Mbit/s, not MByte/s
    try:
        value = float(number)
    except ValueError as exc:
        raise InvalidInput(f"rate {text!r} is not a rate (e.g. 100mbit, 1gbit)") from exc
    if unit not in _RATE_UNITS or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"rate {text!r} is not a rate (e.g. 100mbit, 1gbit)")
    bps = int(value * _RATE_UNITS[unit])
    if bps < 8000:
        raise InvalidInput(f"rate {text!r} is below 8 kbit/s")
    if bps > MAX_RATE_BPS:
        raise InvalidInput(f"rate {text!r} is above {format_rate(MAX_RATE_BPS)} (faster than any link)")
    return bps


def format_rate(bps: int) -> str:
    for unit, factor in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bps >= factor:
            return f"{bps / factor:g} {unit}"
    return f"{bps} bit/s"


def custom(rate: str | None, delay_ms: float, loss_pct: float = 0.0) -> ShapingProfile:
    """A profile from command-line values, validated."""
    if not math.isfinite(delay_ms) or delay_ms < 0 or delay_ms > 10_000:
        raise InvalidInput(f"delay {delay_ms!r} ms is out of range (0-10000)")
    if not math.isfinite(loss_pct) or loss_pct < 0 or loss_pct >= 100:
        raise InvalidInput(f"loss {loss_pct!r}% is out of range (0 <= loss < 100)")
    return ShapingProfile("custom", parse_rate(rate) if rate is not None else None, delay_ms, loss_pct)


def profile(name: str) -> ShapingProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidInput(f"unknown shaping profile {name!r} (known: {', '.join(PROFILES)})") from None


def check_port(port: int) -> int:
    return parse_port(port)


# -- pure builders ---------------------------------------------------------------------------------


def _netem_args(p: ShapingProfile) -> list[str]:
    args = ["netem", "limit", str(NETEM_LIMIT), "delay", f"{p.delay_ms * 1000:.0f}us"]
    if p.rate_bps is not None:
        args += ["rate", f"{p.rate_bps}bit"]
    if p.loss_pct > 0:
        args += ["loss", "random", f"{p.loss_pct:g}%"]
    return args


def apply_commands(p: ShapingProfile, dev: str, port: int) -> list[list[str]]:
    """tc argv lists that install ``p`` on ``dev`` for TCP port ``port`` (root qdisc absent)."""
    tc = ["tc"]
    cmds = [
        [*tc, "qdisc", "add", "dev", dev, "root", "handle", ROOT_HANDLE, "prio", "bands", "3",
         "priomap", *["2"] * 16],
        [*tc, "qdisc", "add", "dev", dev, "parent", BAND_FROM_PORT, "handle", "5cb:", *_netem_args(p)],
        [*tc, "qdisc", "add", "dev", dev, "parent", BAND_TO_PORT, "handle", "5cc:", *_netem_args(p)],
    ]  # fmt: skip
    # Both directions, IPv4 and IPv6: u32 at offset 20 (IPv4, no options) / 40 (IPv6) is the
    # TCP port pair. `match ip sport` reads the transport header after the IPv4 header length.
    matches = (
        ("ip", "1", ["ip", "sport"], BAND_FROM_PORT),
        ("ip", "2", ["ip", "dport"], BAND_TO_PORT),
        ("ipv6", "3", ["ip6", "sport"], BAND_FROM_PORT),
        ("ipv6", "4", ["ip6", "dport"], BAND_TO_PORT),
    )
    for proto, pref, match, flow in matches:
        cmds.append(
            [*tc, "filter", "add", "dev", dev, "parent", ROOT_HANDLE, "protocol", proto, "prio", pref,
             "u32", "match", *match, str(port), "0xffff", "flowid", flow]
        )  # fmt: skip
    return cmds


# -- parsers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootQdisc:
    kind: str
    handle: str
    default: bool  # the kernel's own default (handle 0:), which any tool may replace


def parse_root(qdiscs: list[dict[str, Any]]) -> RootQdisc | None:
    for q in qdiscs:
        if q.get("root"):
            handle = str(q.get("handle", "0:"))
            return RootQdisc(str(q.get("kind")), handle, handle in ("0:", ""))
    return None


def parse_netem(options: dict[str, Any]) -> tuple[int | None, float, float]:
    """(rate bit/s, one-way delay ms, loss %) from netem's JSON options (iproute2 6.1 layout:
    delay in seconds, rate in bytes/s, loss as a fraction)."""
    delay_s = float(options.get("delay", {}).get("delay", 0.0))
    rate_bytes = options.get("rate", {}).get("rate")
    loss = float(options.get("loss-random", {}).get("loss", 0.0))
    rate_bps = int(rate_bytes) * 8 if rate_bytes else None
    return rate_bps, round(delay_s * 1000, 3), round(loss * 100, 6)


def same_values(a: ShapingProfile, b: ShapingProfile) -> bool:
    """Equal as installed: tc keeps delays in its own time units, so a delay reads back only to
    within a microsecond or so (e.g. 500us may come back as 0.499 ms)."""
    return (
        a.rate_bps == b.rate_bps
        and abs(a.delay_ms - b.delay_ms) <= 0.002
        and abs(a.loss_pct - b.loss_pct) <= 1e-4
    )


def identify(rate_bps: int | None, delay_ms: float, loss_pct: float) -> ShapingProfile:
    """The named profile with these values, or a ``custom`` one."""
    for p in PROFILES.values():
        if same_values(p, ShapingProfile("", rate_bps, delay_ms, loss_pct)):
            return p
    return ShapingProfile("custom", rate_bps, delay_ms, loss_pct)


def _json_list(text: str) -> list[dict[str, Any]]:
    # tc prints nothing at all (not "[]") for a device without filters.
    data = json.loads(text) if text.strip() else []
    if not isinstance(data, list):
        raise SkycacheError(f"unexpected tc JSON output (not a list): {text[:80]!r}")
    return data


def parse_current(qdisc_json: str) -> ShapingProfile | None:
    """The profile installed by skycache according to ``tc -j qdisc show dev DEV``, or None."""
    qdiscs = _json_list(qdisc_json)
    root = parse_root(qdiscs)
    if root is None or root.handle != ROOT_HANDLE:
        return None
    for q in qdiscs:
        if q.get("kind") == "netem" and q.get("parent") == BAND_FROM_PORT:
            return identify(*parse_netem(q.get("options", {})))
    return None


@dataclass(frozen=True)
class PortMatch:
    """One u32 filter under skycache's root: which protocol, which port field, which band."""

    protocol: str  # ip | ipv6
    field: str  # sport | dport
    port: int
    flowid: str


def parse_filters(filter_json: str) -> list[PortMatch]:
    """The port matches of the u32 filters under skycache's root (``tc -j filter show dev DEV``)."""
    found = []
    for f in _json_list(filter_json):
        options = f.get("options", {})
        match = options.get("match")
        if f.get("parent") != ROOT_HANDLE or not match:
            continue  # the per-priority headers and hash tables tc lists beside each filter
        value, mask = int(match["value"], 16), int(match["mask"], 16)
        # The match is the 32-bit word holding sport (high half) and dport (low half).
        if mask == 0xFFFF0000:
            found.append(PortMatch(str(f.get("protocol")), "sport", value >> 16, str(options.get("flowid"))))
        elif mask == 0xFFFF:
            found.append(PortMatch(str(f.get("protocol")), "dport", value, str(options.get("flowid"))))
    return found


def wanted_filters(port: int) -> set[PortMatch]:
    """The matches :func:`apply_commands` installs for ``port``."""
    return {
        PortMatch(proto, field, port, BAND_FROM_PORT if field == "sport" else BAND_TO_PORT)
        for proto in ("ip", "ipv6")
        for field in ("sport", "dport")
    }


def tree_is(p: ShapingProfile, port: int, qdisc_json: str, filter_json: str) -> bool:
    """Whether tc's output shows exactly the tree :func:`apply_commands` builds for ``p`` and
    ``port``: the root prio, both netems with ``p``'s values and the four port filters. Anything
    else under skycache's root (what an interrupted run left, another limit, a band edited by hand)
    is replaced, not kept."""
    qdiscs = _json_list(qdisc_json)
    root = next((q for q in qdiscs if q.get("root")), None)
    if root is None or root.get("handle") != ROOT_HANDLE or root.get("kind") != "prio":
        return False
    options = root.get("options", {})
    if options.get("bands") != 3 or options.get("priomap") != [2] * 16:
        return False
    for band in (BAND_FROM_PORT, BAND_TO_PORT):
        netem = [q for q in qdiscs if q.get("kind") == "netem" and q.get("parent") == band]
        if len(netem) != 1 or netem[0].get("options", {}).get("limit") != NETEM_LIMIT:
            return False
        if not same_values(ShapingProfile("", *parse_netem(netem[0].get("options", {}))), p):
            return False
    matches = parse_filters(filter_json)
    return len(matches) == 4 and set(matches) == wanted_filters(port)


# -- planners --------------------------------------------------------------------------------------


def _qdiscs(runner: Runner, dev: str, ns: str | None) -> str:
    return runner.query(in_ns(ns, ["tc", "-j", "qdisc", "show", "dev", dev])).stdout


def _filters(runner: Runner, dev: str, ns: str | None) -> str:
    return runner.query(in_ns(ns, ["tc", "-j", "filter", "show", "dev", dev])).stdout


def _where(dev: str, ns: str | None) -> str:
    return dev if ns is None else f"{dev} in {ns}"


def _refuse_foreign(root: RootQdisc | None, dev: str) -> None:
    if root is not None and not root.default and root.handle != ROOT_HANDLE:
        raise NotOwned(f"the root qdisc of {dev} ({root.kind} {root.handle}) was not installed by skycache")


def del_root_argv(dev: str, ns: str | None = None) -> list[str]:
    """Removes skycache's root qdisc, and with it its netems and filters."""
    return in_ns(ns, ["tc", "qdisc", "del", "dev", dev, "root", "handle", ROOT_HANDLE])


def remove_action(dev: str, ns: str | None = None) -> Action:
    return Action.command(
        f"remove skycache's shaping from {_where(dev, ns)} (root {ROOT_HANDLE} with its netems and filters)",
        del_root_argv(dev, ns),
    )


def install_actions(p: ShapingProfile, dev: str, port: int, ns: str | None = None) -> list[Action]:
    """The tree of :func:`apply_commands` as plan actions. Only the root's action has an undo:
    deleting the root qdisc removes the netems and filters under it, so a failure anywhere after
    it leaves no half tree behind."""
    root, from_port, to_port, *filters = (
        Command(tuple(in_ns(ns, argv))) for argv in apply_commands(p, dev, port)
    )
    where = _where(dev, ns)
    return [
        Action(
            f"root prio qdisc {ROOT_HANDLE} on {where} (other traffic: a plain FIFO band)",
            (root,),
            (Command(tuple(del_root_argv(dev, ns))),),
        ),
        Action(f"netem on {BAND_FROM_PORT} (from port {port}: target -> initiator)", (from_port,)),
        Action(f"netem on {BAND_TO_PORT} (to port {port}: initiator -> target)", (to_port,)),
        Action(f"u32 filters: TCP port {port}, IPv4 and IPv6, to the netems", tuple(filters)),
    ]


def plan_unshape(runner: Runner, dev: str = "lo", *, ns: str | None = None) -> Plan:
    """Remove skycache's shaping from ``dev``: empty when there is none; refuses a root qdisc that
    skycache did not install (NotOwned)."""
    check_dev(dev)
    check_optional_ns(ns)
    plan = Plan(f"remove the shaping of {_where(dev, ns)}")
    root = parse_root(_json_list(_qdiscs(runner, dev, ns)))
    _refuse_foreign(root, dev)
    if root is not None and not root.default:
        plan.add(remove_action(dev, ns))
    return plan


def plan_shape(
    runner: Runner, profile: ShapingProfile, dev: str = "lo", port: int = 3260, *, ns: str | None = None
) -> Plan:
    """Shape TCP port ``port`` on ``dev`` (both directions) as ``profile``; other traffic untouched.

    Empty when exactly this tree is installed already; another skycache tree (another profile or
    port, or one an interrupted run left) is removed first; a root qdisc skycache did not install is
    refused (NotOwned). The profile ``none`` plans the removal.
    """
    check_dev(dev)
    check_optional_ns(ns)
    check_port(port)
    if profile.is_noop():
        return plan_unshape(runner, dev, ns=ns)
    plan = Plan(f"shape TCP port {port} on {_where(dev, ns)}: {profile.describe()}")
    qdisc_json = _qdiscs(runner, dev, ns)
    root = parse_root(_json_list(qdisc_json))
    _refuse_foreign(root, dev)
    if root is not None and root.handle == ROOT_HANDLE:
        if tree_is(profile, port, qdisc_json, _filters(runner, dev, ns)):
            return plan
        # Replaced whole rather than edited: the old tree is not restored when the new one fails
        # (the device is then left unshaped, never half shaped).
        plan.add(remove_action(dev, ns))
    return plan.extend(install_actions(profile, dev, port, ns))


# -- the imperative helpers other code calls: plan, then apply ------------------------------------


def current(runner: Runner, dev: str = "lo", *, ns: str | None = None) -> ShapingProfile | None:
    """The profile skycache installed on ``dev`` (read back from tc), or None when none is."""
    check_dev(dev)
    check_optional_ns(ns)
    return parse_current(_qdiscs(runner, dev, ns))


def remove(runner: Runner, dev: str = "lo", *, ns: str | None = None) -> None:
    """Remove skycache's shaping from ``dev``; idempotent; refuses a root qdisc that is not ours."""
    plan_unshape(runner, dev, ns=ns).apply(runner)


def apply(
    runner: Runner, profile: ShapingProfile, dev: str = "lo", port: int = 3260, *, ns: str | None = None
) -> None:
    """Apply :func:`plan_shape` (idempotent; NotOwned for a foreign root qdisc)."""
    plan_shape(runner, profile, dev, port, ns=ns).apply(runner)
