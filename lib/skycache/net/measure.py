"""Measuring traffic between namespaces: iperf3, the connection loop, and the kernel's accounting.

Pure parsers (iperf3 ``-J``, /proc/stat, ``ip -s -j link``, /proc/slabinfo, ``conntrack -C``) sit
beside thin functions that run the commands through the runner. Servers run in a background thread
(a blocking :meth:`Runner.query` with a time limit), so nothing outlives a measurement.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skycache.errors import SkycacheError
from skycache.net.netns import in_ns, python_argv
from skycache.runner import CommandError, Completed, Runner

CONNLOAD = "skycache.net.connload"


class MeasurementError(SkycacheError):
    """A measurement tool failed or reported an error."""


# -- parsers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IperfResult:
    bits_per_second: float  # received by the server (what crossed the path)
    bytes: int
    seconds: float
    retransmits: int


def parse_iperf3(text: str) -> IperfResult:
    """The receiver's totals from ``iperf3 -J`` output; iperf3 puts failures into an "error" key."""
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeasurementError(f"iperf3 printed no JSON: {text.strip()[:200]!r}") from exc
    if "error" in data:
        raise MeasurementError(f"iperf3: {data['error']}")
    end = data.get("end", {})
    received = end.get("sum_received")
    if not received:
        raise MeasurementError("iperf3 JSON has no end.sum_received (test did not finish)")
    sent = end.get("sum_sent", {})
    return IperfResult(
        float(received["bits_per_second"]),
        int(received["bytes"]),
        float(received["seconds"]),
        int(sent.get("retransmits", 0)),
    )


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate CPU time from the first line of /proc/stat, in clock ticks (USER_HZ)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def busy(self) -> int:
        # Everything but idle and iowait: the CPU that did work, in any context.
        return self.user + self.nice + self.system + self.irq + self.softirq + self.steal


def parse_proc_stat(text: str) -> CpuTimes:
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            v = [int(x) for x in fields[1:9]]
            return CpuTimes(*v)
    raise MeasurementError("/proc/stat has no aggregate 'cpu' line")


def ticks_to_ns(ticks: int) -> float:
    return ticks * 1e9 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class LinkCounters:
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int


def parse_link_stats(text: str) -> dict[str, LinkCounters]:
    """Per-interface counters from ``ip -s -j link show``."""
    out = {}
    for link in json.loads(text or "[]"):
        stats = link.get("stats64") or link.get("stats") or {}
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        out[str(link["ifname"])] = LinkCounters(
            int(rx.get("packets", 0)),
            int(tx.get("packets", 0)),
            int(rx.get("bytes", 0)),
            int(tx.get("bytes", 0)),
        )
    return out


@dataclass(frozen=True)
class Slab:
    active_objs: int
    objsize: int

    @property
    def active_bytes(self) -> int:
        return self.active_objs * self.objsize


def parse_slabinfo(text: str, cache: str = "nf_conntrack") -> Slab:
    """One cache's line of /proc/slabinfo (version 2.1); absent -> zero (module not loaded)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == cache:
            return Slab(int(fields[1]), int(fields[3]))
    return Slab(0, 0)


def parse_conntrack_count(text: str) -> int:
    """``conntrack -C`` prints one number (the entries of the caller's namespace)."""
    return int(text.strip().splitlines()[-1])


# -- runners ---------------------------------------------------------------------------------------


class Background:
    """A bounded command in a thread (e.g. a server); :meth:`join` returns its result or error."""

    def __init__(self, runner: Runner, argv: Sequence[str], timeout_s: float) -> None:
        self._result: Completed | None = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._result = runner.query(list(argv), timeout_s=timeout_s, check=False)
            except BaseException as exc:  # handed to join()
                self._error = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def finished_early(self) -> str | None:
        """If the command already ended (a server that should still run), why; else None."""
        if self._thread.is_alive():
            return None
        if self._error is not None:
            return str(self._error)
        assert self._result is not None
        detail = (self._result.stderr.strip() or self._result.stdout.strip())[-300:]
        return f"exit {self._result.returncode}: {detail}"

    def join(self, timeout_s: float) -> Completed:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise MeasurementError("background command did not finish in time")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def wait_listening(
    runner: Runner,
    ns: str | None,
    port: int,
    *,
    addr: str | None = None,
    udp: bool = False,
    server: Background | None = None,
    timeout_s: float = 60,
) -> None:
    """Poll ``ss`` until something listens on ``port`` in ``ns`` (bounded)."""
    flag = "-Hluan" if udp else "-Hltn"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = runner.query(in_ns(ns, ["ss", flag, f"sport = :{port}"]), check=False).stdout
        if out.strip() and (addr is None or f"{addr}:{port} " in out):
            return
        why = server.finished_early() if server is not None else None
        if why is not None:
            raise MeasurementError(f"the server for port {port} in {ns or 'the root namespace'} ended: {why}")
        time.sleep(0.1)
    raise MeasurementError(
        f"nothing listens on port {port} in {ns or 'the root namespace'} after {timeout_s:g}s"
    )


def iperf3(
    runner: Runner,
    *,
    client_ns: str | None,
    server_ns: str | None,
    server_addr: str,
    port: int,
    seconds: float,
    extra: Sequence[str] = (),
) -> tuple[IperfResult, str]:
    """One iperf3 TCP test from ``client_ns`` to a one-off server in ``server_ns``; (result, raw JSON)."""
    server = Background(
        runner,
        in_ns(server_ns, ["iperf3", "-s", "-1", "-B", server_addr, "-p", str(port)]),
        timeout_s=seconds + 60,
    )
    wait_listening(runner, server_ns, port, addr=server_addr, server=server)
    argv = ["iperf3", "-c", server_addr, "-p", str(port), "-t", f"{seconds:g}", "-J", *extra]
    try:
        out = runner.query(in_ns(client_ns, argv), timeout_s=seconds + 60, check=False)
    finally:
        server.join(seconds + 90)
    return parse_iperf3(out.stdout), out.stdout


def connload(runner: Runner, ns: str | None, *args: str, timeout_s: float) -> dict[str, Any]:
    out = runner.query(in_ns(ns, python_argv(CONNLOAD, *args)), timeout_s=timeout_s)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def short_flows(
    runner: Runner,
    *,
    client_ns: str,
    server_ns: str,
    server_addr: str,
    port: int,
    seconds: float,
    max_conns: int,
) -> dict[str, Any]:
    """Back-to-back short TCP connections from ``client_ns`` to a connload server in ``server_ns``."""
    server = Background(
        runner,
        in_ns(server_ns, python_argv(CONNLOAD, "serve", "--bind", server_addr, "--port", str(port),
                                     "--seconds", f"{seconds + 30:g}")),
        timeout_s=seconds + 60,
    )  # fmt: skip
    wait_listening(runner, server_ns, port, addr=server_addr, server=server)
    try:
        args = ["connect", "--to", server_addr, "--port", str(port), "--seconds", f"{seconds:g}"]
        args += ["--max", str(max_conns), "--stop-server"]
        result = connload(runner, client_ns, *args, timeout_s=seconds + 60)
    finally:
        server.join(seconds + 90)
    return result


def probe(runner: Runner, ns: str, to: str, proto: str, port: int = 0, timeout_s: float = 2.0) -> bool:
    """One TCP/UDP/ICMP attempt from ``ns`` to ``to``; True when the peer answered."""
    args = ["probe", "--to", to, "--proto", proto, "--port", str(port), "--timeout", f"{timeout_s:g}"]
    return bool(connload(runner, ns, *args, timeout_s=timeout_s + 30)["reachable"])


def probes(runner: Runner, ns: str, targets: Sequence[str], timeout_s: float = 2.0) -> dict[str, bool]:
    """Several attempts from ``ns`` in one process: ``{"tcp:198.18.2.2:7000": True, ...}``."""
    argv = python_argv(CONNLOAD, "probes", *targets, "--timeout", f"{timeout_s:g}")
    out = runner.query(in_ns(ns, argv), timeout_s=len(targets) * (timeout_s + 5) + 30)
    return {str(r["target"]): bool(r["reachable"]) for r in json.loads(out.stdout)}


def stop_server(runner: Runner, ns: str | None, addr: str, port: int) -> None:
    """Ask a ``connload serve`` to exit now (it would otherwise run until its time limit)."""
    connload(runner, ns, "stop", "--to", addr, "--port", str(port), timeout_s=30)


def tcp_rtt_samples(runner: Runner, ns: str | None, to: str, port: int, count: int = 20) -> list[float]:
    """Every TCP connect time of ``count`` attempts, in ms (for a comparison with its own spread)."""
    args = ["rtt", "--to", to, "--port", str(port), "--count", str(count)]
    result = connload(runner, ns, *args, timeout_s=count * 6 + 30)
    return [float(x) for x in result["samples_ms"]]


def cpu_times(runner: Runner) -> CpuTimes:
    return parse_proc_stat(runner.query(["cat", "/proc/stat"]).stdout)


def link_stats(runner: Runner, ns: str | None) -> dict[str, LinkCounters]:
    return parse_link_stats(runner.query(in_ns(ns, ["ip", "-s", "-j", "link", "show"])).stdout)


def conntrack_slab(runner: Runner) -> Slab:
    out = runner.query(["cat", "/proc/slabinfo"], check=False)
    return parse_slabinfo(out.stdout) if out.returncode == 0 else Slab(0, 0)


def conntrack_count(runner: Runner, ns: str | None) -> int:
    """Entries in ``ns``'s conntrack table (0 when conntrack is not active there)."""
    try:
        out = runner.query(in_ns(ns, ["conntrack", "-C"]))
    except CommandError:
        return 0
    return parse_conntrack_count(out.stdout)
