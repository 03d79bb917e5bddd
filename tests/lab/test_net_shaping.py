"""Shaping verified by measurement on the real kernel: rate and delay on the iSCSI port within 10%,
other ports untouched, idempotent apply, exact removal, foreign qdiscs refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from skycache.errors import NotOwned
from skycache.net import measure, netns, shaping
from skycache.net.netns import in_ns, python_argv
from skycache.runner import Runner

PORT = 3260
OTHER = 5201


@pytest.fixture
def shaped_lo(runner: Runner) -> Iterator[shaping.ShapingProfile]:
    prof = shaping.PROFILES["gbe-2009"]
    shaping.remove(runner, "lo")
    shaping.apply(runner, prof, "lo", PORT)
    yield prof
    shaping.remove(runner, "lo")


def test_profile_reads_back_and_apply_is_idempotent(
    runner: Runner, shaped_lo: shaping.ShapingProfile
) -> None:
    assert shaping.current(runner, "lo") == shaped_lo
    before = runner.query(["tc", "-j", "qdisc", "show", "dev", "lo"]).stdout
    recording = Runner(dry_run=True)
    shaping.apply(recording, shaped_lo, "lo", PORT)
    assert recording.plan == []  # nothing to change
    assert runner.query(["tc", "-j", "qdisc", "show", "dev", "lo"]).stdout == before
    # Another profile replaces ours in place.
    shaping.apply(runner, shaping.PROFILES["10gbe"], "lo", PORT)
    assert shaping.current(runner, "lo") == shaping.PROFILES["10gbe"]


def test_rate_on_iscsi_port_within_10_percent_and_other_port_untouched(
    runner: Runner, shaped_lo: shaping.ShapingProfile
) -> None:
    assert shaped_lo.rate_bps is not None
    shaped, _ = measure.iperf3(
        runner, client_ns=None, server_ns=None, server_addr="127.0.0.1", port=PORT, seconds=5
    )
    other, _ = measure.iperf3(
        runner, client_ns=None, server_ns=None, server_addr="127.0.0.1", port=OTHER, seconds=3
    )
    print(
        f"iperf3 port {PORT}: {shaped.bits_per_second / 1e6:.1f} Mbit/s; port {OTHER}: "
        f"{other.bits_per_second / 1e6:.1f} Mbit/s; profile {shaped_lo.rate_bps / 1e6:g} Mbit/s"
    )
    # The shaped port never exceeds the profile's rate, and other traffic is not held to it.
    assert shaped.bits_per_second <= 1.10 * shaped_lo.rate_bps
    assert other.bits_per_second > 2 * shaped_lo.rate_bps
    if other.bits_per_second < 4 * shaped_lo.rate_bps:
        # Under TCG on an overloaded host the unshaped stream itself barely beats the profile: the
        # sender is CPU-starved and cannot fill the shaped link, so the lower bound says nothing
        # about tc (seen: 33.7 of 50 Mbit/s shaped while unshaped reached only 144 Mbit/s).
        pytest.skip(
            f"lab CPU-starved (unshaped {other.bits_per_second / 1e6:.0f} Mbit/s < 4x the profile): "
            f"upper bound held ({shaped.bits_per_second / 1e6:.1f} Mbit/s), lower bound not checkable"
        )
    assert shaped.bits_per_second == pytest.approx(shaped_lo.rate_bps, rel=0.10)


def test_delay_on_iscsi_port_within_10_percent(runner: Runner, shaped_lo: shaping.ShapingProfile) -> None:
    servers = [
        measure.Background(
            runner,
            python_argv(
                "skycache.net.connload", "serve", "--bind", "127.0.0.1", "--port", str(p), "--seconds", "60"
            ),
            timeout_s=90,
        )
        for p in (PORT, OTHER)
    ]
    try:
        for p, server in zip((PORT, OTHER), servers, strict=True):
            measure.wait_listening(runner, None, p, addr="127.0.0.1", server=server)
        base, base_median = measure.tcp_rtt_ms(runner, None, "127.0.0.1", OTHER, count=100)
        rtt, rtt_median = measure.tcp_rtt_ms(runner, None, "127.0.0.1", PORT, count=100)
    finally:
        for p in (PORT, OTHER):
            measure.stop_server(runner, None, "127.0.0.1", p)
        for s in servers:
            s.join(60)
    added = rtt - base
    print(
        f"TCP connect RTT (min/median of 100) port {PORT}: {rtt:.3f}/{rtt_median:.3f} ms, port {OTHER}: "
        f"{base:.3f}/{base_median:.3f} ms; added (min) {added:.3f} ms, expected {2 * shaped_lo.delay_ms:g} ms"
    )
    # A connect is one round trip; the SYN and the SYN/ACK each cross one shaped direction.
    assert added == pytest.approx(2 * shaped_lo.delay_ms, rel=0.10)
    assert base < shaped_lo.delay_ms  # the other port saw no added delay


def test_unshape_removes_everything(runner: Runner) -> None:
    shaping.apply(runner, shaping.PROFILES["gbe-2009"], "lo", PORT)
    shaping.remove(runner, "lo")
    assert shaping.current(runner, "lo") is None
    root = shaping.parse_root(json.loads(runner.query(["tc", "-j", "qdisc", "show", "dev", "lo"]).stdout))
    assert root is None or root.default
    shaping.remove(runner, "lo")  # idempotent


def test_foreign_root_qdisc_is_refused(runner: Runner) -> None:
    ns = "skycache-t-shape"
    netns.delete(runner, ns)
    runner.run(["ip", "netns", "add", ns])
    try:
        runner.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        runner.run(in_ns(ns, ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio"]))
        with pytest.raises(NotOwned):
            shaping.apply(runner, shaping.PROFILES["gbe-2009"], "lo", PORT, ns=ns)
        with pytest.raises(NotOwned):
            shaping.remove(runner, "lo", ns=ns)
        out = runner.query(in_ns(ns, ["tc", "-j", "qdisc", "show", "dev", "lo"])).stdout
        assert '"handle":"1:"' in out.replace(" ", "")
    finally:
        netns.delete(runner, ns)
