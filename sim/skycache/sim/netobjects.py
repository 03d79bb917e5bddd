"""The objects of the flow network: links, flows, classes of flows and pools of classes.

A class keeps the virtual clock of its flows (bytes served to each), or is bound to its pool's clock
by an offset; a pool keeps the water-filling of its classes over sorted caps. How they are used to
solve max-min, and what that costs, is in :mod:`skycache.sim.network`.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import simpy

# Relative band around a pool's water level where a class may sit on either side: inside it the two
# sides give the same rate to 1e-12, and it stops rounding from moving a class back and forth.
TIE = 1e-12

# A class's side in its pool's water-filling.
OUT, SHARING, CAPPED = 0, 1, 2


class Link:
    """A shared resource with a capacity in bytes per second (a NIC direction, a link, a disk)."""

    __slots__ = (
        "_fold",
        "_fold_stamp",
        "_level",
        "_level_stamp",
        "_load",
        "_n",
        "_rem",
        "_stamp",
        "bound",
        "bound_ops",
        "bytes_done",
        "capacity",
        "classes",
        "fold_state",
        "folded_by",
        "groups",
        "guard_ver",
        "guarded",
        "index",
        "is_multi",
        "name",
        "nflows",
        "peak",
        "pools",
        "refused",
        "slack",
        "solo",
        "t_mark",
        "unbounded",
        "watched",
    )

    def __init__(self, name: str, capacity: float, *, index: int = 0, watched: bool = True) -> None:
        if not capacity > 0 or not math.isfinite(capacity):
            raise ValueError(f"link {name}: capacity must be positive and finite")
        self.name = name
        self.capacity = float(capacity)
        self.index = index
        self.watched = watched
        self.nflows = 0
        self.solo: Flow | None = None  # the only flow on an unwatched link: a private link
        self.classes: dict[FlowClass, None] = {}  # classes that share this link (insertion order)
        self.pools: dict[Pool, None] = {}  # pools whose key contains this link
        self.is_multi = False  # carried two classes or more at the last solve
        self.folded_by = 0  # classes whose cap holds this link's water level (see _foldable)
        self.slack = False  # left out of the solve: cannot fill (see _is_slack), or guarded
        self.guarded = False  # left out while the solution keeps it below capacity (see _guard)
        self.guard_ver = 0
        self.refused = False  # a guard failed: not guarded again until its classes change
        # An upper bound on this link's load at any allocation its classes' other links and caps allow
        # (see move_bound): classes grouped by the smallest-capacity other link they cross, each group
        # counting at most that link's capacity. A fetch from 8 targets through a rack downlink:
        # at most the 8 targets' disks, however many classes the rack carries.
        # group link -> [sum of bounds, classes]; None until a class shares the link (a million
        # private NICs hold no dict)
        self.groups: dict[Link | None, list[float]] | None = None
        self.bound = 0.0  # sum over groups of min(group link's capacity, its sum)
        self.unbounded = 0  # classes without another link or a cap: no bound at all
        self.bound_ops = 0
        self._load = 0.0  # watched links: sum of current flow rates, bytes/s
        self.peak = 0.0
        self.bytes_done = 0.0  # watched links: bytes carried up to t_mark
        self.t_mark = 0.0
        self._rem = 0.0  # scratch state of progressive filling
        self._n = 0
        self._stamp = -1
        self.fold_state = False  # foldable when its classes were last placed
        self._fold = False  # memo of Network._foldable / _fold_level for one solve
        self._fold_stamp = -1
        self._level = 0.0
        self._level_stamp = -1

    def __repr__(self) -> str:
        return f"Link({self.name!r}, {self.capacity:g})"

    @property
    def flows(self) -> int:
        """Active flows on this link."""
        return self.nflows

    @property
    def load(self) -> float:
        """Sum of the current rates of the flows on this link, bytes/s."""
        if self.watched:
            return self._load
        if self.solo is not None:
            return self.solo.rate
        return sum(c.n * c.current_rate() for c in self.classes)

    @property
    def peak_load(self) -> float:
        """Largest instantaneous load so far (watched links only)."""
        self._require_watched("peak load")
        return self.peak

    def bytes_at(self, now: float) -> float:
        """Bytes carried by this link from t=0 to ``now`` (exact, not sampled; watched links only)."""
        self._require_watched("carried bytes")
        return self.bytes_done + self._load * (now - self.t_mark)

    def _require_watched(self, what: str) -> None:
        if not self.watched:
            raise ValueError(f"link {self.name} is not watched: its {what} is not tracked")

    def move_bound(self, group: Link | None, old: float | None, new: float | None) -> None:
        """One class's bound in ``group`` goes from ``old`` to ``new`` (None: not on this link). The
        group is the class's smallest-capacity other link, or None when it crosses no other (its
        own cap bounds it)."""
        groups = self.groups
        if groups is None:
            groups = self.groups = {}
        entry = groups.get(group)
        if entry is None:
            entry = groups[group] = [0.0, 0]
        before = _group_bound(group, entry[0])
        for value, sign in ((old, -1), (new, 1)):
            if value is None:
                continue
            if math.isinf(value):
                self.unbounded += sign
            else:
                entry[0] += sign * value
            entry[1] += sign
        if entry[1] == 0:
            del groups[group]
            after = 0.0
        else:
            after = _group_bound(group, entry[0])
        self.bound_ops += 1
        if not groups:
            self.bound = 0.0  # nothing left: no rounding carried over
        elif self.bound_ops % 1024 == 0:
            self.bound = math.fsum(_group_bound(g, e[0]) for g, e in groups.items())
        else:
            self.bound += after - before

    def can_fill(self) -> bool:
        """Whether the bound leaves this link any chance to fill (1e-9 margin for the rounding of
        the sums kept by additions and subtractions)."""
        return self.unbounded > 0 or self.bound > self.capacity * (1 - 1e-9)


def _group_bound(group: Link | None, total: float) -> float:
    if group is None:
        return total
    return min(group.capacity, total)


class FlowClass:
    """Active flows with the same shared links and cap: one rate, one virtual clock."""

    __slots__ = (
        "_new",
        "_stamp",
        "alive",
        "bound",
        "bound_groups",
        "bound_n",
        "cap",
        "cid",
        "eff",
        "folded",
        "heap",
        "key",
        "multi",
        "n",
        "offset",
        "pool",
        "rate",
        "shared",
        "side",
        "t_mark",
        "version",
        "vtime",
        "watched_extra",
        "wf_e",
        "wf_n",
        "wf_ver",
    )

    def __init__(self, cid: int, shared: tuple[Link, ...], cap: float, now: float) -> None:
        self.cid = cid
        self.shared = shared  # links this class shares with other flows, in link order
        self.cap = cap  # own cap folded with the capacities of the flows' private links
        self.key = (shared, cap)
        self.heap: list[tuple[float, int, Flow]] = []  # (virtual finish tag, fid, flow); lazy
        self.n = 0
        self.alive = True
        self.eff = cap  # cap folded with the single-class shared links (capacity / n)
        self.multi: tuple[Link, ...] = ()  # shared links that also carry other classes
        self.folded: tuple[Link, ...] = ()  # shared links whose water level is folded into eff
        self.pool: Pool | None = None
        # Own clock (when not bound to a pool): V = vtime + rate * (now - t_mark).
        self.rate = 0.0
        self.vtime = 0.0
        self.t_mark = now
        # Bound to its pool's clock: V = pool V - offset.
        self.bound = False
        self.offset = 0.0
        self.version = 0  # stamps completion entries (global heap or the pool's)
        self.side = OUT  # water-filling side in the pool, with the n and cap it was entered with
        self.wf_ver = 0
        self.wf_n = 0
        self.wf_e = 0.0
        self.watched_extra: tuple[Link, ...] = ()
        self._stamp = -1
        self._new = 0.0
        # Per shared link: the smallest-capacity other link of the class (ties: link order), which
        # groups its load bound there (Link.move_bound), and that link's capacity (inf: none).
        # bound_n: the count the bounds were last entered with.
        ranked = sorted(shared, key=lambda link: (link.capacity, link.index))[:2]
        groups = []
        for link in shared:
            others = [g for g in ranked if g is not link]
            group = others[0] if others else None
            groups.append((link, group, group.capacity if group is not None else math.inf))
        self.bound_groups: tuple[tuple[Link, Link | None, float], ...] = tuple(groups)
        self.bound_n = 0

    def vnow(self, now: float) -> float:
        if self.bound:
            assert self.pool is not None
            return self.pool.vnow(now) - self.offset
        return self.vtime + self.rate * (now - self.t_mark)

    def current_rate(self) -> float:
        if self.bound:
            assert self.pool is not None
            return self.pool.rate
        return self.rate

    def settle(self, now: float) -> None:
        """Own clock only: fold the time elapsed since t_mark into V."""
        self.vtime += self.rate * (now - self.t_mark)
        self.t_mark = now

    def head(self) -> float | None:
        """Virtual finish tag of the earliest live flow (dropping entries of flows that left)."""
        heap = self.heap
        while heap:
            tag, _, f = heap[0]
            if f.cls is self and f.finished_at is None and f.vtag == tag:
                return tag
            heapq.heappop(heap)
        return None


class Pool:
    """Classes whose shared-with-others links are the same set: water-filling when nothing else
    crosses those links."""

    __slots__ = (
        "_stamp",
        "below",
        "capacity",
        "changed",
        "finish",
        "guards",
        "key",
        "members",
        "n_above",
        "n_below",
        "ops",
        "rate",
        "s_below",
        "sharing",
        "t_mark",
        "valid",
        "version",
        "vtime",
        "watch_bound",
    )

    def __init__(self, key: tuple[Link, ...], now: float) -> None:
        self.key = key
        self.capacity = min(link.capacity for link in key)
        self.members: dict[FlowClass, None] = {}
        self.changed: dict[FlowClass, None] = {}  # members whose n or cap changed since the last fill
        self.valid = False  # water-filling state matches the members
        self.sharing: list[tuple[float, int, int, FlowClass]] = []  # min-heap of caps (lazy)
        self.below: list[tuple[float, int, int, FlowClass]] = []  # max-heap of caps (negated; lazy)
        self.n_above = 0  # flows of sharing classes
        self.n_below = 0  # capped classes
        self.s_below = 0.0  # total rate of capped classes
        self.ops = 0
        self.rate = 0.0  # the water level: per-flow rate of sharing classes
        self.vtime = 0.0
        self.t_mark = now
        self.finish: list[tuple[float, int, int, FlowClass]] = []  # bound classes' heads, pool time
        self.version = 0
        self.watch_bound: dict[FlowClass, None] = {}  # bound classes with other watched links
        self.guards: list[tuple[float, int, int, Link]] = []  # (level budget, seq, version, link)
        self._stamp = -1

    def vnow(self, now: float) -> float:
        return self.vtime + self.rate * (now - self.t_mark)

    def settle(self, now: float) -> None:
        self.vtime += self.rate * (now - self.t_mark)
        self.t_mark = now

    def level(self) -> float:
        if self.n_above > 0:
            return max(0.0, (self.capacity - self.s_below) / self.n_above)
        return math.inf if self.s_below <= self.capacity else -math.inf

    def insert(self, c: FlowClass) -> None:
        """Enter ``c`` (with its current count and cap) on the sharing side."""
        c.wf_n, c.wf_e = c.n, c.eff
        c.side = SHARING
        c.wf_ver += 1
        heapq.heappush(self.sharing, (c.eff, c.cid, c.wf_ver, c))
        self.n_above += c.n

    def remove(self, c: FlowClass) -> None:
        """Take ``c`` out of the water-filling, with the count and cap it was entered with."""
        if c.side == SHARING:
            self.n_above -= c.wf_n
        elif c.side == CAPPED:
            self.n_below -= 1
            self.s_below = self.s_below - c.wf_n * c.wf_e if self.n_below else 0.0
        c.side = OUT
        c.wf_ver += 1

    def rebalance(self) -> list[FlowClass]:
        """Move classes across the water level until every capped class is below it and every
        sharing class above. Each move raises the level (it never exceeds the true one), so this
        ends; a change usually moves nothing."""
        moved: list[FlowClass] = []
        sharing, below = self.sharing, self.below
        while True:
            level = self.level()
            while sharing and (sharing[0][2] != sharing[0][3].wf_ver or sharing[0][3].side != SHARING):
                heapq.heappop(sharing)
            while below and (below[0][2] != below[0][3].wf_ver or below[0][3].side != CAPPED):
                heapq.heappop(below)
            if sharing and sharing[0][0] < level * (1 - TIE):
                c = heapq.heappop(sharing)[3]
                self.n_above -= c.wf_n
                self.n_below += 1
                self.s_below += c.wf_n * c.wf_e
                c.side = CAPPED
                c.wf_ver += 1
                heapq.heappush(below, (-c.wf_e, c.cid, c.wf_ver, c))
                moved.append(c)
            elif below and -below[0][0] > level * (1 + TIE):
                c = heapq.heappop(below)[3]
                self.n_below -= 1
                self.s_below = self.s_below - c.wf_n * c.wf_e if self.n_below else 0.0
                self.n_above += c.wf_n
                c.side = SHARING
                c.wf_ver += 1
                heapq.heappush(sharing, (c.wf_e, c.cid, c.wf_ver, c))
                moved.append(c)
            else:
                return moved


class Flow:
    """``size`` bytes; ``done`` fires (value: the flow) when the last byte arrives."""

    __slots__ = ("cap", "cls", "done", "fid", "finished_at", "links", "size", "start", "tag", "vtag")

    def __init__(
        self, fid: int, size: float, links: tuple[Link, ...], cap: float, done: simpy.Event, start: float
    ) -> None:
        self.fid = fid
        self.size = size
        self.links = links
        self.cap = cap
        self.done = done
        self.start = start
        self.tag: Any = None
        self.cls: FlowClass | None = None
        self.vtag = 0.0  # the class's virtual time at which this flow is complete
        self.finished_at: float | None = None

    @property
    def rate(self) -> float:
        if self.finished_at is not None or self.cls is None:
            return 0.0
        return self.cls.current_rate()

    def remaining_at(self, now: float) -> float:
        if self.finished_at is not None or self.cls is None:
            return 0.0
        return max(0.0, self.vtag - self.cls.vnow(now))


def bound_entry(pool: Pool, entry: tuple[float, int, int, FlowClass]) -> bool:
    c = entry[3]
    return entry[2] == c.version and c.bound and c.pool is pool
