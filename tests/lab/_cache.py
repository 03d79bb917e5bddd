"""Making a dm-cache read cache warm for certain, and saying what it held.

smq promotes blocks by hotness and runs its migrations (the copies into the cache) as background
work, throttled while the device is busy (``migration_threshold``) and given room once it has been
idle for a second (dm-cache-target.c, ``spare_migration_bandwidth``). So "read the working set four
times" leaves the cache as warm as the machine's speed allowed: a slow machine saw a third of the
blocks still uncached. And smq need not cache the whole working set at all: its promotion threshold
rises as the cache's hit ratio rises (dm-cache-policy-smq.c, ``default_promote_level``: "if it isn't
broken, don't fix it"), so a region can stay at 25 of its 32 blocks cached for good (seen on a fresh
CI machine: 100 hits and 28 misses per pass, 20 passes in a row).

So the helper reads in passes with idle gaps until the cache is settled, that is a whole pass without
a read miss or several passes that promoted nothing more, and returns every pass. Tests then assert
against what the cache holds, measured in the same run (the last pass's hits and misses), never
against "every block is cached"; and they assert that enough was cached for the check to mean
something.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from skycache.runner import Runner
from skycache.storage.caches import cachestatus
from skycache.storage.caches.cachestatus import CacheStatus


@dataclass(frozen=True)
class WarmPass:
    hits: int
    misses: int
    cache_used: int
    promotions: int

    @property
    def hit_ratio(self) -> float:
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    def __str__(self) -> str:
        return f"hits {self.hits}, misses {self.misses}, cached blocks {self.cache_used}"


def read_cache_status(runner: Runner, name: str) -> CacheStatus:
    st = cachestatus.status(runner, name)
    assert isinstance(st, CacheStatus), f"{name} is not a dm-cache device: {st}"
    return st


def warm_read_cache(
    runner: Runner,
    name: str,
    read_pass: Callable[[], object],
    *,
    max_passes: int = 25,
    idle_s: float = 2.0,
    settled_after: int = 3,
    require_settled: bool = True,
) -> list[WarmPass]:
    """Run ``read_pass`` until dm-cache ``name`` is settled; returns every pass.

    Settled: one pass had no read miss, or ``settled_after`` passes in a row after the last
    promotion left the number of cached blocks unchanged. Between passes the device stays idle for
    ``idle_s`` so that smq's queued promotions run. Fails (with the trace of every pass) when
    ``max_passes`` are not enough to settle, unless ``require_settled`` is false: then the passes are
    returned as they are, for a caller that compares with what its last pass found (on a loaded TCG
    machine smq may still be promoting a block or two per pass after 25 passes).
    """
    passes: list[WarmPass] = []
    for _ in range(max_passes):
        before = read_cache_status(runner, name)
        read_pass()
        after = read_cache_status(runner, name)
        p = WarmPass(
            after.read_hits - before.read_hits,
            after.read_misses - before.read_misses,
            after.cache_used,
            after.promotions,
        )
        passes.append(p)
        if p.misses == 0 and p.hits > 0:
            return passes
        recent = passes[-settled_after - 1 :]
        if len(recent) > settled_after and len({x.cache_used for x in recent}) == 1:
            return passes
        time.sleep(idle_s)
    if not require_settled:
        return passes
    raise AssertionError(f"read cache {name} not settled after {max_passes} passes: {trace(passes)}")


def trace(passes: list[WarmPass]) -> str:
    return "; ".join(f"pass {i}: {p}" for i, p in enumerate(passes, 1))
