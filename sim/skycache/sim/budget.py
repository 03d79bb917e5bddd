"""What a scenario will cost, estimated before the model starts, and the bounds it must stay under.

The model allocates per-VM arrays up front and appends one row per monitored series at every sample,
so a 1 ns sample interval or a trace asking for 10**12 VMs is a MemoryError (or hours of swap) long
after the run started. These estimates are cheap upper-bound guesses from the scenario alone; a value
above a bound is refused by name, with the bound, before anything is allocated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from skycache.errors import InvalidInput

if TYPE_CHECKING:
    from skycache.sim.scenario import Scenario

# VM starts one run may simulate: `sim bench` runs 1,000,000 in about a minute per 100k; ten times
# that is hours and several GiB of per-VM arrays and events.
MAX_VMS = 10_000_000
# Worker nodes (and targets, gateways, replicas): each is a few links and Python objects.
MAX_NODES = 1_000_000
# Images: the Zipf weights are one float array of this length.
MAX_IMAGES = 10_000_000
# Sample ticks of one run, and rows of the time series they produce (a row is ~120 bytes of Python
# objects: 20 million rows is about 2.4 GB).
MAX_SAMPLES = 1_000_000
MAX_SERIES_ROWS = 20_000_000
# Points of a sweep (grid points x variants x replications) run without --yes or sweep.max_points.
DEFAULT_MAX_POINTS = 1000
# Even with --yes: the task list of the sweep is held in memory and every point is validated first.
HARD_MAX_POINTS = 10_000_000


def series_per_sample(sc: Scenario) -> int:
    """Rows the sampler appends per tick (see ClusterModel._sampler): links of the central targets,
    the distributed holders' summaries, the rack uplinks' summaries, the cluster counters and the NAT
    gauges."""
    rows = 6 + (3 * sc.repository.targets if sc.repository.kind == "central" else 4)
    if sc.cluster.racks:
        rows += 4
    if sc.nat.mode == "per-node":
        rows += 4
    elif sc.nat.mode == "central":
        rows += 4 * sc.nat.gateways
    return rows


def horizon(sc: Scenario, last_arrival: float | None = None, vms: int | None = None) -> float | None:
    """Simulated seconds the run lasts: the duration when set, else (a generous guess) the last
    arrival plus the longest run time of so many exponential run times. None when not known yet
    (an SWF trace before it is read)."""
    if sc.duration > 0:
        return sc.duration
    w = sc.workload
    n = w.count if vms is None else vms
    if last_arrival is None:
        if w.arrivals == "poisson":
            last_arrival = w.count / w.rate
        elif w.arrivals == "burst":
            last_arrival = w.window
        else:
            return None
    tail = w.runtime * (1.0 + math.log(max(n, 1))) if w.runtime_dist == "exponential" else w.runtime
    return last_arrival + tail


def check_samples(sc: Scenario, span: float | None) -> None:
    """Refuse a sample interval that would make more ticks or series rows than the bounds."""
    if span is None:
        return
    ticks = span / sc.sample_interval
    where = f"scenario.sample_interval: {_duration(sc.sample_interval)}"
    if ticks > MAX_SAMPLES:
        raise InvalidInput(
            f"{where} gives about {ticks:.3g} samples over {span:.3g} s simulated, above the bound of "
            f"{MAX_SAMPLES:,}: raise the interval (or set scenario.duration)"
        )
    rows = ticks * series_per_sample(sc)
    if rows > MAX_SERIES_ROWS:
        raise InvalidInput(
            f"{where} gives about {rows:.3g} time-series rows, above the bound of {MAX_SERIES_ROWS:,} "
            "(about 2.4 GB): raise the interval"
        )


def check_vms(vms: int, what: str) -> None:
    if vms > MAX_VMS:
        raise InvalidInput(f"{what} asks for {vms:,} VM starts, above the model's bound of {MAX_VMS:,}")


def check_scenario(sc: Scenario) -> None:
    """Every estimate that the scenario alone decides (SWF traces are checked when read)."""
    check_samples(sc, horizon(sc))


def check_points(points: int, limit: int, yes: bool, what: str) -> None:
    """A sweep of ``points`` runs: refused above ``limit`` unless ``yes``; never above the hard bound."""
    if points > HARD_MAX_POINTS:
        raise InvalidInput(f"{what} has {points:,} runs, above the model's bound of {HARD_MAX_POINTS:,}")
    if points > limit and not yes:
        raise InvalidInput(
            f"{what} has {points:,} runs (grid points x variants x replications), above "
            f"sweep.max_points = {limit:,}: pass --yes or raise sweep.max_points in the file"
        )


def _duration(seconds: float) -> str:
    """A duration in the unit people write it in: 1e-09 -> '1 ns', 0.25 -> '250 ms', 10 -> '10 s'."""
    for factor, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if seconds >= factor:
            return f"{seconds / factor:g} {name}"
    return f"{seconds:g} s"
