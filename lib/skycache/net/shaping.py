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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from skycache.errors import InvalidInput, NotOwned
from skycache.net.netns import check_dev, in_ns
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
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is not a TCP port (1-65535)")
    return port


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


def parse_current(qdisc_json: str) -> ShapingProfile | None:
    """The profile installed by skycache according to ``tc -j qdisc show dev DEV``, or None."""
    qdiscs: list[dict[str, Any]] = json.loads(qdisc_json) if qdisc_json.strip() else []
    root = parse_root(qdiscs)
    if root is None or root.handle != ROOT_HANDLE:
        return None
    for q in qdiscs:
        if q.get("kind") == "netem" and q.get("parent") == BAND_FROM_PORT:
            return identify(*parse_netem(q.get("options", {})))
    return None


def parse_filter_port(filter_json: str) -> int | None:
    """The port matched by the first u32 filter under our root (for idempotence checks)."""
    for f in json.loads(filter_json) if filter_json.strip() else []:
        match = f.get("options", {}).get("match")
        if f.get("parent") == ROOT_HANDLE and match and f.get("protocol") == "ip":
            value, mask = int(match["value"], 16), int(match["mask"], 16)
            # The match is a 32-bit word holding sport (high half) and dport (low half).
            return (value >> 16) if mask == 0xFFFF0000 else value
    return None


# -- thin layer that runs them ---------------------------------------------------------------------


def _qdiscs(runner: Runner, dev: str, ns: str | None) -> str:
    return runner.query(in_ns(ns, ["tc", "-j", "qdisc", "show", "dev", dev])).stdout


def current(runner: Runner, dev: str = "lo", *, ns: str | None = None) -> ShapingProfile | None:
    """The profile skycache installed on ``dev`` (read back from tc), or None when none is."""
    check_dev(dev)
    return parse_current(_qdiscs(runner, dev, ns))


def remove(runner: Runner, dev: str = "lo", *, ns: str | None = None) -> None:
    """Remove skycache's shaping from ``dev``; idempotent; refuses a root qdisc that is not ours."""
    check_dev(dev)
    root = parse_root(json.loads(_qdiscs(runner, dev, ns) or "[]"))
    if root is None or root.default:
        return
    if root.handle != ROOT_HANDLE:
        raise NotOwned(f"the root qdisc of {dev} ({root.kind} {root.handle}) was not installed by skycache")
    runner.run(in_ns(ns, ["tc", "qdisc", "del", "dev", dev, "root", "handle", ROOT_HANDLE]))


def apply(
    runner: Runner, profile: ShapingProfile, dev: str = "lo", port: int = 3260, *, ns: str | None = None
) -> None:
    """Shape TCP port ``port`` on ``dev`` (both directions) as ``profile``; other traffic untouched.

    Idempotent: nothing changes when the same profile and port are already installed; a different
    skycache profile is replaced; a root qdisc skycache did not install is refused (NotOwned).
    """
    check_dev(dev)
    check_port(port)
    qdisc_json = _qdiscs(runner, dev, ns)
    root = parse_root(json.loads(qdisc_json or "[]"))
    if root is not None and not root.default and root.handle != ROOT_HANDLE:
        raise NotOwned(f"the root qdisc of {dev} ({root.kind} {root.handle}) was not installed by skycache")
    if profile.is_noop():
        remove(runner, dev, ns=ns)
        return
    installed = parse_current(qdisc_json)
    if installed is not None:
        same = same_values(installed, profile)
        filters = runner.query(in_ns(ns, ["tc", "-j", "filter", "show", "dev", dev])).stdout
        if same and parse_filter_port(filters) == port:
            return
        remove(runner, dev, ns=ns)
    try:
        for argv in apply_commands(profile, dev, port):
            runner.run(in_ns(ns, argv))
    except BaseException:
        # Never leave half a tree (e.g. the root prio without its filters) behind.
        runner.run(in_ns(ns, ["tc", "qdisc", "del", "dev", dev, "root", "handle", ROOT_HANDLE]), check=False)
        raise
