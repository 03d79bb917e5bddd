"""The cluster model: worker nodes, image repository, network, VM lifecycles and NAT gateways.

Pure simulation: no I/O, no wall-clock time, every random draw from one seeded numpy Generator
(drawn up front as arrays, so a run is a function of scenario, calibration and seed).

A VM's life (one SimPy process each):

1. arrives (Poisson, burst or SWF trace) wanting image i (Zipf popularity);
2. takes a slot on a node (random or cache-aware placement), or waits in a FIFO queue;
3. boots: reads the image's working set. With a read cache, a hit reads it from the node's local
   cache at the calibrated hit rate; a miss fetches it from the repository once per node (other VMs
   of the same image on that node wait for that fetch) and inserts it with LRU eviction. Without a
   read cache every VM fetches. A fetch is the repository's request latency followed by a flow over
   the path [target disk, target link, node NIC] (central) or [peer disk, peer NIC up, node NIC down]
   (distributed: image i is stored on ``replicas`` worker nodes, a random other replica serves).
   With racks (``cluster.racks``), nodes sit in contiguous groups behind one uplink per rack and
   direction: a central fetch also crosses the node's rack downlink, a peer fetch the holder's rack
   uplink and the node's rack downlink unless both nodes are in the same rack;
4. runs: with a write-back cache its writes stay local; without one they cross the network to the
   repository as a flow capped at ``write_bytes / runtime`` and the VM ends when both are done;
5. ends: a fraction ``sync_fraction`` of VMs synchronise their COW clone (flush of ``write_bytes``
   at the calibrated flush rate to the repository) before the slot is released.

NAT is a fluid model updated on every VM start and stop: each running VM sends ``egress`` bytes/s in
packets of ``packet_size`` and opens ``conn_rate`` connections per second that live
``conn_lifetime``; a gateway's CPU utilisation is (packets/s x cpu_per_packet + conns/s x
cpu_per_conn) / cores and its conntrack occupancy is conns/s x lifetime (Little's law), capped at
``conntrack_max`` (the excess is dropped). Per-node NAT runs on each node; central NAT spreads nodes
over ``gateways`` round-robin.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import simpy

from skycache.sim.calibration import Calibration
from skycache.sim.calibration_use import model_rates, writes_reach_repository
from skycache.sim.network import Link, Network
from skycache.sim.scenario import Scenario
from skycache.sim.workload import Arrivals, generate

ProcessGen = Generator[simpy.Event, Any, None]


class Node:
    __slots__ = (
        "cache",
        "cache_used",
        "disk",
        "down",
        "free",
        "gateway",
        "idx",
        "pending",
        "pool_pos",
        "rack",
        "running",
        "up",
        "wdisk",
    )

    def __init__(self, idx: int, down: Link, up: Link, gateway: int, rack: int = -1) -> None:
        self.idx = idx
        self.rack = rack  # -1: no racks
        self.down = down
        self.up = up
        self.free = 0
        self.pool_pos = -1
        self.cache: OrderedDict[int, float] = OrderedDict()  # image -> bytes, LRU first
        self.cache_used = 0.0
        self.pending: dict[int, simpy.Event] = {}  # image -> fetch in progress
        self.running = 0
        self.gateway = gateway
        self.disk: Link | None = None  # distributed: serves replicas
        self.wdisk: Link | None = None


@dataclass
class Gateway:
    name: str
    cores: float
    running: int = 0
    peak_util: float = 0.0
    peak_conntrack: float = 0.0


@dataclass
class SimResult:
    scenario: Scenario
    seed: int
    arrivals: Arrivals
    vm: dict[str, npt.NDArray[Any]]
    series: list[tuple[float, str, str, float]]
    counters: dict[str, float] = field(default_factory=dict)


class ClusterModel:
    """Build with a scenario, a calibration and a seed; :meth:`run` returns a :class:`SimResult`."""

    def __init__(self, sc: Scenario, cal: Calibration, seed: int | None = None) -> None:
        self.sc = sc
        self.cal = cal
        self.seed = sc.seed if seed is None else seed
        self.rng = np.random.default_rng(self.seed)
        self.env = simpy.Environment()
        self.net = Network(self.env)
        # Only the values this scenario uses, each checked against its role (calibration_use).
        self.rates = model_rates(sc, cal)
        self.read_bw = self.rates.read_bw
        self.write_bw = self.rates.write_bw
        self.latency = self.rates.latency
        self.hit_bw = self.rates.hit_bw
        self.flush_bw = self.rates.flush_bw
        self.writes_to_repo = writes_reach_repository(sc)
        self.arrivals = generate(sc, self.rng)
        n = len(self.arrivals)
        # Per-VM random numbers drawn up front (placement, replica choice, sync decision).
        self.u_place = self.rng.random(n)
        self.u_peer = self.rng.random(n)
        self.u_sync = self.rng.random(n)
        nan = np.full(n, np.nan)
        self.vm: dict[str, npt.NDArray[Any]] = {
            "arrival": self.arrivals.time,
            "image": self.arrivals.image,
            "node": np.full(n, -1, dtype=np.int64),
            "boot_start": nan.copy(),
            "running_at": nan.copy(),
            "end": nan.copy(),
            "cache_hit": np.zeros(n, dtype=np.int8),
        }
        self._build_cluster()
        self.queue: deque[tuple[int, simpy.Event]] = deque()
        self.finished = 0
        self.all_done = self.env.event()
        self.series: list[tuple[float, str, str, float]] = []
        self.counters: dict[str, float] = {
            "repo_read_bytes": 0.0,
            "repo_write_bytes": 0.0,
            "fetches": 0,
            "evictions": 0,
            "peak_queue": 0,
        }

    # -- construction -----------------------------------------------------------------------------

    def _build_cluster(self) -> None:
        sc, net = self.sc, self.net
        c = sc.cluster
        nat = sc.nat
        gw_count = nat.gateways if nat.mode == "central" else 0
        self.gateways = [Gateway(f"gw{g}", nat.cores) for g in range(gw_count)]
        self.nodes: list[Node] = []
        # Rack uplinks are watched (the sampler measures them); they carry many flows, so watching
        # costs no folding: a rack under the repository's links still folds as nested (network.py).
        self.rack_up = [net.add_link(f"rack{r}.tx", c.rack_uplink) for r in range(c.racks)]
        self.rack_down = [net.add_link(f"rack{r}.rx", c.rack_uplink) for r in range(c.racks)]
        for i in range(c.nodes):
            node = Node(
                i,
                # Unwatched: a NIC under one flow folds into that flow's cap (see network.py).
                net.add_link(f"node{i}.rx", c.nic_bw, watch=False),
                net.add_link(f"node{i}.tx", c.nic_bw, watch=False),
                i % gw_count if gw_count else -1,
                # Contiguous racks of nodes // racks or one more node (the first nodes % racks racks).
                i * c.racks // c.nodes if c.racks else -1,
            )
            node.free = c.slots_per_node
            node.pool_pos = i
            self.nodes.append(node)
        self.pool: list[Node] = list(self.nodes)  # nodes with a free slot (swap-remove)
        # Per-node NAT: a histogram of nodes by running VMs gives the busiest node in O(1).
        self.running_hist: list[int] = [c.nodes] + [0] * c.slots_per_node
        self.max_running = 0
        self.peak_node_running = 0
        self.total_running = 0
        self.image_nodes: dict[int, list[Node]] = {}
        self.stale_holders: dict[int, int] = {}
        r = sc.repository
        self.monitored: list[Link] = []
        if r.kind == "central":
            self.t_disk = [net.add_link(f"target{t}.disk", self.read_bw) for t in range(r.targets)]
            # Write disks only where writes reach the repository (else write_bw is not calibrated).
            wdisks = r.targets if self.writes_to_repo else 0
            self.t_wdisk = [net.add_link(f"target{t}.wdisk", self.write_bw) for t in range(wdisks)]
            self.t_out = [net.add_link(f"target{t}.tx", r.link_bw) for t in range(r.targets)]
            self.t_in = [net.add_link(f"target{t}.rx", r.link_bw) for t in range(r.targets)]
            self.monitored = [*self.t_out, *self.t_in, *self.t_disk]
            self.repo_out = list(self.t_out)
        else:
            # Image i is stored on `replicas` nodes spread evenly over the cluster.
            stride = max(1, c.nodes // max(1, r.replicas))
            self.replicas: list[list[Node]] = []
            holders: dict[int, Node] = {}
            for img in range(sc.images.count):
                reps = []
                for j in range(r.replicas):
                    node = self.nodes[(img * 7919 + j * stride) % c.nodes]
                    if node.disk is None:
                        node.disk = net.add_link(f"node{node.idx}.disk", self.read_bw)
                        if self.writes_to_repo:
                            node.wdisk = net.add_link(f"node{node.idx}.wdisk", self.write_bw)
                        net.watch(node.up)  # the sampler measures replica holders' uplinks
                        holders[node.idx] = node
                    reps.append(node)
                self.replicas.append(reps)
            self.holders = list(holders.values())
            self.repo_out = [n.up for n in self.holders]
        # NAT cost per running VM (CPU-seconds per second) and conntrack entries per running VM.
        pps = nat.egress_bw / nat.packet_size
        self.nat_cpu_per_vm = (
            pps * self.rates.nat_cpu_per_packet + nat.conn_rate * self.rates.nat_cpu_per_conn
        )
        self.conntrack_per_vm = nat.conn_rate * nat.conn_lifetime

    # -- placement ----------------------------------------------------------------------------------

    def _take_slot(self, node: Node) -> None:
        node.free -= 1
        if node.free == 0:
            last = self.pool.pop()
            if last is not node:
                self.pool[node.pool_pos] = last
                last.pool_pos = node.pool_pos
            node.pool_pos = -1

    def _place(self, k: int, image: int) -> Node | None:
        if not self.pool:
            return None
        u = self.u_place[k]
        if self.sc.cluster.placement == "cache-aware":
            holders = self.image_nodes.get(image)
            if holders:
                # A few probes among the nodes that cache (or are fetching) the image, then any node.
                for probe in range(4):
                    cand = holders[int(((u * 7.0 + probe * 0.618) % 1.0) * len(holders))]
                    if cand.free > 0 and (image in cand.cache or image in cand.pending):
                        self._take_slot(cand)
                        return cand
        node = self.pool[int(u * len(self.pool))]
        self._take_slot(node)
        return node

    def _release(self, node: Node) -> None:
        if self.queue:  # hand the slot straight to the oldest waiting VM
            _k, ev = self.queue.popleft()
            ev.succeed(node)
            return
        node.free += 1
        if node.free == 1:
            node.pool_pos = len(self.pool)
            self.pool.append(node)

    # -- NAT ------------------------------------------------------------------------------------------

    def _nat_change(self, node: Node, delta: int) -> None:
        self.total_running += delta
        r = node.running
        self.running_hist[r] -= 1
        r += delta
        node.running = r
        self.running_hist[r] += 1
        if r > self.max_running:
            self.max_running = r
            self.peak_node_running = max(self.peak_node_running, r)
        elif delta < 0 and r + 1 == self.max_running and self.running_hist[r + 1] == 0:
            self.max_running = r
        if node.gateway >= 0:
            g = self.gateways[node.gateway]
            g.running += delta
            util = g.running * self.nat_cpu_per_vm / g.cores
            if util > g.peak_util:
                g.peak_util = util
            ct = g.running * self.conntrack_per_vm
            if ct > g.peak_conntrack:
                g.peak_conntrack = ct

    # -- I/O ------------------------------------------------------------------------------------------

    def _into(self, node: Node) -> list[Link]:
        """The links from the core to ``node``: its rack's downlink (with racks), its NIC."""
        if node.rack < 0:
            return [node.down]
        return [self.rack_down[node.rack], node.down]

    def _out_of(self, node: Node) -> list[Link]:
        """The links from ``node`` to the core: its NIC, its rack's uplink (with racks)."""
        if node.rack < 0:
            return [node.up]
        return [node.up, self.rack_up[node.rack]]

    def _between(self, src: Node, dst: Node) -> list[Link]:
        """Node to node: through the core only between racks (within one, the rack's switch)."""
        if src.rack == dst.rack:
            return [src.up, dst.down]
        return [*self._out_of(src), *self._into(dst)]

    def _fetch(self, k: int, node: Node, image: int) -> ProcessGen:
        ws = self.sc.images.working_set
        self.counters["fetches"] += 1
        if self.sc.repository.kind == "central":
            t = image % len(self.t_out)
            path = [self.t_disk[t], self.t_out[t], *self._into(node)]
        else:
            reps = self.replicas[image]
            if node in reps:  # the image is on this node's own disk
                yield self.env.timeout(self.latency + ws / self.read_bw)
                return
            peer = reps[int(self.u_peer[k] * len(reps))]
            assert peer.disk is not None
            path = [peer.disk, *self._between(peer, node)]
        if self.latency > 0:
            yield self.env.timeout(self.latency)
        self.counters["repo_read_bytes"] += ws
        yield self.net.transfer(ws, path)

    def _write_path(self, node: Node, image: int) -> list[Link]:
        if self.sc.repository.kind == "central":
            t = image % len(self.t_in)
            return [*self._out_of(node), self.t_in[t], self.t_wdisk[t]]
        home = self.replicas[image][0]
        if home is node:
            assert node.wdisk is not None
            return [node.wdisk]
        assert home.wdisk is not None
        return [*self._between(node, home), home.wdisk]

    def _cache_insert(self, node: Node, image: int) -> None:
        ws = self.sc.images.working_set
        cap = self.sc.cluster.read_cache
        if ws > cap:
            return  # does not fit at all: the node keeps reading through
        while node.cache_used + ws > cap and node.cache:
            victim, size = node.cache.popitem(last=False)
            node.cache_used -= size
            self.counters["evictions"] += 1
            if self.sc.cluster.placement == "cache-aware":
                self._forget_holder(victim)
        node.cache[image] = ws
        node.cache_used += ws

    def _add_holder(self, node: Node, image: int) -> None:
        self.image_nodes.setdefault(image, []).append(node)

    def _forget_holder(self, image: int) -> None:
        # Entries of evicting nodes are dropped lazily: compact the list when half of it is stale.
        stale = self.stale_holders.get(image, 0) + 1
        holders = self.image_nodes.get(image, [])
        if 2 * stale > len(holders):
            seen: set[int] = set()
            keep = []
            for n in holders:
                if n.idx not in seen and (image in n.cache or image in n.pending):
                    seen.add(n.idx)
                    keep.append(n)
            self.image_nodes[image] = keep
            stale = 0
        self.stale_holders[image] = stale

    # -- processes ----------------------------------------------------------------------------------

    def _source(self) -> ProcessGen:
        times = self.arrivals.time
        env = self.env
        for k in range(len(times)):
            delay = times[k] - env.now
            if delay > 0:
                yield env.timeout(delay)
            env.process(self._vm(k))

    def _vm(self, k: int) -> ProcessGen:
        env, sc = self.env, self.sc
        image = int(self.arrivals.image[k])
        node = self._place(k, image)
        if node is None:
            ev = env.event()
            self.queue.append((k, ev))
            if len(self.queue) > self.counters["peak_queue"]:
                self.counters["peak_queue"] = len(self.queue)
            node = yield ev
        assert node is not None
        self.vm["node"][k] = node.idx
        self.vm["boot_start"][k] = env.now
        ws = sc.images.working_set
        if sc.cluster.read_cache > 0:
            if image in node.cache:
                node.cache.move_to_end(image)
                self.vm["cache_hit"][k] = 1
                yield env.timeout(ws / self.hit_bw)
            elif image in node.pending:
                self.vm["cache_hit"][k] = 1
                yield node.pending[image]
                yield env.timeout(ws / self.hit_bw)
            else:
                done = env.event()
                node.pending[image] = done
                if sc.cluster.placement == "cache-aware":
                    self._add_holder(node, image)
                yield from self._fetch(k, node, image)
                del node.pending[image]
                self._cache_insert(node, image)
                done.succeed()
        else:
            yield from self._fetch(k, node, image)
        self.vm["running_at"][k] = env.now
        self._nat_change(node, +1)
        runtime = float(self.arrivals.runtime[k])
        wb = sc.workload.write_bytes
        if wb > 0 and not sc.cluster.write_cache:
            # Write-through: the VM's writes cross the network while it runs, at most at the rate
            # the VM produces them; congestion stretches the run.
            cap = wb / runtime if runtime > 0 else math.inf
            self.counters["repo_write_bytes"] += wb
            writes = self.net.transfer(wb, self._write_path(node, image), cap=cap)
            yield env.timeout(runtime)
            if not writes.triggered:
                yield writes
        else:
            yield env.timeout(runtime)
        self._nat_change(node, -1)
        if wb > 0 and sc.cluster.write_cache and self.u_sync[k] < sc.cluster.sync_fraction:
            self.counters["repo_write_bytes"] += wb
            yield self.net.transfer(wb, self._write_path(node, image), cap=self.flush_bw)
        self.vm["end"][k] = env.now
        self._release(node)
        self.finished += 1
        if self.finished == len(self.arrivals):
            self.all_done.succeed()

    def _sampler(self) -> ProcessGen:
        env, dt = self.env, self.sc.sample_interval
        out = self.series
        monitored = self.monitored
        last = {link.name: 0.0 for link in monitored}
        last_repo = 0.0
        nat = self.sc.nat
        peers: list[tuple[str, list[Link]]] = []
        if self.sc.repository.kind == "distributed":
            peers = [
                ("peers.tx", [n.up for n in self.holders]),
                ("peers.disk", [n.disk for n in self.holders if n.disk is not None]),
            ]
        if self.rack_up:
            # Every rack's uplink and downlink: the busiest rack and the mean over racks.
            peers += [("racks.tx", self.rack_up), ("racks.rx", self.rack_down)]
        for _, links in peers:
            last.update({link.name: 0.0 for link in links})
        while True:
            yield env.timeout(dt)
            now = env.now
            for link in monitored:
                b = link.bytes_at(now)
                out.append((now, "link_util", link.name, (b - last[link.name]) / (dt * link.capacity)))
                last[link.name] = b
            for group, links in peers:
                # Replica holders serve the distributed repository, racks reach the core: the busiest
                # and the mean utilisation of each group.
                utils = []
                for link in links:
                    b = link.bytes_at(now)
                    utils.append((b - last[link.name]) / (dt * link.capacity))
                    last[link.name] = b
                out.append((now, "link_util", f"{group}-max", max(utils, default=0.0)))
                out.append((now, "link_util", f"{group}-mean", sum(utils) / max(1, len(utils))))
            repo = sum(link.bytes_at(now) for link in self.repo_out)
            out.append((now, "repo_throughput", "repository", (repo - last_repo) / dt))
            last_repo = repo
            out.append((now, "vms_running", "cluster", float(self.total_running)))
            out.append((now, "vms_queued", "cluster", float(len(self.queue))))
            out.append((now, "flows_active", "network", float(self.net.active)))
            if nat.mode == "per-node":
                busiest = self.max_running
                out.append((now, "nat_cpu", "node-max", busiest * self.nat_cpu_per_vm / nat.cores))
                mean = self.total_running / len(self.nodes)
                out.append((now, "nat_cpu", "node-mean", mean * self.nat_cpu_per_vm / nat.cores))
                demand = busiest * self.conntrack_per_vm
                out.append((now, "conntrack", "node-max", min(demand, nat.conntrack_max)))
                out.append((now, "conntrack_demand", "node-max", demand))
            elif nat.mode == "central":
                for g in self.gateways:
                    out.append((now, "nat_cpu", g.name, g.running * self.nat_cpu_per_vm / g.cores))
                    demand = g.running * self.conntrack_per_vm
                    out.append((now, "conntrack", g.name, min(demand, nat.conntrack_max)))
                    out.append((now, "conntrack_demand", g.name, demand))
                    # Egress through the gateway's own link (fluid load, not flows).
                    util = g.running * nat.egress_bw / nat.gateway_link_bw
                    out.append((now, "link_util", f"{g.name}.link", util))

    # -- run ----------------------------------------------------------------------------------------

    def run(self) -> SimResult:
        env = self.env
        env.process(self._source())
        env.process(self._sampler())
        if len(self.arrivals) == 0:
            self.all_done.succeed()
        until: simpy.Event | float = self.all_done
        if self.sc.duration > 0:
            until = self.sc.duration
        env.run(until=until)
        self.counters.update(
            sim_end=env.now,
            events=float(next(env._eid)),
            flows=float(self.net.started),
            recomputes=float(self.net.recomputes),
            classes_rated=float(self.net.classes_rated),
            peak_node_running=float(self.peak_node_running),
            nat_cpu_per_vm=self.nat_cpu_per_vm,
            conntrack_per_vm=self.conntrack_per_vm,
        )
        for link in self.monitored:
            self.counters[f"peak_inst_util:{link.name}"] = link.peak_load / link.capacity
        if self.sc.repository.kind == "distributed":
            peak = max((n.up.peak_load / n.up.capacity for n in self.holders), default=0.0)
            self.counters["peak_inst_util:peer-uplinks"] = peak
        if self.rack_up:
            for group, links in (("rack-uplinks", self.rack_up), ("rack-downlinks", self.rack_down)):
                peak = max(link.peak_load / link.capacity for link in links)
                self.counters[f"peak_inst_util:{group}"] = peak
        for g in self.gateways:
            self.counters[f"peak_nat_cpu:{g.name}"] = g.peak_util
            self.counters[f"peak_conntrack:{g.name}"] = g.peak_conntrack
        return SimResult(self.sc, self.seed, self.arrivals, self.vm, self.series, self.counters)


def simulate(sc: Scenario, cal: Calibration, seed: int | None = None) -> SimResult:
    return ClusterModel(sc, cal, seed).run()
