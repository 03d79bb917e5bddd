"""Speed benchmarks: wall time, events per second, peak concurrency and peak memory.

Two kinds. :func:`run_bench` times the cluster model on a scenario (``sim bench --vms N``): with
read caches it never has more than a few dozen transfers at once, so it measures SimPy's event
overhead and the model, not bandwidth sharing. :func:`run_network_bench` times the flow network
alone on a faithful topology with as many concurrent transfers as asked (``sim bench --network``):

* ``star``: N VMs, each behind its own 10 Gb/s NIC, pull 200 MB through one shared 10 Gb/s
  repository link; starts uniform over 60 s. Every flow has its own path.
* ``racks``: N nodes (one 300 MiB fetch each, a boot storm: starts uniform over 10 s) behind their
  10 Gb/s NIC, in racks of 40 behind rack uplinks (even racks 10 Gb/s, odd racks an old 1 Gb/s),
  behind a 200 Gb/s repository link. At 10,000 nodes all 10,000 fetches are active at once; the
  repository is the bottleneck of every rack until fewer than 8,000 remain, then the 1 Gb/s racks
  become their own: water-filling has classes on both sides of the level.
* ``mixed-racks``: the same with every third NIC at 1 Gb/s, so every rack carries two classes of
  flows (nested water levels instead of one class per rack).
* ``san-racks`` and ``peer-racks``: the cluster model's boot storm (``sim-san-vs-distributed.toml``)
  at the network level. N fetches of 300 MiB within 10 s, each to a random node (some nodes fetch
  twice, so their NIC is shared) of racks of 40 behind 40 Gb/s rack links. ``san-racks``: from 8
  targets (a 400 MiB/s disk and a 10 Gb/s link each; image popularity Zipf 1 over 200 images,
  image i on target i % 8) over [target disk, target link, rack downlink, NIC]. ``peer-racks``: from
  one of 3 holders of the image among the nodes (a 400 MiB/s disk each) over [holder disk, holder
  NIC up, its rack's uplink, the node's rack downlink, NIC], or [disk, NIC up, NIC] within a rack. A
  rack downlink carries flows from several roots (targets or holders), so it nests under none.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import tracemalloc
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import simpy

from skycache.sim.calibration import Calibration
from skycache.sim.model import ClusterModel
from skycache.sim.network import Network
from skycache.sim.scenario import ScenarioFile


@dataclass(frozen=True)
class BenchResult:
    nodes: int
    vms: int
    wall_s: float
    cpu_s: float  # process CPU time: the fair figure on a machine shared with other work
    events: int
    flows: int
    peak_concurrent: int  # most transfers active at once
    peak_rss_bytes: int  # whole process (resource.getrusage maxrss), includes imports
    peak_traced_bytes: int | None  # Python allocations of the run (tracemalloc), when asked

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def run_bench(
    sf: ScenarioFile, cal: Calibration, *, vms: int, nodes: int | None = None, trace_memory: bool = False
) -> BenchResult:
    """Simulate the scenario with ``vms`` VM starts (and ``nodes`` nodes) and measure it.

    tracemalloc slows Python allocation down a lot, so it is off by default and maxrss is used.
    """
    overrides: dict[str, object] = {"workload.count": vms}
    if nodes is not None:
        overrides["cluster.nodes"] = nodes
    sc = sf.with_overrides("base", overrides)
    if trace_memory:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    model = ClusterModel(sc, cal)
    res = model.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced = None
    if trace_memory:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return BenchResult(
        nodes=sc.cluster.nodes,
        vms=vms,
        wall_s=wall,
        cpu_s=cpu,
        events=int(res.counters["events"]),
        flows=int(res.counters["flows"]),
        peak_concurrent=model.net.peak_active,
        peak_rss_bytes=_maxrss_bytes(),
        peak_traced_bytes=traced,
    )


DEFAULT_SCENARIO = Path(__file__).resolve().parents[3] / "scenarios" / "sim-scale.toml"


GBIT = 1e9 / 8  # bytes per second of 1 Gb/s
TOPOLOGIES = ("star", "racks", "mixed-racks", "san-racks", "peer-racks")
RACK_SIZE = 40  # nodes per rack when the rack count is not given


@dataclass(frozen=True)
class Topology:
    """Links (name, capacity, watched) and flows (start, size, path as link indices), as data: the
    benchmark runs it on :class:`Network`, the reference tests on a from-scratch solver."""

    name: str
    link_names: list[str]
    capacities: list[float]
    watched: list[bool]
    starts: npt.NDArray[np.float64]
    sizes: npt.NDArray[np.float64]
    paths: list[tuple[int, ...]]

    def describe(self) -> str:
        return f"{self.name}: {len(self.link_names):,} links, {len(self.paths):,} flows"


def star(n: int, *, seed: int = 1) -> Topology:
    """The faithful star: n VMs behind their own 10 Gb/s NIC, 200 MB each through one 10 Gb/s link."""
    names = ["repository", *(f"vm{i}.nic" for i in range(n))]
    caps = [10 * GBIT] * (n + 1)
    watched = [True] + [False] * n  # the repository link is measured; NICs fold as private caps
    rng = np.random.default_rng(seed)
    return Topology(
        f"star-{n}",
        names,
        caps,
        watched,
        np.sort(rng.uniform(0.0, 60.0, n)),
        np.full(n, 200e6),
        [(0, 1 + i) for i in range(n)],
    )


def racks(n: int, racks: int | None = None, *, seed: int = 1, mixed: bool = False) -> Topology:
    """n nodes in racks behind rack uplinks behind a 200 Gb/s repository link, one 300 MiB fetch each;
    ``mixed``: every third node's NIC is 1 Gb/s instead of 10."""
    n_racks = racks if racks is not None else max(1, math.ceil(n / RACK_SIZE))
    if not 1 <= n_racks <= n:
        raise ValueError(f"racks: {n_racks} racks for {n} nodes")
    names = ["repository", *(f"rack{r}.uplink" for r in range(n_racks)), *(f"node{i}.nic" for i in range(n))]
    nics = [(1 if mixed and i % 3 == 0 else 10) * GBIT for i in range(n)]
    caps = [200 * GBIT, *((10 if r % 2 == 0 else 1) * GBIT for r in range(n_racks)), *nics]
    watched = [True] + [False] * (n_racks + n)
    rng = np.random.default_rng(seed)
    # Node i is in rack i % n_racks: with sorted start times every rack fills at the same pace.
    paths: list[tuple[int, ...]] = [(0, 1 + i % n_racks, 1 + n_racks + i) for i in range(n)]
    return Topology(
        f"{'mixed-' if mixed else ''}racks-{n}x{n_racks}",
        names,
        caps,
        watched,
        np.sort(rng.uniform(0.0, 10.0, n)),
        np.full(n, 300.0 * 2**20),
        paths,
    )


STORM_IMAGES = 200
STORM_WS = 300.0 * 2**20  # the scenario's working set
STORM_DISK = 400.0 * 2**20  # the example calibration's repository disk


def storm(n: int, racks: int | None = None, *, seed: int = 1, peers: bool = False) -> Topology:
    """The model's boot storm on its rack topology (see the module docstring): n fetches, n nodes."""
    n_racks = racks if racks is not None else max(1, math.ceil(n / RACK_SIZE))
    if not 1 <= n_racks <= n:
        raise ValueError(f"racks: {n_racks} racks for {n} nodes")
    rng = np.random.default_rng(seed)
    names: list[str] = []
    caps: list[float] = []
    watched: list[bool] = []

    def link(name: str, cap: float, watch: bool) -> int:
        names.append(name)
        caps.append(cap)
        watched.append(watch)
        return len(names) - 1

    # Watched as the model watches them: racks, repository links and disks; NICs are not.
    up = [link(f"rack{r}.tx", 40 * GBIT, True) for r in range(n_racks)]
    down = [link(f"rack{r}.rx", 40 * GBIT, True) for r in range(n_racks)]
    nic_rx = [link(f"node{i}.rx", 10 * GBIT, False) for i in range(n)]
    rack_of = [i * n_racks // n for i in range(n)]  # contiguous racks, as the model places them
    weights = 1.0 / np.arange(1, STORM_IMAGES + 1)
    images = rng.choice(STORM_IMAGES, size=n, p=weights / weights.sum())
    nodes = rng.integers(0, n, size=n)
    paths: list[tuple[int, ...]] = []
    if not peers:
        disks = [link(f"target{t}.disk", STORM_DISK, True) for t in range(8)]
        tx = [link(f"target{t}.tx", 10 * GBIT, True) for t in range(8)]
        for img, node in zip(images, nodes, strict=True):
            t = int(img) % 8
            paths.append((disks[t], tx[t], down[rack_of[node]], nic_rx[node]))
    else:
        stride = max(1, n // 3)
        holders: dict[int, tuple[int, int]] = {}  # node -> (disk, NIC up)
        reps = []
        for img in range(STORM_IMAGES):
            nodes_of = [(img * 7919 + j * stride) % n for j in range(3)]
            for h in nodes_of:
                if h not in holders:
                    disk = link(f"node{h}.disk", STORM_DISK, True)
                    holders[h] = (disk, link(f"node{h}.tx", 10 * GBIT, True))
            reps.append(nodes_of)
        pick = rng.integers(0, 3, size=n)
        for img, node, j in zip(images, nodes, pick, strict=True):
            h = reps[int(img)][int(j)]
            if h == node:
                h = reps[int(img)][(int(j) + 1) % 3]
            disk, nic_up = holders[h]
            if h == node:  # every replica on this node (a tiny cluster): a local read
                paths.append((disk,))
            elif rack_of[h] == rack_of[node]:
                paths.append((disk, nic_up, nic_rx[node]))
            else:
                paths.append((disk, nic_up, up[rack_of[h]], down[rack_of[node]], nic_rx[node]))
    return Topology(
        f"{'peer' if peers else 'san'}-racks-{n}x{n_racks}",
        names,
        caps,
        watched,
        np.sort(rng.uniform(0.0, 10.0, n)),
        np.full(n, STORM_WS),
        paths,
    )


def topology(name: str, flows: int, racks_count: int | None = None) -> Topology:
    if name == "star":
        return star(flows)
    if name in ("racks", "mixed-racks"):
        return racks(flows, racks_count, mixed=name == "mixed-racks")
    if name in ("san-racks", "peer-racks"):
        return storm(flows, racks_count, peers=name == "peer-racks")
    raise ValueError(f"unknown topology {name!r} (known: {', '.join(TOPOLOGIES)})")


@dataclass(frozen=True)
class NetBenchResult:
    topology: str
    flows: int
    wall_s: float
    cpu_s: float
    events: int  # SimPy events (arrivals, completions, the network's own timers and batches)
    peak_concurrent: int
    recomputes: int
    classes_rated: int
    makespan_s: float
    mean_transfer_s: float
    max_transfer_s: float
    peak_rss_bytes: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0


def simulate_topology(topo: Topology) -> tuple[npt.NDArray[np.float64], Network, simpy.Environment]:
    """Run every flow of ``topo`` on a fresh network; returns each flow's completion time."""
    env = simpy.Environment()
    net = Network(env)
    links = [
        net.add_link(name, cap, watch=w)
        for name, cap, w in zip(topo.link_names, topo.capacities, topo.watched, strict=True)
    ]
    n = len(topo.paths)
    finished = np.full(n, np.nan)

    def record(flow: Any) -> None:
        finished[flow.tag] = env.now

    net.on_complete = record
    order = np.argsort(topo.starts, kind="stable")

    def source() -> Generator[simpy.Event, Any, None]:
        # One process starts every flow (a process per flow would cost a generator each).
        for k in order:
            i = int(k)
            delay = float(topo.starts[i]) - env.now
            if delay > 0:
                yield env.timeout(delay)
            net.transfer(float(topo.sizes[i]), [links[j] for j in topo.paths[i]], tag=i)

    env.process(source())
    env.run()
    return finished, net, env


def run_network_bench(topo: Topology) -> NetBenchResult:
    """Time :func:`simulate_topology` (the topology is built before the clock starts)."""
    t0, c0 = time.perf_counter(), time.process_time()
    finished, net, env = simulate_topology(topo)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    transfer = finished - topo.starts
    return NetBenchResult(
        topology=topo.name,
        flows=len(topo.paths),
        wall_s=wall,
        cpu_s=cpu,
        events=int(next(env._eid)),
        peak_concurrent=net.peak_active,
        recomputes=net.recomputes,
        classes_rated=net.classes_rated,
        makespan_s=float(np.nanmax(finished)) if len(finished) else 0.0,
        mean_transfer_s=float(np.mean(transfer)) if len(transfer) else 0.0,
        max_transfer_s=float(np.max(transfer)) if len(transfer) else 0.0,
        peak_rss_bytes=_maxrss_bytes(),
    )
