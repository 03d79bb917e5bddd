"""What an event costs the network, counted in classes re-rated, not timed.

The speed targets live in tests/benchmarks/test_sim_network_speed.py; here the work per event is
counted, so that a change which makes it grow with the number of flows fails in the unit tier.
"""

from __future__ import annotations

import math

import pytest
import simpy

from skycache.sim import bench
from skycache.sim.network import Network


@pytest.mark.parametrize("flows", [1000, 4000])
def test_the_star_is_one_class_whatever_the_number_of_flows(flows: int) -> None:
    _, net, _ = bench.simulate_topology(bench.star(flows))
    assert net.peak_active >= 0.9 * flows
    assert net.classes_rated <= net.recomputes  # one class per solve, however many flows share it


@pytest.mark.parametrize("mixed", [False, True])
def test_racks_rate_a_bounded_number_of_classes_per_event(mixed: bool) -> None:
    """Per solve: the changed rack's classes and those crossing the root's level, not every rack."""
    for nodes, racks in [(400, 10), (4000, 100)]:
        _, net, _ = bench.simulate_topology(bench.racks(nodes, racks, mixed=mixed))
        assert net.classes_rated / net.recomputes < 3.0, (nodes, racks)


def test_a_watched_link_tracks_and_an_unwatched_one_refuses() -> None:
    env = simpy.Environment()
    net = Network(env)
    seen = net.add_link("seen", 100)
    nic = net.add_link("nic", 40, watch=False)
    net.transfer(400, [seen, nic])
    env.run(until=1)
    assert seen.load == pytest.approx(40) and nic.load == pytest.approx(40)
    assert seen.bytes_at(env.now) == pytest.approx(40)
    assert seen.peak_load == pytest.approx(40)
    with pytest.raises(ValueError, match="not watched"):
        _ = nic.peak_load
    with pytest.raises(ValueError, match="not watched"):
        nic.bytes_at(env.now)
    with pytest.raises(ValueError, match="carries flows"):
        net.watch(nic)
    env.run()
    net.watch(nic)
    assert nic.peak_load == 0.0


def test_a_flow_keeps_its_progress_when_its_link_turns_shared_and_private_again() -> None:
    # a alone on l (private: its cap) for 2 s, then b shares l (a moves to a shared class), then b
    # leaves and a is alone again: a's bytes are counted across the three classes it lived in.
    env = simpy.Environment()
    net = Network(env)
    link = net.add_link("l", 10, watch=False)
    a = net.transfer(100, [link])

    def later():  # type: ignore[no-untyped-def]
        yield env.timeout(2)
        yield net.transfer(20, [link])  # 5 B/s each: done at 6; a has 20 + 20 = 40 B by then

    env.process(later())
    env.run()
    assert a.value.finished_at == pytest.approx(6 + 60 / 10)


def test_transfer_refuses_a_link_twice_a_non_positive_cap_and_an_infinite_size() -> None:
    env = simpy.Environment()
    net = Network(env)
    link = net.add_link("l", 10)
    with pytest.raises(ValueError, match="at most once"):
        net.transfer(1, [link, link])
    with pytest.raises(ValueError, match="positive"):
        net.transfer(1, [link], cap=0)
    with pytest.raises(ValueError, match="positive"):
        net.transfer(1, [link], cap=math.nan)
    with pytest.raises(ValueError, match="finite"):
        net.transfer(math.inf, [link])


@pytest.mark.parametrize("peers", [False, True], ids=["san-racks", "peer-racks"])
def test_the_models_storm_rates_a_bounded_number_of_classes_per_event(peers: bool) -> None:
    """A rack downlink under several roots (8 targets, or replica holders) is left out while it
    cannot fill, so an event re-rates its own class and those crossing its root's level, not every
    class of the component that rack links would otherwise join (before: hundreds per solve)."""
    for nodes in (800, 3200):
        _, net, _ = bench.simulate_topology(bench.storm(nodes, peers=peers))
        assert net.peak_active >= 0.3 * nodes
        assert net.classes_rated / net.recomputes < 2.0, (nodes, net.classes_rated / net.recomputes)
