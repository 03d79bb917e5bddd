"""Max-min fair flow network against closed forms and hand-computed allocations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from skycache.sim.network import Network


def _run(flows: list[tuple[str, float, float, list[str]]], caps: dict[str, float]) -> dict[str, float]:
    """flows: (name, start time, size, link names) -> completion time per flow."""
    env = simpy.Environment()
    net = Network(env)
    links = {n: net.add_link(n, c) for n, c in caps.items()}
    done: dict[str, float] = {}

    def proc(name: str, at: float, size: float, path: list[str]):  # type: ignore[no-untyped-def]
        yield env.timeout(at)
        yield net.transfer(size, [links[p] for p in path])
        done[name] = env.now

    for name, at, size, path in flows:
        env.process(proc(name, at, size, path))
    env.run()
    return done


@pytest.mark.parametrize("n", [1, 2, 5, 50])
def test_n_equal_flows_finish_at_n_size_over_capacity(n: int) -> None:
    size, cap = 1e6, 125e6
    done = _run([(f"f{i}", 0.0, size, ["l"]) for i in range(n)], {"l": cap})
    for t in done.values():
        assert t == pytest.approx(n * size / cap, rel=1e-9)


def test_staggered_flows_on_one_link_match_hand_computed_max_min() -> None:
    # C = 100 B/s. A (1000 B) alone for 2 s -> 800 left. B (500 B) joins: 50 B/s each, B done at
    # 2 + 10 = 12 with A at 300 left; A alone again: 12 + 3 = 15. C (100 B) at 4 shares three ways:
    # 4..? recompute: see below.
    done = _run([("A", 0, 1000, ["l"]), ("B", 2, 500, ["l"])], {"l": 100})
    assert done["B"] == pytest.approx(12.0)
    assert done["A"] == pytest.approx(15.0)
    # Three flows: A 600 @0, B 300 @1, C 100 @2 on C = 100.
    # 0-1: A alone, 100 -> A 500 left. 1-2: 50 each -> A 450, B 250. From 2: 33.3 each;
    # C needs 100 -> done at 5 (A 350, B 150). Then 50 each: B done at 8 (A 200), A done at 10.
    done = _run([("A", 0, 600, ["l"]), ("B", 1, 300, ["l"]), ("C", 2, 100, ["l"])], {"l": 100})
    assert done["C"] == pytest.approx(5.0)
    assert done["B"] == pytest.approx(8.0)
    assert done["A"] == pytest.approx(10.0)


def test_two_link_max_min_allocation() -> None:
    # l1 = 10, l2 = 4. a: [l1], b: [l1, l2], c: [l2]. l2 is the bottleneck: b = c = 2, a = 8.
    env = simpy.Environment()
    net = Network(env)
    l1, l2 = net.add_link("l1", 10), net.add_link("l2", 4)
    net.transfer(80, [l1], tag="a")
    net.transfer(20, [l1, l2], tag="b")
    net.transfer(1000, [l2], tag="c")
    env.run(until=1e-6)
    assert l1.load == pytest.approx(10.0)
    assert l2.load == pytest.approx(4.0)
    # a: 80 B at 8 B/s -> t=10; b: 20 B at 2 B/s -> t=10. Then c alone on l2 at 4 B/s.
    env.run(until=10.5)
    assert l2.load == pytest.approx(4.0)
    assert l1.load == pytest.approx(0.0)
    done = _run(
        [("a", 0, 80, ["l1"]), ("b", 0, 20, ["l1", "l2"]), ("c", 0, 1000, ["l2"])], {"l1": 10, "l2": 4}
    )
    assert done["a"] == pytest.approx(10.0)
    assert done["b"] == pytest.approx(10.0)
    # c: 20 B by t=10, then 980 B at 4 B/s -> 10 + 245.
    assert done["c"] == pytest.approx(255.0)


def test_rate_cap_is_a_private_bottleneck() -> None:
    env = simpy.Environment()
    net = Network(env)
    link = net.add_link("l", 100)
    capped = net.transfer(10, [link], cap=10)  # 10 B/s
    free = net.transfer(900, [link])  # gets the remaining 90 B/s
    env.run(until=1e-9)
    assert link.load == pytest.approx(100)
    env.run()
    assert capped.value.finished_at == pytest.approx(1.0)
    # 90 B by t=1, then 810 B at 100 B/s.
    assert free.value.finished_at == pytest.approx(1.0 + 8.1)


def test_unrelated_components_are_not_recomputed() -> None:
    env = simpy.Environment()
    net = Network(env)
    links = [net.add_link(f"l{i}", 100) for i in range(20)]
    for link in links:
        net.transfer(1000, [link])
    env.run(until=1e-9)
    before = net.classes_rated
    net.transfer(1000, [links[0]])  # touches one component, of one class, not all 20
    env.run(until=2e-9)
    assert net.classes_rated - before == 1


def test_flows_sharing_a_path_cost_one_class_not_n_flows() -> None:
    """Virtual time: 1000 flows on one link are one class; each arrival/departure rates 1 class."""
    env = simpy.Environment()
    net = Network(env)
    link = net.add_link("l", 1000.0)
    events = [net.transfer(100.0 + i, [link]) for i in range(1000)]
    env.run()
    assert net.recomputes <= 1 + 1000  # one batched start, then one per completion
    assert net.classes_rated <= net.recomputes  # at most one class each time, never 1000 flows
    # Sizes 100..1099 B on 1000 B/s, processor sharing: flow k finishes after the k smaller ones.
    t = 0.0
    prev = 0.0
    remaining = 1000
    for i, ev in enumerate(events):
        size = 100.0 + i
        t += (size - prev) * remaining / 1000.0
        prev = size
        remaining -= 1
        assert ev.value.finished_at == pytest.approx(t, rel=1e-9)


def test_link_byte_counters_are_exact() -> None:
    done = {}
    env = simpy.Environment()
    net = Network(env)
    link = net.add_link("l", 50)
    ev = net.transfer(500, [link])
    ev.callbacks.append(lambda e: done.setdefault("t", env.now))
    env.run(until=4)
    assert link.bytes_at(env.now) == pytest.approx(200)
    env.run()
    assert link.bytes_at(env.now) == pytest.approx(500)
    assert done["t"] == pytest.approx(10)


def test_mm1_mean_sojourn_and_waiting_time_of_a_shared_disk() -> None:
    """Poisson arrivals, exponential sizes, one link shared fairly = M/M/1-PS: E[T] = 1/(mu - lambda).

    Mean sojourn of processor sharing equals FIFO M/M/1's, so the mean waiting time (sojourn minus
    own service) is rho / (mu - lambda).
    """
    lam, cap, mean_size = 0.7, 100e6, 100e6  # mu = 1 job/s, rho = 0.7
    mu = cap / mean_size
    n = 60_000
    rng = np.random.default_rng(42)
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    sizes = rng.exponential(mean_size, n)
    env = simpy.Environment()
    net = Network(env)
    disk = net.add_link("target0.disk", cap)
    sojourn = np.zeros(n)

    def source():  # type: ignore[no-untyped-def]
        for k in range(n):
            yield env.timeout(arrivals[k] - env.now)
            env.process(job(k))

    def job(k: int):  # type: ignore[no-untyped-def]
        t0 = env.now
        yield net.transfer(sizes[k], [disk])
        sojourn[k] = env.now - t0

    env.process(source())
    env.run()
    warm = sojourn[n // 10 :]
    t_pred = 1 / (mu - lam)
    w_pred = (lam / mu) / (mu - lam)
    w_sim = float(np.mean(warm - sizes[n // 10 :] / cap))
    err_t = abs(warm.mean() - t_pred) / t_pred
    err_w = abs(w_sim - w_pred) / w_pred
    print(
        f"M/M/1: E[T] sim {warm.mean():.3f} vs {t_pred:.3f} ({err_t:.1%}); W sim {w_sim:.3f} vs {w_pred:.3f}"
    )
    assert err_t < 0.08
    assert err_w < 0.12


def test_zero_byte_transfer_completes_at_once() -> None:
    env = simpy.Environment()
    net = Network(env)
    ev = net.transfer(0, [net.add_link("l", 1)])
    assert ev.triggered
    assert math.isclose(ev.value.finished_at, 0.0)


def test_link_refuses_non_positive_capacity() -> None:
    env = simpy.Environment()
    with pytest.raises(ValueError, match="capacity"):
        Network(env).add_link("l", 0)
