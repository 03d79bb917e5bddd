"""Making a dm-cache read cache warm for certain, and saying what it held.

smq promotes blocks by hotness and runs its migrations (the copies into the cache) as background
work, throttled while the device is busy (``migration_threshold``) and given room once it has been
idle for a second (dm-cache-target.c, ``spare_migration_bandwidth``). So "read the working set four
times" leaves the cache as warm as the machine's speed allowed: a slow machine saw a third of the
blocks still uncached. The helpers here read in passes with idle gaps and stop only when a whole pass
had no read miss, which is the state a test of "the second VM reads from the cache" needs; when the
cache does not get there, the assertion says how far it got, pass by pass.
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
    settled_after: int | None = None,
) -> list[WarmPass]:
    """Run ``read_pass`` until one pass has no read miss on dm-cache ``name``; returns every pass.

    Between passes the device stays idle for ``idle_s`` so that smq's queued promotions run. Fails
    (with the trace of every pass) when ``max_passes`` are not enough. ``settled_after``: also stop
    once that many passes in a row promoted nothing more (smq can leave a few blocks of a region out
    for good: seen in writeback mode with 256 KiB blocks, 28 of 32 cached and then no change); the
    caller then asserts what it needs of the state it got.
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
        recent = passes[-(settled_after or 0) - 1 :]
        if settled_after and len(recent) > settled_after and len({x.cache_used for x in recent}) == 1:
            return passes
        time.sleep(idle_s)
    trace = "; ".join(f"pass {i}: {p}" for i, p in enumerate(passes, 1))
    raise AssertionError(f"read cache {name} not warm after {max_passes} passes: {trace}")
