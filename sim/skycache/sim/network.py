"""Flow-level network with max-min fair bandwidth sharing, updated incrementally.

A transfer is a *flow*: a number of bytes crossing a path of links (a repository disk, a target's
link, a node's NIC, ...), optionally with its own rate cap. At every instant the active flows get the
max-min fair allocation: no flow's rate can grow without lowering the rate of a flow that already has
a smaller or equal rate. Packets are not modelled.

Algorithm (why it scales)
-------------------------
* **Flow classes with virtual time.** Flows with the same path and cap always get the same max-min
  rate, so they form one class. A class keeps a virtual clock V (bytes served to each of its flows
  so far, advancing at the class's per-flow rate) and a heap of its flows keyed by virtual finish tag
  V_join + size. A rate change settles V once for the whole class, however many flows it holds, and
  a class has one entry in the global completion heap (its earliest tag). n flows sharing one
  bottleneck path therefore cost O(log n) per arrival or departure, not O(n).
* **Only the touched component is recomputed**: the links of the class that changed, the classes on
  those links, their links, and so on. Other components keep their rates and scheduled completions.
* **Progressive filling** (water-filling) over the component's classes with a lazy heap of links keyed
  by fair share ``remaining capacity / unfrozen flows``. Freezing a class can only *raise* the fair
  share of its other links, so a popped key that is stale is re-pushed with its current value (a lazy
  increase-key). A cap is a class's private bottleneck. Cost O((C_c + L_c) log L_c) for C_c classes
  and L_c links in the component.
* **Batching**: changes at the same simulated instant (a boot storm starts hundreds of flows at t=0)
  mark links dirty, and one zero-delay event recomputes every dirty component once.
* **Lazy progress**: only classes whose rate or earliest flow changed get a new (version-stamped)
  completion entry; stale entries are skipped and compacted in bulk. One SimPy timer is armed for the
  earliest completion. Link byte counters are settled the same way, so interval-average utilisation
  is exact.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

# Relative tolerance for "this flow has finished": rounding in the virtual clocks leaves a few ulps.
_EPS = 1e-9


@dataclass(eq=False)
class Link:
    """A shared resource with a capacity in bytes per second (a NIC direction, a link, a disk)."""

    name: str
    capacity: float
    classes: set[FlowClass] = field(default_factory=set)
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

    @property
    def flows(self) -> int:
        """Active flows on this link."""
        return sum(c.n for c in self.classes)

    def bytes_at(self, now: float) -> float:
        """Bytes carried by this link from t=0 to ``now`` (exact, not sampled)."""
        return self.bytes_done + self.load * (now - self.t_mark)

    def _settle(self, now: float) -> None:
        self.bytes_done += self.load * (now - self.t_mark)
        self.t_mark = now


@dataclass(eq=False)
class FlowClass:
    """Active flows with one path and cap: they share one rate and one virtual clock."""

    cid: int
    links: tuple[Link, ...]
    cap: float
    heap: list[tuple[float, int, Flow]] = field(default_factory=list)  # (virtual finish tag, fid, flow)
    n: int = 0
    rate: float = 0.0  # per flow, bytes/s
    vtime: float = 0.0  # bytes served to each flow of the class, at t_mark
    t_mark: float = 0.0
    version: int = 0
    head_changed: bool = False
    _stamp: int = -1
    _new: float = 0.0

    def settle(self, now: float) -> None:
        self.vtime += self.rate * (now - self.t_mark)
        self.t_mark = now

    def next_finish(self) -> float:
        return self.t_mark + (self.heap[0][0] - self.vtime) / self.rate


@dataclass(eq=False)
class Flow:
    """``size`` bytes; ``done`` fires (value: the flow) when the last byte arrives."""

    fid: int
    size: float
    cls: FlowClass
    done: simpy.Event
    start: float
    vtag: float  # the class's virtual time at which this flow is complete
    tag: Any = None
    finished_at: float | None = None

    @property
    def links(self) -> tuple[Link, ...]:
        return self.cls.links

    @property
    def rate(self) -> float:
        return 0.0 if self.finished_at is not None else self.cls.rate

    def remaining_at(self, now: float) -> float:
        if self.finished_at is not None:
            return 0.0
        c = self.cls
        return max(0.0, self.vtag - (c.vtime + c.rate * (now - c.t_mark)))


class Network:
    """The set of links and active flows of one simulation, bound to a SimPy environment."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.links: dict[str, Link] = {}
        self._classes: dict[tuple[tuple[Link, ...], float], FlowClass] = {}
        self._ids = itertools.count()
        self._stamps = itertools.count()
        self._heap: list[tuple[float, int, int, FlowClass]] = []  # (finish time, version, cid, class)
        self._dirty: set[Link] = set()
        self._recompute_pending = False
        self._armed_at = math.inf
        self._timer_token = 0
        self.active = 0
        self.started = 0
        self.completed = 0
        self.recomputes = 0
        self.classes_rated = 0  # class-visits in progressive filling: the work the algorithm does
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
        """Start a flow now; returns the event that fires (value: the :class:`Flow`) when it completes.

        A zero-byte transfer, or one over no links and without a cap, completes at once.
        """
        now = self.env.now
        done = self.env.event()
        path = tuple(links)
        cap = float(cap)
        key = (path, cap)
        cls = self._classes.get(key)
        if cls is None:
            cls = FlowClass(cid=next(self._ids), links=path, cap=cap, t_mark=now)
            self._classes[key] = cls
        cls.settle(now)
        flow = Flow(
            fid=next(self._ids),
            size=float(size),
            cls=cls,
            done=done,
            start=now,
            vtag=cls.vtime + size,
            tag=tag,
        )
        if size <= 0 or (not path and math.isinf(cap)):
            flow.finished_at = now
            if cls.n == 0:
                del self._classes[key]
            done.succeed(flow)
            return done
        if not cls.heap or flow.vtag < cls.heap[0][0]:
            cls.head_changed = True  # the class's earliest completion moves
        heapq.heappush(cls.heap, (flow.vtag, flow.fid, flow))
        cls.n += 1
        self.active += 1
        self.started += 1
        if not path:  # only a private cap: no sharing, the class's rate is the cap
            cls.rate = cap
            self._push(cls)
            self._arm()
            return done
        if cls.n == 1:
            for link in path:
                link.classes.add(cls)
        self._dirty.update(path)
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
            links, classes = self._component(seed)
            seen.update(links)
            self._fill(links, classes)
        self._arm()

    def _component(self, seed: Link) -> tuple[list[Link], list[FlowClass]]:
        stamp = next(self._stamps)
        seed._stamp = stamp
        links = [seed]
        classes: list[FlowClass] = []
        i = 0
        while i < len(links):
            for c in links[i].classes:
                if c._stamp == stamp:
                    continue
                c._stamp = stamp
                classes.append(c)
                for other in c.links:
                    if other._stamp != stamp:
                        other._stamp = stamp
                        links.append(other)
            i += 1
        return links, classes

    def _fill(self, links: list[Link], classes: list[FlowClass]) -> None:
        """Progressive filling over one component; reschedules only classes that changed."""
        now = self.env.now
        self.recomputes += 1
        self.classes_rated += len(classes)
        stamp = next(self._stamps)
        heap: list[tuple[float, int, Any]] = []
        for i, link in enumerate(links):
            link._rem = link.capacity
            n = 0
            for c in link.classes:
                n += c.n
            link._n = n
            if n:
                heap.append((link._rem / n, i, link))
        for j, c in enumerate(classes):
            if c.cap < math.inf:
                heap.append((c.cap, -1 - j, c))
        heapq.heapify(heap)

        def freeze(c: FlowClass, rate: float) -> None:
            c._stamp = stamp
            c._new = rate
            for link in c.links:
                rem = link._rem - rate * c.n
                link._rem = rem if rem > 0.0 else 0.0
                link._n -= c.n

        while heap:
            level, key, obj = heapq.heappop(heap)
            if isinstance(obj, Link):
                if obj._n <= 0:
                    continue
                current = obj._rem / obj._n
                if current > level * (1 + 1e-12) + 1e-300:
                    heapq.heappush(heap, (current, key, obj))  # stale: its share has grown
                    continue
                for c in obj.classes:
                    if c._stamp != stamp:
                        freeze(c, current)
            elif obj._stamp != stamp:
                freeze(obj, level)  # the class's own cap is its bottleneck

        for link in links:
            link._settle(now)
            load = 0.0
            for c in link.classes:
                load += c._new * c.n
            link.load = load
            if load > link.peak_load:
                link.peak_load = load
        for c in classes:
            rate = c._new
            if rate != c.rate:
                c.settle(now)
                c.rate = rate
            elif not c.head_changed:
                continue
            c.head_changed = False
            c.version += 1
            if rate > 0 and c.heap:
                self._push(c)

    def _push(self, c: FlowClass) -> None:
        c.version += 1
        heapq.heappush(self._heap, (c.next_finish(), c.version, c.cid, c))

    def _arm(self) -> None:
        heap = self._heap
        if len(heap) > 4 * len(self._classes) + 64:
            # Drop superseded completion entries in bulk (cheaper than popping them one by one).
            heap[:] = [e for e in heap if e[3].version == e[1] and e[3].n > 0]
            heapq.heapify(heap)
        while heap and (heap[0][3].version != heap[0][1] or heap[0][3].n == 0):
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
        touched: list[FlowClass] = []
        while heap and heap[0][0] <= horizon:
            _, version, _, c = heapq.heappop(heap)
            if version != c.version or c.n == 0:
                continue
            c.settle(now)
            # Finished: due within the time tolerance (so a flow whose remaining time is below the
            # clock's resolution cannot re-arm a zero-length timer forever), or within rounding of V.
            limit = c.vtime + c.rate * (horizon - now) + _EPS * max(1.0, abs(c.vtime))
            while c.heap and c.heap[0][0] <= limit:
                finished.append(heapq.heappop(c.heap)[2])
                c.n -= 1
            c.head_changed = True
            touched.append(c)
        for c in touched:
            if c.n == 0:
                c.rate = 0.0
                c.version += 1
                for link in c.links:
                    link.classes.discard(c)
                self._classes.pop((c.links, c.cap), None)
            elif not c.links:
                self._push(c)  # a cap-only class: same rate, next flow
            self._dirty.update(c.links)
        for f in finished:
            f.finished_at = now
            self.active -= 1
            self.completed += 1
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
