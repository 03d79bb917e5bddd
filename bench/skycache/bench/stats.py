"""Statistics for comparisons: ratio of means with a bootstrap confidence interval.

Each side is resampled independently (the repetitions of two conditions are independent runs); the
interval is the percentile interval of the resampled ratios. A ratio whose interval contains 1 is
"not significant". With fewer than two repetitions on a side there is no interval (NaN) and the
comparison is reported as not significant, never as a finding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 5000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Ratio:
    ratio: float
    low: float
    high: float
    n_a: int
    n_b: int
    confidence: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.low) and (self.low > 1.0 or self.high < 1.0)

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "not significant"
        return "higher" if self.ratio > 1.0 else "lower"

    def fmt(self) -> str:
        if math.isnan(self.low):
            return f"{self.ratio:.2f}x (no CI: n={self.n_a}/{self.n_b})"
        return f"{self.ratio:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    a: np.ndarray = np.asarray(values, dtype=float)
    out: np.ndarray = a[np.isfinite(a)]
    return out


def mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and bootstrap percentile interval of the mean (NaN interval for n < 2)."""
    a = _clean(values)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if a.size < 2:
        return m, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return m, float(lo), float(hi)


def ratio_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Ratio:
    """mean(a) / mean(b) with a bootstrap interval (a is the condition, b the baseline)."""
    xa, xb = _clean(a), _clean(b)
    if xa.size == 0 or xb.size == 0 or xb.mean() == 0:
        return Ratio(math.nan, math.nan, math.nan, int(xa.size), int(xb.size), confidence)
    r = float(xa.mean() / xb.mean())
    if xa.size < 2 or xb.size < 2:
        return Ratio(r, math.nan, math.nan, int(xa.size), int(xb.size), confidence)
    rng = np.random.default_rng(seed)
    ma = xa[rng.integers(0, xa.size, size=(resamples, xa.size))].mean(axis=1)
    mb = xb[rng.integers(0, xb.size, size=(resamples, xb.size))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ma / mb
    ratios = ratios[np.isfinite(ratios)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return Ratio(r, float(lo), float(hi), int(xa.size), int(xb.size), confidence)
