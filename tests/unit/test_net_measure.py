"""Parsers of recorded measurement output, the connection helper, and nat-bench statistics."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from skycache.bench import natbench
from skycache.errors import InvalidInput
from skycache.net import connload, measure

DATA = Path(__file__).parent / "data" / "net"


def test_parse_recorded_iperf3() -> None:
    shaped = measure.parse_iperf3((DATA / "iperf3-shaped-3260.json").read_text())
    assert shaped.bits_per_second == pytest.approx(99.58e6, rel=1e-3)
    nat = measure.parse_iperf3((DATA / "iperf3-nat.json").read_text())
    assert nat.bits_per_second > 1e9 and nat.bytes > 0 and nat.seconds > 4


def test_iperf3_errors_are_reported() -> None:
    with pytest.raises(measure.MeasurementError, match="unable to connect"):
        measure.parse_iperf3(json.dumps({"start": {}, "end": {}, "error": "unable to connect to server"}))
    with pytest.raises(measure.MeasurementError, match="no JSON"):
        measure.parse_iperf3("iperf3: error")


def test_parse_proc_files() -> None:
    cpu = measure.parse_proc_stat((DATA / "proc-stat.txt").read_text())
    assert (cpu.user, cpu.system, cpu.softirq) == (908, 7295, 835)
    assert cpu.busy == 908 + 7295 + 59 * 0 + 835  # iowait (59) is not busy
    slab = measure.parse_slabinfo((DATA / "slabinfo.txt").read_text())
    assert (slab.active_objs, slab.objsize, slab.active_bytes) == (16, 256, 4096)
    assert measure.parse_slabinfo("slabinfo - version: 2.1\n") == measure.Slab(0, 0)
    assert measure.parse_conntrack_count("2\n") == 2


def test_parse_recorded_link_stats() -> None:
    stats = measure.parse_link_stats((DATA / "ip-s-j-link-wk.json").read_text())
    assert stats["skx-wkv"].rx_packets == 3 and stats["skx-wkv"].tx_bytes == 176


def test_connload_short_flows_and_probes_on_loopback() -> None:
    port = 39217
    result: dict[str, object] = {}
    server = threading.Thread(target=lambda: result.update(connload.serve("127.0.0.1", port, 30)))
    server.start()
    try:
        for _ in range(100):
            if connload.probe("127.0.0.1", "tcp", port, 0.5)["reachable"]:
                break
            time.sleep(0.1)
        flows = connload.connect("127.0.0.1", port, 20, 50, stop_server=True)
    finally:
        server.join(15)
    assert flows["connections"] == 50 and flows["errors"] == 0
    assert result["stopped_by_client"] is True
    assert connload.probe("127.0.0.1", "tcp", port, 0.5)["reachable"] is False  # server gone


def test_connload_refuses_other_addresses() -> None:
    with pytest.raises(SystemExit, match=r"outside 198\.18\.0\.0/15"):
        connload.main(["probe", "--to", "10.1.2.3", "--proto", "tcp", "--port", "80"])
    with pytest.raises(SystemExit, match="outside"):
        connload.main(["probes", "icmp:192.0.2.1"])


def test_schedule_is_abba() -> None:
    assert natbench.schedule(2) == [(0, "nat"), (0, "routed"), (1, "routed"), (1, "nat")]


def test_t_interval_and_welch() -> None:
    iv = natbench.t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert iv.mean == 2.0 and iv.low == pytest.approx(2 - 4.3027 / math.sqrt(3), rel=1e-4)
    assert math.isnan(natbench.t_interval([5.0]).low)
    d = natbench.welch_difference([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    assert d.mean == 9.0 and d.low > 0


def test_summary_table() -> None:
    df = pd.DataFrame(
        [
            {"condition": c, "repetition": r, "throughput_bps": t, "cpu_ns_per_packet": p, "conn_per_s": k,
             "cpu_ns_per_conn": 1e5, "conntrack_entries": e, "conntrack_bytes": 0.0}
            for c, r, t, p, k, e in [
                ("nat", 0, 9e8, 3000.0, 500.0, 2500), ("nat", 1, 9.2e8, 3100.0, 520.0, 2600),
                ("routed", 0, 1e9, 2500.0, 600.0, 0), ("routed", 1, 1.02e9, 2550.0, 610.0, 0),
            ]
        ]
    )  # fmt: skip
    rows = natbench.summarize(df)
    by = {r.metric: r for r in rows}
    assert by["throughput_bps"].nat.mean == pytest.approx(910.0)  # Mbit/s
    assert by["cpu_ns_per_packet"].difference.mean == pytest.approx((3050 - 2525) / 1e3)
    table = natbench.format_table(rows, 2)
    assert table.splitlines()[0].split() == ["metric", "NAT", "routed", "NAT", "-", "routed"]
    assert "throughput (Mbit/s)" in table and "over 2 repetition(s)" in table


def test_options_validated() -> None:
    with pytest.raises(InvalidInput, match="--repetitions 0"):
        natbench.NatBenchOptions(repetitions=0).validate()
    with pytest.raises(InvalidInput, match="--where"):
        natbench.NatBenchOptions(where="moon").validate()


def test_nat_topology_uses_bench_range_only() -> None:
    for cond in natbench.CONDITIONS:
        natbench.topology(cond).validate()
    assert any(r.ns == natbench.NS_OUT for r in natbench.topology("routed").routes)
    assert not any(r.ns == natbench.NS_OUT for r in natbench.topology("nat").routes)
