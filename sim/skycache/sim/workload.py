"""The VM arrival stream, generated up front as arrays (fast, and reproducible from the seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from skycache.sim import budget
from skycache.sim.scenario import Scenario
from skycache.sim.swf import load_swf


@dataclass(frozen=True)
class Arrivals:
    time: npt.NDArray[np.float64]  # sorted arrival times, seconds
    image: npt.NDArray[np.int64]
    runtime: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.time)


def zipf_images(rng: np.random.Generator, n_images: int, exponent: float, size: int) -> npt.NDArray[np.int64]:
    """Image indices 0..n-1 with P(k) proportional to (k+1)^-exponent (bounded Zipf)."""
    weights = np.arange(1, n_images + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)


def _runtimes(rng: np.random.Generator, sc: Scenario, size: int) -> npt.NDArray[np.float64]:
    if sc.workload.runtime_dist == "fixed":
        return np.full(size, sc.workload.runtime)
    return rng.exponential(sc.workload.runtime, size)


def generate(sc: Scenario, rng: np.random.Generator) -> Arrivals:
    w = sc.workload
    if w.arrivals == "poisson":
        times = np.cumsum(rng.exponential(1.0 / w.rate, w.count))
        runtimes = _runtimes(rng, sc, w.count)
    elif w.arrivals == "burst":
        times = np.sort(rng.uniform(0.0, w.window, w.count)) if w.window > 0 else np.zeros(w.count)
        runtimes = _runtimes(rng, sc, w.count)
    else:
        assert w.trace is not None  # checked by the scenario parser
        trace = load_swf(w.trace, limit=w.count)
        # One VM per allocated processor of each job: a job of 4 processors starts 4 VMs at once.
        reps = trace.processors
        # Checked before np.repeat allocates them: 10**6 jobs of 10**6 processors is 10**12 VMs.
        budget.check_vms(int(reps.sum()), f"trace {str(w.trace)!r}")
        times = np.repeat(trace.submit, reps)
        rt = np.repeat(trace.runtime, reps)
        fallback = _runtimes(rng, sc, len(rt))
        runtimes = np.where(rt > 0, rt, fallback)
        if len(times):
            budget.check_samples(sc, budget.horizon(sc, float(times[-1]), len(times)))
    images = zipf_images(rng, sc.images.count, sc.images.zipf, len(times))
    return Arrivals(time=times.astype(np.float64), image=images, runtime=runtimes.astype(np.float64))
