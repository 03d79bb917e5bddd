"""``skycache bench nat``: what NAT costs on a VM's network path, measured on a real kernel.

Topology (three owned network namespaces joined by veth pairs, addresses from 198.18.0.0/15)::

    skycache-nb-vm            skycache-nb-wk (the worker)              skycache-nb-out
    vm0 198.18.1.2/24 ---- wk-vm 198.18.1.1/24   wk-out 198.18.2.1/24 ---- out0 198.18.2.2/24
    default via .1.1          ip_forward=1                              (routed: 198.18.1.0/24 via .2.1)
                              nat: MASQUERADE -s 198.18.1.0/24 -o wk-out (SKYCACHE-NAT-nb)

Two conditions on the same path: ``nat`` (MASQUERADE, so conntrack tracks every flow in the worker)
and ``routed`` (plain forwarding; no netfilter rule, so conntrack is not even hooked in the worker's
namespace, and the outside gets a route back instead). Each repetition builds the namespaces fresh,
so conntrack starts empty; conditions alternate order from one repetition to the next (ABBA), so
drift hits both alike.

Per condition and repetition:
- bulk: one iperf3 TCP stream VM -> outside for ``--bulk-seconds`` (``iperf3 -J``, receiver's rate);
- short flows: back-to-back TCP connections (connect, 1 byte each way, close) from a bounded Python
  loop in the VM namespace to a server outside (``python -m skycache.net.connload``);
- CPU: system-wide busy time (user+nice+system+irq+softirq+steal) and softirq time from /proc/stat,
  sampled around each phase, divided by the packets the worker forwarded (rx_packets of both worker
  interfaces, ``ip -s -j link``) or by the connections made. Both sides of the traffic (iperf3, the
  Python loop) share the CPUs, so absolute figures include them; the nat - routed difference is the
  cost of NAT and conntrack;
- conntrack: entries in the worker's table after the short flows (``conntrack -C``; TIME_WAIT
  entries stay 120 s) and the growth of the ``nf_conntrack`` slab cache (/proc/slabinfo) in bytes.

Output: ``<out>/nat-bench/<run-id>/`` with ``tidy.parquet`` (one row per condition x repetition),
``manifest.json`` and ``raw/`` (iperf3 JSON, connection-loop JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skycache.bench import tidy
from skycache.errors import InvalidInput, SkycacheError
from skycache.net import measure, nat, netns
from skycache.net.netns import Link, Route, Topology
from skycache.runner import Runner

SCENARIO = "nat-bench"
CONDITIONS = ("nat", "routed")
NS_VM, NS_WK, NS_OUT = "skycache-nb-vm", "skycache-nb-wk", "skycache-nb-out"
VM_NET = "198.18.1.0/24"
OUT_ADDR = "198.18.2.2"
NAT_KEY = "nb"
BULK_PORT = 5201
CONN_PORT = 5300

# The metrics of the summary table: column, label, unit divisor, unit label.
METRICS: tuple[tuple[str, str, float, str], ...] = (
    ("throughput_bps", "throughput", 1e6, "Mbit/s"),
    ("cpu_ns_per_packet", "CPU per packet", 1e3, "us"),
    ("softirq_ns_per_packet", "softirq per packet", 1e3, "us"),
    ("conn_per_s", "connections/s", 1.0, "1/s"),
    ("cpu_ns_per_conn", "CPU per connection", 1e3, "us"),
    ("conntrack_entries", "conntrack entries", 1.0, ""),
    ("conntrack_bytes", "conntrack memory", 1024.0, "KiB"),
)


@dataclass(frozen=True)
class NatBenchOptions:
    repetitions: int = 3
    bulk_seconds: float = 5.0
    conn_seconds: float = 5.0
    max_conns: int = 20_000
    out: Path = Path("results")
    where: str = "host"

    def validate(self) -> None:
        if not 1 <= self.repetitions <= 50:
            raise InvalidInput(f"--repetitions {self.repetitions} is out of range (1-50)")
        for name, value in (("--bulk-seconds", self.bulk_seconds), ("--conn-seconds", self.conn_seconds)):
            if not 0.5 <= value <= 300:
                raise InvalidInput(f"{name} {value:g} is out of range (0.5-300)")
        if not 1 <= self.max_conns <= 25_000:
            # Below the ephemeral port range (32768-60999): TIME_WAIT would exhaust it otherwise.
            raise InvalidInput(f"--max-conns {self.max_conns} is out of range (1-25000)")
        if self.where not in ("host", "lab"):
            raise InvalidInput(f"--where {self.where!r} must be 'lab' or 'host'")


def topology(condition: str) -> Topology:
    routes = [Route(NS_VM, "default", "198.18.1.1")]
    if condition == "routed":
        routes.append(Route(NS_OUT, VM_NET, "198.18.2.1"))
    return Topology(
        namespaces=(NS_VM, NS_WK, NS_OUT),
        links=(
            Link(NS_VM, "vm0", "198.18.1.2/24", NS_WK, "wk-vm", "198.18.1.1/24"),
            Link(NS_WK, "wk-out", "198.18.2.1/24", NS_OUT, "out0", OUT_ADDR + "/24"),
        ),
        routes=tuple(routes),
        forwarders=(NS_WK,),
    )


def schedule(repetitions: int) -> list[tuple[int, str]]:
    """ABBA order: (rep, condition) pairs, alternating which condition goes first."""
    out = []
    for rep in range(repetitions):
        order = CONDITIONS if rep % 2 == 0 else tuple(reversed(CONDITIONS))
        out += [(rep, c) for c in order]
    return out


# -- one measurement -------------------------------------------------------------------------------


def _forwarded(
    before: dict[str, measure.LinkCounters], after: dict[str, measure.LinkCounters]
) -> tuple[int, int]:
    """Packets and bytes the worker received on its two interfaces (= what it forwarded)."""
    packets = sum(after[d].rx_packets - before[d].rx_packets for d in ("wk-vm", "wk-out"))
    nbytes = sum(after[d].rx_bytes - before[d].rx_bytes for d in ("wk-vm", "wk-out"))
    return packets, nbytes


def _per(ns: float, count: int) -> float:
    return ns / count if count > 0 else math.nan


def measure_condition(
    runner: Runner, condition: str, rep: int, opts: NatBenchOptions, raw: Path
) -> dict[str, Any]:
    topo = topology(condition)
    netns.build(runner, topo)
    try:
        if condition == "nat":
            nat.enable(runner, NAT_KEY, VM_NET, "wk-out", ns=NS_WK)
        # Bulk flow.
        links0, cpu0 = measure.link_stats(runner, NS_WK), measure.cpu_times(runner)
        bulk, bulk_json = measure.iperf3(
            runner, client_ns=NS_VM, server_ns=NS_OUT, server_addr=OUT_ADDR, port=BULK_PORT,
            seconds=opts.bulk_seconds,
        )  # fmt: skip
        cpu1, links1 = measure.cpu_times(runner), measure.link_stats(runner, NS_WK)
        (raw / f"iperf3-{condition}-rep{rep}.json").write_text(bulk_json)
        packets, nbytes = _forwarded(links0, links1)
        busy_ns = measure.ticks_to_ns(cpu1.busy - cpu0.busy)
        softirq_ns = measure.ticks_to_ns(cpu1.softirq - cpu0.softirq)
        # Short flows.
        slab0, cpu2 = measure.conntrack_slab(runner), measure.cpu_times(runner)
        flows = measure.short_flows(
            runner, client_ns=NS_VM, server_ns=NS_OUT, server_addr=OUT_ADDR, port=CONN_PORT,
            seconds=opts.conn_seconds, max_conns=opts.max_conns,
        )  # fmt: skip
        cpu3, slab1 = measure.cpu_times(runner), measure.conntrack_slab(runner)
        entries = measure.conntrack_count(runner, NS_WK)
        (raw / f"connload-{condition}-rep{rep}.json").write_text(json.dumps(flows) + "\n")
        conns = int(flows["connections"])
        if conns == 0:
            raise SkycacheError(f"{condition}: no short connection succeeded ({flows.get('first_error')})")
        conn_busy_ns = measure.ticks_to_ns(cpu3.busy - cpu2.busy)
        ct_bytes = max(0, slab1.active_bytes - slab0.active_bytes)
        return {
            "condition": condition,
            "repetition": rep,
            "throughput_bps": bulk.bits_per_second,
            "bulk_bytes": bulk.bytes,
            "bulk_seconds": bulk.seconds,
            "retransmits": bulk.retransmits,
            "packets": packets,
            "bytes_forwarded": nbytes,
            "cpu_ns_per_packet": _per(busy_ns, packets),
            "softirq_ns_per_packet": _per(softirq_ns, packets),
            "conn_per_s": float(flows["conn_per_s"]),
            "connections": conns,
            "conn_errors": int(flows["errors"]),
            "cpu_ns_per_conn": _per(conn_busy_ns, conns),
            "softirq_ns_per_conn": _per(measure.ticks_to_ns(cpu3.softirq - cpu2.softirq), conns),
            "conntrack_entries": entries,
            "conntrack_bytes": ct_bytes,
            "conntrack_slab_objsize": slab1.objsize,
        }
    finally:
        if condition == "nat":
            nat.disable(runner, NAT_KEY, ns=NS_WK)
        netns.teardown(runner, topo)


# -- run directory and manifest --------------------------------------------------------------------


def new_run_dir(out: Path) -> Path:
    base = out / SCENARIO
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 1000):
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()  # exclusive: results are never overwritten
            return path
        except FileExistsError:
            continue
    raise SkycacheError(f"cannot create a new run directory under {base}")


def _accel() -> str:
    if os.environ.get("SKYCACHE_IN_LAB") != "1":
        return "none"
    try:
        sources = Path("/sys/devices/system/clocksource/clocksource0/available_clocksource").read_text()
    except OSError:
        return "unknown"
    return "kvm" if "kvm-clock" in sources else "tcg"


def environment(runner: Runner) -> dict[str, Any]:
    def q(argv: list[str]) -> str:
        try:
            return runner.query(argv, check=False, timeout_s=20).stdout.strip()
        except SkycacheError:
            return ""

    try:
        sky = version("skycache")
    except PackageNotFoundError:
        sky = "unknown"
    commit = q(["git", "rev-parse", "HEAD"]) or "unknown"
    if commit != "unknown" and q(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "+dirty"
    return {
        "where": "lab" if os.environ.get("SKYCACHE_IN_LAB") == "1" else "host",
        "accel": _accel(),
        "kernel": os.uname().release,
        "hostname": os.uname().nodename,
        "cpus": os.cpu_count(),
        "iperf3_version": q(["iperf3", "--version"]).splitlines()[0] if q(["iperf3", "--version"]) else "",
        "iptables_version": q(["iptables", "--version"]),
        "skycache_version": sky,
        "git_commit": commit,
    }


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = run_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(run_dir / "manifest.json")


# -- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval of the mean (NaN interval for fewer than two values)."""
    from scipy import stats

    a = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if a.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(a.mean())
    if a.size < 2:
        return Interval(m, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return Interval(m, m - half, m + half, int(a.size))


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """mean(a) - mean(b) with a Welch t interval (unequal variances)."""
    from scipy import stats

    xa = np.asarray([v for v in a if math.isfinite(v)], dtype=float)
    xb = np.asarray([v for v in b if math.isfinite(v)], dtype=float)
    if xa.size == 0 or xb.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    d = float(xa.mean() - xb.mean())
    if xa.size < 2 or xb.size < 2:
        return Interval(d, math.nan, math.nan, int(min(xa.size, xb.size)))
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(d, d, d, int(min(xa.size, xb.size)))
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, dof)) * se
    return Interval(d, d - half, d + half, int(min(xa.size, xb.size)))


@dataclass(frozen=True)
class SummaryRow:
    metric: str
    label: str
    unit: str
    nat: Interval
    routed: Interval
    difference: Interval  # nat - routed

    @property
    def significant(self) -> bool:
        d = self.difference
        return math.isfinite(d.low) and (d.low > 0 or d.high < 0)


def summarize(df: pd.DataFrame) -> list[SummaryRow]:
    rows = []
    for column, label, scale, unit in METRICS:
        if column not in df.columns:
            continue
        nat_v = [float(x) / scale for x in df.loc[df["condition"] == "nat", column]]
        routed_v = [float(x) / scale for x in df.loc[df["condition"] == "routed", column]]
        rows.append(
            SummaryRow(
                column,
                label,
                unit,
                t_interval(nat_v),
                t_interval(routed_v),
                welch_difference(nat_v, routed_v),
            )
        )
    return rows


def _fmt(iv: Interval) -> str:
    if not math.isfinite(iv.mean):
        return "-"
    if not math.isfinite(iv.low):
        return f"{iv.mean:.4g}"
    return f"{iv.mean:.4g} [{iv.low:.4g}, {iv.high:.4g}]"


def format_table(rows: list[SummaryRow], repetitions: int) -> str:
    head = ("metric", "NAT", "routed", "NAT - routed")
    body = [
        (f"{r.label}" + (f" ({r.unit})" if r.unit else ""), _fmt(r.nat), _fmt(r.routed),
         _fmt(r.difference) + ("" if r.significant else "  (not significant)"))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"mean [95% t interval] over {repetitions} repetition(s) per condition, conditions interleaved"
    )
    return "\n".join(lines)


def summary_json(rows: list[SummaryRow]) -> list[dict[str, Any]]:
    return [
        {"metric": r.metric, "unit": r.unit, "nat": asdict(r.nat), "routed": asdict(r.routed),
         "nat_minus_routed": asdict(r.difference), "significant": r.significant}
        for r in rows
    ]  # fmt: skip


# -- the whole run ---------------------------------------------------------------------------------


@dataclass
class NatBenchResult:
    run_dir: Path
    table: pd.DataFrame
    summary: list[SummaryRow] = field(default_factory=list)


def run(
    runner: Runner, opts: NatBenchOptions, progress: Callable[[str], None] = lambda _: None
) -> NatBenchResult:
    """Measure in this kernel (``--where host`` or already inside the lab)."""
    opts.validate()
    for ns in (NS_VM, NS_WK, NS_OUT):
        netns.delete(runner, ns)  # a crashed earlier run's namespaces are ours: clear them
    run_dir = new_run_dir(opts.out)
    raw = run_dir / "raw"
    raw.mkdir()
    run_id = run_dir.name
    env = environment(runner)
    started = time.time()
    manifest: dict[str, Any] = {
        "format": 1,
        "kind": SCENARIO,
        "scenario": SCENARIO,
        "run_id": run_id,
        "started": _iso(started),
        "status": "running",
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "shaping": {"name": "none", "detail": "(no tc shaping on the measured path)"},
        "topology": [asdict(link) for link in topology("nat").links],
        "cpu_accounting": "/proc/stat aggregate busy (user+nice+system+irq+softirq+steal) and softirq, "
        "per packet forwarded by the worker (rx_packets of its veths) or per connection",
        **env,
    }
    _write_manifest(run_dir, manifest)
    rows = []
    try:
        for rep, condition in schedule(opts.repetitions):
            progress(f"rep {rep + 1}/{opts.repetitions}: {condition}")
            row = measure_condition(runner, condition, rep, opts, raw)
            rows.append(row)
            progress(
                f"  {condition}: {row['throughput_bps'] / 1e6:.0f} Mbit/s, {row['conn_per_s']:.0f} conn/s, "
                f"{row['cpu_ns_per_packet'] / 1e3:.2f} us CPU/packet, "
                f"{row['conntrack_entries']} conntrack entries"
            )
    except BaseException:
        manifest.update(status="failed", ended=_iso(time.time()))
        _write_manifest(run_dir, manifest)
        raise
    df = pd.DataFrame(rows)
    df.insert(0, "run_id", run_id)
    df.insert(1, "scenario", SCENARIO)
    df.insert(2, "where", env["where"])
    df["accel"] = env["accel"]
    tidy.write_table(run_dir, df)  # tidy.parquet and tidy.csv
    summary = summarize(df)
    manifest.update(status="ok", ended=_iso(time.time()), summary=summary_json(summary))
    _write_manifest(run_dir, manifest)
    (run_dir / "summary.txt").write_text(format_table(summary, opts.repetitions) + "\n")
    return NatBenchResult(run_dir, df, summary)


def lab_argv(opts: NatBenchOptions, skycache_bin: str) -> list[str]:
    """``skycache lab run`` that runs this measurement in the lab's kernel, writing to ``opts.out``."""
    return [
        skycache_bin, "lab", "run", "--memory", "2G", "--",
        skycache_bin, "bench", "nat", "--where", "host", "--repetitions", str(opts.repetitions),
        "--bulk-seconds", f"{opts.bulk_seconds:g}", "--conn-seconds", f"{opts.conn_seconds:g}",
        "--max-conns", str(opts.max_conns), "--out", str(opts.out),
    ]  # fmt: skip


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
