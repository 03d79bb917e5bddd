"""Flow-level network with max-min fair bandwidth sharing, updated incrementally.

A transfer is a *flow*: a number of bytes crossing a path of links (a repository disk, a target's
link, a node's NIC, ...), optionally with its own rate cap. At every instant the active flows get the
max-min fair allocation: no flow's rate can grow without lowering the rate of a flow that already has
a smaller or equal rate. Packets are not modelled.

Algorithm (why it scales)
-------------------------
* Rates are recomputed only for the *connected component* touched by a change: the links of the
  flows that started or finished, the flows on those links, their links, and so on. Flows in other
  components keep their rates and their scheduled completions; nothing else is visited.
* Within a component, rates come from progressive filling (water-filling) with a lazy heap of links
  keyed by their fair share ``remaining capacity / unfrozen flows``. Freezing a flow at the current
  level can only *raise* the fair share of its other links, so a popped key that is stale is simply
  re-pushed with its current value (a lazy increase-key); each pop either freezes a link's flows or
  is a re-push caused by one earlier freeze. Cost: O((F_c + L_c) log L_c) for a component with F_c
  flows and L_c links; a flow with a rate cap is treated as a private one-flow link.
* Changes that happen at the same simulated instant (a boot storm starts hundreds of flows at t=0)
  are batched: they mark links dirty and one zero-delay event recomputes every dirty component once.
* A flow's progress is kept lazily as (bytes remaining at t_mark, rate since t_mark). Only flows whose
  rate actually changed are settled and get a new completion entry; completions live in one global
  heap with version stamps (stale entries are skipped), and one SimPy timer is armed for the earliest.
* Per-link byte counters are settled the same way, so interval-average utilisation is exact.

Worst case (every flow shares one link) a change costs O(F log L) for the F flows on it; typical
cluster traffic (many nodes, a few shared repository links) stays close to that bound only for the
flows that really share a bottleneck.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

# Relative tolerance for "this flow has finished": rounding in settle() leaves a few ulps of bytes.
_EPS = 1e-9


@dataclass(eq=False)
class Link:
    """A shared resource with a capacity in bytes per second (a NIC direction, a link, a disk)."""

    name: str
    capacity: float
    flows: set[Flow] = field(default_factory=set)
    load: float = 0.0  # sum of current flow rates, bytes/s
    peak_load: float = 0.0
    bytes_done: float = 0.0  # bytes carried up to t_mark
    t_mark: float = 0.0
    # scratch state for progressive filling
    _rem: float = 0.0
    _n: int = 0
    _stamp: int = -1

    def __post_init__(self) -> None:
        if not self.capacity > 0 or not math.isfinite(self.capacity):
            raise ValueError(f"link {self.name}: capacity must be positive and finite")

    def bytes_at(self, now: float) -> float:
        """Bytes carried by this link from t=0 to ``now`` (exact, not sampled)."""
        return self.bytes_done + self.load * (now - self.t_mark)

    def _settle(self, now: float) -> None:
        self.bytes_done += self.load * (now - self.t_mark)
        self.t_mark = now


@dataclass(eq=False)
class Flow:
    """``size`` bytes over ``links``; ``done`` fires (value: the flow) when the last byte arrives."""

    fid: int
    size: float
    links: tuple[Link, ...]
    cap: float
    done: simpy.Event
    start: float
    tag: Any = None
    remaining: float = 0.0
    rate: float = 0.0
    t_mark: float = 0.0
    version: int = 0
    finished_at: float | None = None
    _stamp: int = -1
    _new: float = 0.0

    def remaining_at(self, now: float) -> float:
        return max(0.0, self.remaining - self.rate * (now - self.t_mark))


class Network:
    """The set of links and active flows of one simulation, bound to a SimPy environment."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.links: dict[str, Link] = {}
        self._fids = itertools.count()
        self._stamps = itertools.count()
        self._heap: list[tuple[float, int, int, Flow]] = []  # (finish time, version, fid, flow)
        self._dirty: set[Link] = set()
        self._recompute_pending = False
        self._armed_at = math.inf
        self._timer_token = 0
        self.active = 0
        self.started = 0
        self.completed = 0
        self.recomputes = 0
        self.flows_rated = 0  # flow-visits in progressive filling: the work the algorithm does
        self.on_complete: Callable[[Flow], None] | None = None

    # -- topology ---------------------------------------------------------------------------------

    def add_link(self, name: str, capacity: float) -> Link:
        if name in self.links:
            raise ValueError(f"duplicate link {name}")
        link = Link(name=name, capacity=float(capacity), t_mark=self.env.now)
        self.links[name] = link
        return link

    # -- flows --------------------------------------------------------------------------------------

    def transfer(
        self, size: float, links: Sequence[Link], *, cap: float = math.inf, tag: Any = None
    ) -> simpy.Event:
        """Start a flow now; returns the event that fires when it completes.

        A zero-byte transfer (or one over no links with no cap) completes at once.
        """
        now = self.env.now
        done = self.env.event()
        flow = Flow(
            fid=next(self._fids),
            size=float(size),
            links=tuple(links),
            cap=float(cap),
            done=done,
            start=now,
            tag=tag,
            remaining=float(size),
            t_mark=now,
        )
        if size <= 0 or (not flow.links and math.isinf(flow.cap)):
            flow.finished_at = now
            done.succeed(flow)
            return done
        if not flow.links:  # only a private cap: no sharing, a fixed duration
            flow.rate = flow.cap
            self._push(flow)
            self._arm()
            self.active += 1
            self.started += 1
            return done
        for link in flow.links:
            link.flows.add(flow)
        self.active += 1
        self.started += 1
        self._dirty.update(flow.links)
        self._schedule_recompute()
        return done

    # -- internals ------------------------------------------------------------------------------

    def _schedule_recompute(self) -> None:
        if self._recompute_pending:
            return
        self._recompute_pending = True
        ev = self.env.event()
        ev.callbacks.append(self._recompute)
        ev.succeed()  # processed at the current instant, after what is already queued for it

    def _recompute(self, _ev: simpy.Event | None = None) -> None:
        self._recompute_pending = False
        seen: set[Link] = set()
        dirty, self._dirty = self._dirty, set()
        for seed in dirty:
            if seed in seen:
                continue
            links, flows = self._component(seed)
            seen.update(links)
            self._fill(links, flows)
        self._arm()

    def _component(self, seed: Link) -> tuple[list[Link], list[Flow]]:
        stamp = next(self._stamps)
        seed._stamp = stamp
        links = [seed]
        flows: list[Flow] = []
        i = 0
        while i < len(links):
            for f in links[i].flows:
                if f._stamp == stamp:
                    continue
                f._stamp = stamp
                flows.append(f)
                for other in f.links:
                    if other._stamp != stamp:
                        other._stamp = stamp
                        links.append(other)
            i += 1
        return links, flows

    def _fill(self, links: list[Link], flows: list[Flow]) -> None:
        """Progressive filling over one component; reschedules only flows whose rate changed."""
        now = self.env.now
        self.recomputes += 1
        self.flows_rated += len(flows)
        stamp = next(self._stamps)
        heap: list[tuple[float, int, Any]] = []
        for i, link in enumerate(links):
            link._rem = link.capacity
            link._n = len(link.flows)
            if link._n:
                heap.append((link._rem / link._n, i, link))
        for j, f in enumerate(flows):
            if f.cap < math.inf:
                heap.append((f.cap, -1 - j, f))
        heapq.heapify(heap)

        def freeze(f: Flow, rate: float) -> None:
            f._stamp = stamp
            f._new = rate
            for link in f.links:
                rem = link._rem - rate
                link._rem = rem if rem > 0.0 else 0.0
                link._n -= 1

        while heap:
            level, key, obj = heapq.heappop(heap)
            if isinstance(obj, Link):
                if obj._n <= 0:
                    continue
                current = obj._rem / obj._n
                if current > level * (1 + 1e-12) + 1e-300:
                    heapq.heappush(heap, (current, key, obj))  # stale: its share has grown
                    continue
                for f in obj.flows:
                    if f._stamp != stamp:
                        freeze(f, current)
            elif obj._stamp != stamp:
                freeze(obj, level)  # the flow's own cap is its bottleneck

        for link in links:
            link._settle(now)
            load = 0.0
            for f in link.flows:
                load += f._new
            link.load = load
            if load > link.peak_load:
                link.peak_load = load
        for f in flows:
            rate = f._new
            if rate == f.rate:
                continue
            rem = f.remaining - f.rate * (now - f.t_mark)
            f.remaining = rem if rem > 0.0 else 0.0
            f.t_mark = now
            f.rate = rate
            f.version += 1
            if rate > 0:
                self._push(f)

    def _push(self, f: Flow) -> None:
        heapq.heappush(self._heap, (f.t_mark + f.remaining / f.rate, f.version, f.fid, f))

    def _arm(self) -> None:
        heap = self._heap
        if len(heap) > 4 * self.active + 64:
            # Drop superseded completion entries in bulk (cheaper than popping them one by one).
            heap[:] = [e for e in heap if e[3].version == e[1] and e[3].finished_at is None]
            heapq.heapify(heap)
        while heap and (heap[0][3].version != heap[0][1] or heap[0][3].finished_at is not None):
            heapq.heappop(heap)
        if not heap:
            return
        when = heap[0][0]
        if when >= self._armed_at:
            return  # the armed timer fires first; it re-arms after
        self._armed_at = when
        self._timer_token += 1
        token = self._timer_token
        timer = self.env.timeout(max(0.0, when - self.env.now))
        timer.callbacks.append(lambda _ev: self._on_timer(token))

    def _on_timer(self, token: int) -> None:
        if token != self._timer_token:
            return  # superseded by an earlier timer
        self._armed_at = math.inf
        now = self.env.now
        horizon = now + _EPS * max(1.0, abs(now))
        heap = self._heap
        finished: list[Flow] = []
        while heap and heap[0][0] <= horizon:
            _, version, _, f = heapq.heappop(heap)
            if version != f.version or f.finished_at is not None:
                continue
            finished.append(f)
        for f in finished:
            f.remaining = 0.0
            f.t_mark = now
            f.rate = 0.0
            f.finished_at = now
            self.active -= 1
            self.completed += 1
            for link in f.links:
                link.flows.discard(f)
            self._dirty.update(f.links)
        if self._dirty:
            self._recompute()  # rates change at this instant; recompute before waking the waiters
        else:
            self._arm()
        for f in finished:
            if self.on_complete is not None:
                self.on_complete(f)
            f.done.succeed(f)

    # -- observation ------------------------------------------------------------------------------

    def utilisation(self, names: Iterable[str]) -> dict[str, float]:
        """Instantaneous load / capacity of the named links."""
        return {n: self.links[n].load / self.links[n].capacity for n in names}
