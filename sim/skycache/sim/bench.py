"""Speed benchmark: wall time, events per second and peak memory of one large run."""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from skycache.sim.calibration import Calibration
from skycache.sim.model import ClusterModel
from skycache.sim.scenario import ScenarioFile


@dataclass(frozen=True)
class BenchResult:
    nodes: int
    vms: int
    wall_s: float
    cpu_s: float  # process CPU time: the fair figure on a machine shared with other work
    events: int
    flows: int
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
        peak_rss_bytes=_maxrss_bytes(),
        peak_traced_bytes=traced,
    )


DEFAULT_SCENARIO = Path(__file__).resolve().parents[3] / "scenarios" / "sim-scale.toml"
