"""Flow-level network with exact max-min fair bandwidth sharing, updated incrementally.

A transfer is a *flow*: a number of bytes crossing a path of links (a repository disk, a target's
link, a node's NIC, ...), optionally with its own rate cap. At every instant the active flows get the
max-min fair allocation: no flow's rate can grow without lowering the rate of a flow that already has
a smaller or equal rate. Packets are not modelled.

Algorithm
---------
The allocation is exact max-min. What makes it cheap is reducing the problem before solving it, so
that links private to one flow, or nested under the same larger links, never enter the solver.

1. **Private links are caps.** A link that carries exactly one flow limits only that flow, so it is
   folded into the flow's cap. A flow's *class* is keyed by the links it shares with other flows and
   that cap. In a star (N nodes, each behind its own NIC, pulling through one repository link) every
   flow has the key ([repository], NIC rate): one class, whatever N. When a second flow joins a
   link, or all but one leave it, the (at most two) flows concerned move between classes.
2. **A class is a processor-sharing queue with a virtual clock.** Its flows always get the same
   rate, so the class keeps a clock V (bytes served to each of its flows) and a heap of its flows
   keyed by virtual finish tag (V at join + size). A rate change settles V once for the whole class.
3. **Nested links fold their water level into caps.** A link that carries one class limits each of
   its flows to capacity / flows. More generally a link whose classes all cross the same larger
   links (a rack uplink under the repository link, whatever mix of NICs is in the rack) is nested:
   in max-min over a tree each flow gets min(its cap, the isolated water level of every link on its
   path), where a link's isolated level is the water-filling of its own classes against its
   capacity alone. So the rack's level (computed from its few classes, sorted by cap) folds into
   their caps, and the rack drops out of the solve. Nesting is checked from the class counts of the
   links (a larger link carries more classes); three levels fold the same way.
4. **Water-filling over sorted caps.** Classes whose remaining shared links are the same set M form
   a *pool*. When those links carry nothing else (a "simple" pool: the root link of a star or of a
   hierarchy), max-min is water-filling against capacity min(M): classes whose effective cap is
   below the level run at their cap, the rest share what is left equally. The pool keeps its classes
   in two lazy heaps (capped: max-heap, sharing: min-heap) with the sums that give the level, so a
   change moves only the classes whose side of the level changes. Sharing classes are *bound* to
   the pool's own virtual clock by an offset, so a new level settles one clock, not one per class;
   the pool has one completion entry (its earliest bound flow).
5. **Links that do not fill are left out.** If the max-min point of the problem without a link
   satisfies that link, it is the max-min point with it (it is feasible, and nothing feasible with
   the link improves on it). So a link whose classes are not nested (a NIC shared by fetches from
   two targets, a rack downlink crossed by fetches from 8 targets or from many replica holders) is
   left out when it cannot fill, or *guarded* (up to 64 classes): left out while the solution keeps
   it below capacity. "Cannot fill" is a load bound kept per link as classes come, go and change
   count (O(path) per change): each class counts at most its cap, and the classes grouped by the
   smallest other link they cross count at most that link's capacity together. A rack downlink
   under 8 targets is bounded by their 8 disks whatever the number of its classes, and a target's
   link by its disk. A guard gives each pool whose level moves its classes' rates a share of the room left;
   a pool whose level outgrows a share re-checks the link, and a link found full is put back and
   the instant solved again (it is not guarded again until its classes change).
6. **Progressive filling** (with a lazy heap of links keyed by fair share) solves whatever is left:
   a connected component of shared links whose classes do not reduce to one simple pool (e.g. a
   node whose NIC could fill, receiving from two targets that also serve others). It is exact for
   any topology, and costs what the component holds.
7. **Batching and lazy progress.** Changes at one simulated instant are solved once, in a
   zero-delay event. Completion entries are version-stamped and superseded ones are skipped; one
   SimPy timer is armed for the earliest completion.

Cost of an arrival or a departure, with n active flows: O(path length + log n) for the link counts,
the load bounds and the class heap; O(m log m) for each nested link of the changed class, m the
classes on it (a rack's NIC speeds: one or two), then O(log C) in a simple pool of C classes per
class whose cap or side of the level changed (the classes of those nested links). A star costs
O(log n) per event and a hierarchy O(log n + m log C): neither depends on the number of flows whose other
links are theirs alone. A guarded link costs O(its classes) when they change or a level outgrows its
budget, and a solve again at that instant when it fills. What does not reduce (non-nested overlaps
that do fill, e.g. a slow NIC receiving from two targets) costs O((C_c + L_c) log L_c) per event for
the C_c classes and L_c shared links of the touched component only. Exactness: results equal a
from-scratch progressive filling at every event to rounding (tests compare every flow's rate after
every solve, and every completion time, with such a reference, and with processor-sharing closed
forms).

Observation: *watched* links (the default of :meth:`Network.add_link`) keep their load, peak load and
carried bytes exactly, updated at every change of their rate (a watched rack downlink under every
target's pool is refreshed, at O(its classes), whenever one of their levels moves: in a storm of the
model this is the largest cost left, O(racks) per event); they are never folded as private, so
watch only the links you measure (a watched NIC under one flow costs one class per flow). Unwatched
links give their instantaneous ``load`` on demand only. Iteration is in insertion order (dicts,
never sets of objects hashed by address) and heap ties break on counters, so a run is bit-identical
across processes.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import simpy

from skycache.sim.netobjects import CAPPED, OUT, SHARING, Flow, FlowClass, Link, Pool, bound_entry

__all__ = ["Flow", "FlowClass", "Link", "Network", "Pool"]

# Links with at most this many classes may be guarded (a NIC shared by two fetches, a rack downlink
# under fetches from a few dozen replica holders); a guard costs a pass over the link's classes.
_GUARD_CLASSES = 64

# Relative tolerance for "this flow has finished": rounding in the virtual clocks leaves a few ulps.
_EPS = 1e-9


Owner = FlowClass | Pool


class Network:
    """The set of links and active flows of one simulation, bound to a SimPy environment."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.links: dict[str, Link] = {}
        self._classes: dict[tuple[tuple[Link, ...], float], FlowClass] = {}
        self._pools: dict[tuple[Link, ...], Pool] = {}
        self._ids = itertools.count()
        self._seq = itertools.count()  # tie-break of heap entries: deterministic, never an address
        self._stamps = itertools.count()
        self._solve = -1  # stamp of the current solve (memo of folding)
        self._heap: list[tuple[float, int, int, Owner]] = []  # (finish time, seq, version, owner)
        self._dirty_links: dict[Link, None] = {}
        self._dirty_classes: dict[FlowClass, None] = {}
        self._dirty_pools: dict[Pool, None] = {}
        self._watch_pending: dict[Link, None] = {}  # watched links to refresh after the last pass
        self._recompute_pending = False
        self._armed_at = math.inf
        self._timer_token = 0
        self.active = 0
        self.peak_active = 0  # most flows active at once
        self.started = 0
        self.completed = 0
        self.recomputes = 0
        self.classes_rated = 0  # classes whose shared rate was derived again: the algorithm's work
        self.on_complete: Callable[[Flow], None] | None = None

    # -- topology ---------------------------------------------------------------------------------

    def add_link(self, name: str, capacity: float, *, watch: bool = True) -> Link:
        """A link; ``watch=False`` for links nobody measures (NICs), so they can fold as private."""
        if name in self.links:
            raise ValueError(f"duplicate link {name}")
        link = Link(name, float(capacity), index=len(self.links), watched=watch)
        link.t_mark = self.env.now
        self.links[name] = link
        return link

    def watch(self, link: Link) -> None:
        """Start tracking an idle link's load, peak and carried bytes."""
        if link.nflows:
            raise ValueError(f"link {link.name} carries flows: watch it before its first flow")
        link.watched = True
        link.t_mark = self.env.now

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
        if not cap > 0:
            raise ValueError(f"flow cap must be positive, not {cap}")
        if not math.isfinite(size):
            raise ValueError(f"flow size must be finite, not {size}")
        if len({id(link) for link in path}) != len(path):
            raise ValueError("a flow's path crosses each link at most once")
        flow = Flow(next(self._ids), float(size), path, cap, done, now)
        flow.tag = tag
        if size <= 0 or (not path and math.isinf(cap)):
            flow.finished_at = now
            done.succeed(flow)
            return done
        self.active += 1
        self.started += 1
        if self.active > self.peak_active:
            self.peak_active = self.active
        for link in path:
            link.nflows += 1
            if link.nflows == 1:
                if not link.watched:
                    link.solo = flow
            elif link.solo is not None:  # a second flow: the link is no longer private to the first
                other = link.solo
                link.solo = None
                self._reclassify(other, now)
        self._join(flow, now, flow.size)
        self._schedule_recompute()
        return done

    # -- classes ----------------------------------------------------------------------------------

    def _join(self, flow: Flow, now: float, remaining: float) -> None:
        shared = []
        cap = flow.cap
        for link in flow.links:
            if link.solo is flow:
                cap = min(cap, link.capacity)
            else:
                shared.append(link)
        shared.sort(key=_link_index)
        key = (tuple(shared), cap)
        cls = self._classes.get(key)
        if cls is None:
            cls = FlowClass(next(self._ids), key[0], cap, now)
            self._classes[key] = cls
            for link in cls.shared:
                link.classes[cls] = None
                self._dirty_links[link] = None
        flow.cls = cls
        flow.vtag = cls.vnow(now) + remaining
        heapq.heappush(cls.heap, (flow.vtag, flow.fid, flow))
        cls.n += 1
        self._dirty_classes[cls] = None

    def _reclassify(self, flow: Flow, now: float) -> None:
        """The flow's set of private links changed: move it, with its remaining bytes, to its class."""
        old = flow.cls
        assert old is not None
        remaining = flow.vtag - old.vnow(now)
        self._leave_class(flow)
        self._join(flow, now, max(0.0, remaining))

    def _leave_class(self, flow: Flow) -> None:
        c = flow.cls
        assert c is not None
        flow.cls = None  # its heap entry is now stale
        c.n -= 1
        self._dirty_classes[c] = None
        if c.n == 0:
            self._retire(c)

    def _retire(self, c: FlowClass) -> None:
        c.alive = False
        for link in c.folded:
            link.folded_by -= 1
        c.folded = ()
        c.version += 1
        c.heap.clear()
        for link in c.shared:
            del link.classes[c]
            self._dirty_links[link] = None
        if c.pool is not None:
            self._leave_pool(c, self.env.now)
        del self._classes[c.key]

    # -- pools ------------------------------------------------------------------------------------

    def _place(self, c: FlowClass, now: float, again: list[FlowClass]) -> None:
        """Derive the class's effective cap and pool from the current class counts of its links.

        A link whose foldability differs from when its classes were placed appends them to ``again``.
        """
        multi = []
        folded = []
        eff = c.cap
        for link in c.shared:
            if len(link.classes) == 1:
                eff = min(eff, link.capacity / c.n)
            elif link.slack:
                continue
            else:
                foldable = self._foldable(link)
                if foldable != link.fold_state:
                    link.fold_state = foldable
                    again.extend(link.classes)
                if foldable:
                    eff = min(eff, self._fold_level(link))
                    folded.append(link)
                else:
                    multi.append(link)
        for link in c.folded:
            link.folded_by -= 1
        c.folded = tuple(folded)
        for link in folded:
            link.folded_by += 1
        c.eff = eff
        key = tuple(multi)
        c.multi = key
        pool = c.pool
        if pool is not None and pool.key != key:
            self._leave_pool(c, now)
            pool = None
        if not key:  # nothing shared with another class: the class runs at its effective cap
            if c.rate != eff:
                c.settle(now)
                c.rate = eff
            return
        if pool is None:
            pool = self._pools.get(key)
            if pool is None:
                pool = Pool(key, now)
                self._pools[key] = pool
                for link in key:
                    link.pools[pool] = None
            pool.members[c] = None
            c.pool = pool
            c.side = OUT
            c.watched_extra = tuple(link for link in c.shared if link.watched and link not in key)
        pool.changed[c] = None
        self._dirty_pools[pool] = None

    @staticmethod
    def _is_slack(link: Link) -> bool:
        """Whether ``link`` stays below capacity at any allocation the other links allow: a class's
        rate is at most its cap, and the classes that cross one other link carry at most its
        capacity together (``Link.bound``). Leaving such a link out leaves max-min unchanged (the
        max-min point of the larger polytope satisfies the link). A link whose bound uses another
        left-out link's capacity has a larger capacity than it, so the links left out this way are
        satisfied in order of capacity, from the smallest, whose bound uses only links solved."""
        return len(link.classes) >= 2 and not link.can_fill()

    @staticmethod
    def _rebound(c: FlowClass) -> None:
        """Bring the load bounds of the class's links to its current count (0 once retired)."""
        n = c.n if c.alive else 0
        was = c.bound_n
        if n == was:
            return
        cap = c.cap
        for link, group, limit in c.bound_groups:
            # The most these flows carry over the link: their caps, and the capacity of the
            # smallest other link they cross (often the bound, so a count change moves nothing).
            old = min(was * cap, limit) if was else None
            new = min(n * cap, limit) if n else None
            if old != new:
                link.move_bound(group, old, new)
        c.bound_n = n

    def _foldable(self, link: Link) -> bool:
        """Whether ``link`` is nested under the same larger links for every class on it (a rack
        uplink under the repository link). Its classes then get their rates from its own water level
        (computed in isolation) and from those larger links: the level folds into their caps."""
        if link._fold_stamp == self._solve:
            return link._fold
        link._fold_stamp = self._solve
        link._fold = False
        n = len(link.classes)
        upper: tuple[Link, ...] | None = None
        for c in link.classes:
            above = []
            for other in c.shared:
                m = len(other.classes)
                if other.slack:
                    continue
                if m > n:
                    above.append(other)
                elif other is not link and m > 1 and (m == n or not self._foldable(other)):
                    return False  # beside this link, or under it without being nested: not a tree
            if not above or (upper is not None and tuple(above) != upper):
                return False  # a top link (the pool's), or classes under different larger links
            upper = tuple(above)
        link._fold = True
        return True

    def _fold_level(self, link: Link) -> float:
        """Water level of a foldable link over its classes alone: each class's cap folded with the
        links nested under this one; infinite when they all fit."""
        if link._level_stamp == self._solve:
            return link._level
        n = len(link.classes)
        items = []
        for c in link.classes:
            cap = c.cap
            for other in c.shared:
                m = len(other.classes)
                if m == 1:
                    cap = min(cap, other.capacity / c.n)
                elif m < n and not other.slack:
                    cap = min(cap, self._fold_level(other))
            items.append((cap, c.cid, c.n))
        items.sort()
        rem, left, level = link.capacity, sum(c.n for c in link.classes), math.inf
        for cap, _, k in items:
            if cap * left > rem:
                level = rem / left
                break
            rem -= cap * k
            left -= k
        link._level_stamp = self._solve
        link._level = level
        return level

    def _leave_pool(self, c: FlowClass, now: float) -> None:
        pool = c.pool
        assert pool is not None
        if c.side != OUT:
            pool.remove(c)
        if c.bound:
            self._unbind(c, now)
        del pool.members[c]
        pool.changed.pop(c, None)
        pool.watch_bound.pop(c, None)
        c.pool = None
        self._dirty_pools[pool] = None

    def _bind(self, c: FlowClass, pool: Pool, now: float) -> None:
        v = c.vtime + c.rate * (now - c.t_mark)
        c.offset = pool.vnow(now) - v
        c.bound = True
        if c.watched_extra:
            pool.watch_bound[c] = None

    def _unbind(self, c: FlowClass, now: float) -> None:
        pool = c.pool
        assert pool is not None
        c.vtime = pool.vnow(now) - c.offset
        c.rate = pool.rate
        c.t_mark = now
        c.bound = False
        pool.watch_bound.pop(c, None)

    def _fill_pool(self, pool: Pool, now: float, touched: dict[FlowClass, None]) -> None:
        """Water-filling of a simple pool: only the changed classes and those crossing the level."""
        pool.settle(now)
        if not pool.valid:
            pool.sharing.clear()
            pool.below.clear()
            pool.n_above = pool.n_below = 0
            pool.s_below = 0.0
            for c in pool.members:
                c.side = OUT
                pool.insert(c)
            pool.valid = True
            changed: Iterable[FlowClass] = list(pool.members)
        else:
            for c in pool.changed:
                if c.side != OUT:
                    pool.remove(c)
                pool.insert(c)
            changed = list(pool.changed)
        pool.changed.clear()
        pool.ops += 1
        if pool.ops % 4096 == 0 and pool.n_below:
            # The capped total is kept by additions and subtractions: re-add it now and then.
            pool.s_below = math.fsum(c.wf_n * c.wf_e for c in pool.members if c.side == CAPPED)
        moved = pool.rebalance()
        if len(pool.sharing) + len(pool.below) > 4 * len(pool.members) + 16:
            pool.sharing = [e for e in pool.sharing if e[2] == e[3].wf_ver and e[3].side == SHARING]
            pool.below = [e for e in pool.below if e[2] == e[3].wf_ver and e[3].side == CAPPED]
            heapq.heapify(pool.sharing)
            heapq.heapify(pool.below)
        pool.rate = pool.level() if pool.n_above > 0 else 0.0
        for c in itertools.chain(changed, moved):
            if c.side == SHARING:
                if not c.bound:
                    self._bind(c, pool, now)
            else:
                if c.bound:
                    self._unbind(c, now)
                if c.rate != c.eff:
                    c.settle(now)
                    c.rate = c.eff
            touched[c] = None

    def _unpool(self, pool: Pool, now: float, touched: dict[FlowClass, None]) -> None:
        """The pool's links carry other classes too: its classes go to progressive filling."""
        if pool.valid:
            for c in pool.members:
                if c.bound:
                    self._unbind(c, now)
                c.side = OUT
                touched[c] = None
            pool.sharing.clear()
            pool.below.clear()
            pool.finish.clear()
            pool.n_above = pool.n_below = 0
            pool.s_below = 0.0
            pool.valid = False
        pool.settle(now)
        pool.rate = 0.0
        pool.changed.clear()

    # -- solving ----------------------------------------------------------------------------------

    def _schedule_recompute(self) -> None:
        if self._recompute_pending:
            return
        self._recompute_pending = True
        ev = self.env.event()
        ev.callbacks.append(self._recompute)
        ev.succeed()  # processed at the current instant, after what is already queued for it

    def _recompute(self, _ev: simpy.Event | None = None) -> None:
        self._recompute_pending = False
        while not self._solve_pass():
            pass  # a guarded link filled: solved again with it (each pass puts back at least one)

    def _solve_pass(self) -> bool:
        """Solve what the changes since the last solve touched; False when a guarded link filled."""
        now = self.env.now
        self.recomputes += 1
        self._solve = next(self._stamps)
        links, self._dirty_links = self._dirty_links, {}
        dirty = self._dirty_classes
        for c in dirty:
            self._rebound(c)
        for link in links:
            link.refused = False  # its classes changed: it may be guarded again
            multi = len(link.classes) >= 2
            if multi != link.is_multi or (multi and not link.slack and (link.folded_by or _nested(link))):
                # The link moves in or out of its classes' `multi`, or it may fold: re-place them.
                # (A link left out folds into no cap; if it is put back below, its classes are
                # re-placed there.)
                link.is_multi = multi
                for c in link.classes:
                    dirty[c] = None
            for pool in link.pools:
                self._dirty_pools[pool] = None
        # A link that cannot fill is left out of the solve (exact: see _is_slack); its status changes
        # with the classes on it and their counts.
        candidates = dict(links)
        for c in dirty:
            if c.alive:
                for link in c.shared:
                    candidates[link] = None
        for link in candidates:
            slack = self._is_slack(link)
            link.guarded = not slack and _may_guard(link)
            slack = slack or link.guarded
            if slack != link.slack:
                link.slack = slack
                for c in link.classes:
                    dirty[c] = None
        for c in list(dirty):
            # A class's count changes the water level of the links folded into its cap, or nested
            # under its top link now, so the cap of every class on them.
            if c.alive and len(c.shared) > 1:
                # (Links left out are not part of any nesting: see _foldable.)
                top = max((len(link.classes) for link in c.shared if not link.slack), default=0)
                for link in c.shared:
                    if link.folded_by or (2 <= len(link.classes) < top and not link.slack):
                        for other in link.classes:
                            dirty[other] = None
        touched: dict[FlowClass, None] = {}
        classes, self._dirty_classes = self._dirty_classes, {}
        queue = list(classes)
        for c in queue:  # grows while links change foldability; each link at most once per solve
            if c.alive:
                self._place(c, now, queue)
                touched[c] = None
        pools, self._dirty_pools = self._dirty_pools, {}
        general: list[Pool] = []
        for pool in pools:
            if not pool.members:
                del self._pools[pool.key]
                for link in pool.key:
                    del link.pools[pool]
                pool.version += 1
                continue
            n = len(pool.members)
            if all(len(link.classes) == n for link in pool.key):
                self._fill_pool(pool, now, touched)
            else:
                self._unpool(pool, now, touched)
                general.append(pool)
        stamp = next(self._stamps)
        for pool in general:
            if pool.key[0]._stamp != stamp:
                self._fill_component(pool, stamp, now, touched)
        self.classes_rated += sum(1 for c in touched if c.alive and c.shared)
        watched = self._watch_pending
        watched.update((link, None) for link in links if link.watched)
        guarded: dict[Link, None] = {link: None for link in candidates if link.guarded}
        for c in touched:
            if c.alive:
                self._reschedule(c, now)
                for link in c.shared:
                    if link.watched:
                        watched[link] = None
                    if link.guarded:
                        guarded[link] = None
        for pool in pools:
            if pool.members:
                self._push_pool(pool)
                for link in pool.key:
                    if link.watched:
                        watched[link] = None
                for c in pool.watch_bound:
                    for link in c.watched_extra:
                        watched[link] = None
                budgets = pool.guards
                while budgets and budgets[0][0] < pool.rate:  # the level outgrew a guard's budget
                    _, _, version, link = heapq.heappop(budgets)
                    if version == link.guard_ver and link.guarded:
                        guarded[link] = None
        failed = [link for link in guarded if not self._guard(link)]
        if failed:
            # The solution fills a guarded link: put it back and solve again at this instant (the
            # rates of the pass just made lasted no time, so nothing was measured with them).
            for link in failed:
                link.slack = link.guarded = False
                link.refused = True
                for c in link.classes:
                    self._dirty_classes[c] = None
            return False
        self._watch_pending = {}
        for link in watched:
            self._refresh(link, now)
        self._arm()
        return True

    def _guard(self, link: Link) -> bool:
        """Whether a guarded link is below capacity at the current rates; if so, give each pool whose
        level moves the rates of classes on it a share of the room left, as a level it may reach
        before the link is checked again (together the shares keep the link below capacity)."""
        load = 0.0
        bound: dict[Pool, int] = {}
        for c in link.classes:
            load += c.n * c.current_rate()
            if c.bound:
                assert c.pool is not None
                bound[c.pool] = bound.get(c.pool, 0) + c.n
        room = link.capacity * (1 - 1e-9) - load
        if room < 0:
            return False
        link.guard_ver += 1
        for pool, n in bound.items():
            budget = pool.rate + room / (len(bound) * n)
            heapq.heappush(pool.guards, (budget, next(self._seq), link.guard_ver, link))
            if len(pool.guards) > 4 * len(pool.members) + 64:
                pool.guards = [e for e in pool.guards if e[2] == e[3].guard_ver and e[3].guarded]
                heapq.heapify(pool.guards)
        return True

    def _fill_component(self, seed: Pool, stamp: int, now: float, touched: dict[FlowClass, None]) -> None:
        """Progressive filling over the classes and shared links connected to ``seed``."""
        links: list[Link] = []
        for link in seed.key:
            if link._stamp != stamp:
                link._stamp = stamp
                links.append(link)
        classes: list[FlowClass] = []
        i = 0
        while i < len(links):
            for c in links[i].classes:
                if c._stamp == stamp:
                    continue
                c._stamp = stamp
                classes.append(c)
                for other in c.multi:
                    if other._stamp != stamp:
                        other._stamp = stamp
                        links.append(other)
            i += 1
        frozen = next(self._stamps)
        heap: list[tuple[float, int, Any]] = []
        for i, link in enumerate(links):
            link._rem = link.capacity
            n = 0
            for c in link.classes:
                n += c.n
            link._n = n
            heap.append((link._rem / n, i, link))
        for j, c in enumerate(classes):
            if c.pool is not None and c.pool.valid:
                self._unpool(c.pool, now, touched)
            if c.eff < math.inf:
                heap.append((c.eff, -1 - j, c))
        heapq.heapify(heap)

        def freeze(c: FlowClass, rate: float) -> None:
            c._stamp = frozen
            c._new = rate
            for link in c.multi:
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
                    if c._stamp != frozen:
                        freeze(c, current)
            elif obj._stamp != frozen:
                freeze(obj, level)  # the class's own cap is its bottleneck
        for c in classes:
            if c.bound:
                self._unbind(c, now)
            if c._new != c.rate:
                c.settle(now)
                c.rate = c._new
            touched[c] = None

    # -- completions --------------------------------------------------------------------------------

    def _reschedule(self, c: FlowClass, now: float) -> None:
        c.version += 1
        tag = c.head()
        if tag is None:
            return
        if c.bound:
            assert c.pool is not None
            heapq.heappush(c.pool.finish, (tag + c.offset, next(self._seq), c.version, c))
        elif c.rate > 0:
            when = c.t_mark + (tag - c.vtime) / c.rate
            heapq.heappush(self._heap, (when, next(self._seq), c.version, c))

    def _push_pool(self, pool: Pool) -> None:
        pool.version += 1
        fin = pool.finish
        if len(fin) > 4 * len(pool.members) + 16:
            pool.finish = fin = [e for e in fin if bound_entry(pool, e)]
            heapq.heapify(fin)
        while fin and not bound_entry(pool, fin[0]):
            heapq.heappop(fin)
        if fin and pool.rate > 0:
            when = pool.t_mark + (fin[0][0] - pool.vtime) / pool.rate
            heapq.heappush(self._heap, (when, next(self._seq), pool.version, pool))

    def _refresh(self, link: Link, now: float) -> None:
        link.bytes_done += link._load * (now - link.t_mark)
        link.t_mark = now
        load: float | None = None
        if len(link.pools) == 1:
            pool = next(iter(link.pools))
            if pool.valid and len(link.classes) == len(pool.members):
                load = pool.n_above * pool.rate + pool.s_below  # a simple pool's link: O(1)
        if load is None:
            load = 0.0
            for c in link.classes:  # c.current_rate(), inlined: a rack link under every target's
                # pool is refreshed whenever one of their levels moves
                load += c.n * (c.pool.rate if c.bound else c.rate)  # type: ignore[union-attr]
        link._load = load
        if load > link.peak:
            link.peak = load

    def _arm(self) -> None:
        heap = self._heap
        if len(heap) > 4 * (len(self._classes) + len(self._pools)) + 64:
            # Drop superseded completion entries in bulk (cheaper than popping them one by one).
            heap[:] = [e for e in heap if e[3].version == e[2]]
            heapq.heapify(heap)
        while heap and heap[0][3].version != heap[0][2]:
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
            _, _, version, owner = heapq.heappop(heap)
            if version != owner.version:
                continue
            if isinstance(owner, Pool):
                self._pool_due(owner, now, horizon, finished)
            else:
                owner.settle(now)
                limit = owner.vtime + owner.rate * (horizon - now) + _EPS * max(1.0, abs(owner.vtime))
                _pop_finished(owner, limit, now, finished)
                self._dirty_classes[owner] = None
        for f in finished:
            self._leave_class(f)
            self._leave_links(f, now)
        self.active -= len(finished)
        self.completed += len(finished)
        self._recompute()  # rates change at this instant; recompute before waking the waiters
        for f in finished:
            if self.on_complete is not None:
                self.on_complete(f)
            f.done.succeed(f)

    def _pool_due(self, pool: Pool, now: float, horizon: float, finished: list[Flow]) -> None:
        pool.settle(now)
        limit = pool.vtime + pool.rate * (horizon - now) + _EPS * max(1.0, abs(pool.vtime))
        fin = pool.finish
        while fin and fin[0][0] <= limit:
            entry = heapq.heappop(fin)
            if not bound_entry(pool, entry):
                continue
            c = entry[3]
            _pop_finished(c, limit - c.offset, now, finished)
            self._dirty_classes[c] = None
        self._dirty_pools[pool] = None

    def _leave_links(self, f: Flow, now: float) -> None:
        for link in f.links:
            link.nflows -= 1
            if link.solo is f:
                link.solo = None
            elif link.nflows == 1 and not link.watched:
                last = _only_flow(link)  # the link is now private to the flow left on it
                if last is not None:
                    link.solo = last
                    self._reclassify(last, now)

    # -- observation ------------------------------------------------------------------------------

    def utilisation(self, names: Iterable[str]) -> dict[str, float]:
        """Instantaneous load / capacity of the named links."""
        return {n: self.links[n].load / self.links[n].capacity for n in names}


def _may_guard(link: Link) -> bool:
    """A link with a few classes that are not nested under the same larger links (a NIC fetching
    from two targets) may be left out while the solution keeps it below capacity."""
    n = len(link.classes)
    if not 2 <= n <= _GUARD_CLASSES or link.refused:
        return False
    upper: tuple[Link, ...] | None = None
    differ = False
    for c in link.classes:
        above = tuple(other for other in c.shared if len(other.classes) > n)
        if math.isinf(c.cap) and not any(_tighter(other, link) and other.can_fill() for other in c.shared):
            # Nothing would bound the class. (Of an uncapped class's links that can fill, the one of
            # smallest capacity is never guarded, by this rule: the class stays bounded.)
            return False
        differ = differ or (upper is not None and above != upper)
        upper = above
    return differ  # when nested it folds instead (exact and cheaper)


def _tighter(a: Link, b: Link) -> bool:
    """A strict order of links, smallest capacity first (ties: link order)."""
    return (a.capacity, a.index) < (b.capacity, b.index)


def _nested(link: Link) -> bool:
    """Whether a class on ``link`` also crosses a link that carries more classes (and is not left
    out: a link left out is part of no nesting)."""
    n = len(link.classes)
    c = next(iter(link.classes))
    return any(len(other.classes) > n and not other.slack for other in c.shared)


def _link_index(link: Link) -> int:
    return link.index


def _pop_finished(c: FlowClass, limit: float, now: float, finished: list[Flow]) -> None:
    """Flows of ``c`` whose tag is within ``limit`` (class time) finish now; counts settle later."""
    while True:
        tag = c.head()
        if tag is None or tag > limit:
            return
        f = heapq.heappop(c.heap)[2]
        f.finished_at = now
        finished.append(f)


def _only_flow(link: Link) -> Flow | None:
    """The active flow left alone on ``link``; None when that flow finishes at this instant too."""
    for c in link.classes:
        for _, _, f in c.heap:
            if f.cls is c and f.finished_at is None:
                return f
    return None
