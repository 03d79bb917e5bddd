"""Shaping verified by measurement on the real kernel: rate and delay on the iSCSI port within 10%,
other ports untouched, idempotent apply, exact removal, foreign qdiscs refused, and the dry run is
what runs (the plan's commands against the runner's command log)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from skycache.errors import NotOwned
from skycache.net import measure, netns, shaping
from skycache.net.netns import in_ns, python_argv
from skycache.plan import Plan
from skycache.runner import COMMAND_LOG_ENV, Runner, render

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
    assert shaping.plan_shape(runner, shaped_lo, "lo", PORT).actions == []  # nothing to change
    shaping.apply(runner, shaped_lo, "lo", PORT)
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


@contextlib.contextmanager
def _rtt_servers(runner: Runner) -> Iterator[Callable[[int], dict[int, np.ndarray]]]:
    """Servers on the shaped and on the unshaped port, for every measurement of a test; yields a
    function giving ``count`` TCP connect times (ms) to each. (One pair of servers for all rounds:
    every Python process costs seconds under TCG.)"""
    ports = (PORT, OTHER)
    servers = [
        measure.Background(
            runner,
            python_argv(
                "skycache.net.connload", "serve", "--bind", "127.0.0.1", "--port", str(p), "--seconds", "300"
            ),
            timeout_s=330,
        )
        for p in ports
    ]

    def samples(count: int) -> dict[int, np.ndarray]:
        got: dict[int, list[float]] = {p: [] for p in ports}
        for _ in range(2):  # interleaved rounds: a burst of machine noise hits both ports alike
            for p in ports:
                got[p] += measure.tcp_rtt_samples(runner, None, "127.0.0.1", p, count=count // 2)
        return {p: np.asarray(v) for p, v in got.items()}

    try:
        for p, server in zip(ports, servers, strict=True):
            measure.wait_listening(runner, None, p, addr="127.0.0.1", server=server)
        yield samples
    finally:
        for p in ports:
            measure.stop_server(runner, None, "127.0.0.1", p)
        for s in servers:
            s.join(60)


def _floor(x: np.ndarray) -> float:
    """The 10th percentile: near the path's own round trip, but not one lucky sample."""
    return float(np.percentile(x, 10))


def test_delay_on_iscsi_port_matches_profile(runner: Runner, shaped_lo: shaping.ShapingProfile) -> None:
    """netem's delay, measured against the same path in the same run, not against an absolute figure.

    A connect is one round trip: the SYN and the SYN/ACK each cross one shaped direction, so the
    profile adds 2 x delay. Under TCG the emulated timer fires late by a machine-dependent amount
    (seen: 4.43 ms for 4 ms), so two checks stand on measured baselines: (1) netem never delivers
    early, so every shaped connect takes at least 2 x delay; (2) with the delay tripled on the same
    qdisc, the added round trip grows by 2 x (3d - d) = 4d: the timer's lateness is in both and
    cancels. Its tolerance is 10 % plus three bootstrap standard errors of that difference.
    """
    d = shaped_lo.delay_ms
    with _rtt_servers(runner) as rtt_samples:
        one = rtt_samples(100)
        shaping.apply(runner, dataclasses.replace(shaped_lo, name="gbe-2009-x3", delay_ms=3 * d), "lo", PORT)
        three = rtt_samples(100)
    added_1 = _floor(one[PORT]) - _floor(one[OTHER])
    added_3 = _floor(three[PORT]) - _floor(three[OTHER])
    growth = added_3 - added_1
    rng = np.random.default_rng(1)

    def resampled() -> float:
        def f(x: np.ndarray) -> float:
            return _floor(rng.choice(x, size=x.size))

        return (f(three[PORT]) - f(three[OTHER])) - (f(one[PORT]) - f(one[OTHER]))

    se = float(np.std([resampled() for _ in range(400)]))
    tolerance = 0.10 * 4 * d + 3 * se
    figures = (
        f"delay {d:g} ms: connect p10 shaped {_floor(one[PORT]):.3f} ms, "
        f"unshaped {_floor(one[OTHER]):.3f} ms, "
        f"added {added_1:.3f} ms (min-based {one[PORT].min() - one[OTHER].min():.3f}); "
        f"delay {3 * d:g} ms: added {added_3:.3f} ms; growth {growth:.3f} ms, expected {4 * d:g} "
        f"+- {tolerance:.3f} (bootstrap se {se:.3f}, n = {one[PORT].size} per port and delay)"
    )
    print(figures)
    # Every shaped connect carries the whole 2 x delay on top of a round trip that is never negative.
    # (Not "shaped min - unshaped min >= 2 x delay": the two minima are different samples, and on a
    # loaded machine the unshaped one can be the luckier by more than the 2 % margin: 3.907 ms for 4.)
    assert one[PORT].min() >= 0.98 * 2 * d and three[PORT].min() >= 0.98 * 2 * 3 * d, figures
    assert abs(growth - 4 * d) <= tolerance, figures
    assert _floor(one[OTHER]) < d, figures  # the other port saw no added delay


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


def _applied_commands(runner: Runner, plan: Plan, log: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Apply ``plan`` with the command log on; the mutating commands it ran, first attempts only."""
    log.unlink(missing_ok=True)
    with monkeypatch.context() as m:
        m.setenv(COMMAND_LOG_ENV, str(log))
        plan.apply(runner)
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [render(e["argv"]) for e in entries if e["kind"] == "run" and e["attempt"] == 1]


def test_dry_run_is_what_shape_and_unshape_run(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shaping.remove(runner, "lo")
    try:
        shape = shaping.plan_shape(runner, shaping.PROFILES["gbe-2009"], "lo", PORT)
        print("net shape gbe-2009:", *shape.commands(), sep="\n  ")
        assert len(shape.commands()) == 7
        assert _applied_commands(runner, shape, tmp_path / "shape.jsonl", monkeypatch) == shape.commands()
        assert shaping.current(runner, "lo") == shaping.PROFILES["gbe-2009"]
        unshape = shaping.plan_unshape(runner, "lo")
        print("net unshape:", *unshape.commands(), sep="\n  ")
        assert unshape.commands() == ["tc qdisc del dev lo root handle 5ca:"]
        assert (
            _applied_commands(runner, unshape, tmp_path / "unshape.jsonl", monkeypatch) == unshape.commands()
        )
        assert shaping.current(runner, "lo") is None
    finally:
        shaping.remove(runner, "lo")
