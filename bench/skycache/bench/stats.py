"""Statistics for comparisons: ratios of geometric means with Welch's t on log values.

Why this method. Throughput and latency are positive and their noise is multiplicative (a busy host
slows every I/O by a factor), so repetitions are close to lognormal and a change is a ratio. On the
log scale a ratio is a difference of means, and Welch's t test (unequal variances: a cached and an
uncached stack do not share their noise) gives an interval for it whose coverage holds at n = 3,
where a percentile bootstrap of three values covers about 80 % instead of 95 %. exp() of the interval
of the difference of log means is the interval of the ratio of geometric means. The coverage and the
false-alarm rate were checked by simulation (tests/unit/test_bench_stats.py, docs/bench.md).

Values that are not positive and finite have no logarithm: they are dropped and counted (``dropped``),
never silently. With fewer than two values on a side there is no interval and no test: the comparison
is "not significant", never a finding.

A report makes many comparisons; ``adjust`` applies Holm's step-down correction across a family of
them (per metric), and the verdict uses the adjusted p. A side whose repetitions have a coefficient of
variation above ``UNSTABLE_CV`` gets "unstable (CV 84 %)" in place of a verdict: the repetitions
disagree too much for a direction to be worth reporting, whatever the test says.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

DEFAULT_CONFIDENCE = 0.95
UNSTABLE_CV = 0.5  # sample CV (std/mean) of one side's repetitions above which no verdict is given
METHOD = "Welch t on log"

Values = Sequence[float] | np.ndarray


class LogWelch(NamedTuple):
    """Welch's t on log values, one entry per row: difference of log means, its interval, two-sided p."""

    diff: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray


def log_welch(log_a: np.ndarray, log_b: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> LogWelch:
    """Welch's t test of mean(log_a) - mean(log_b) along the last axis (shapes (k, n_a) and (k, n_b)).

    Vectorised so that a simulation of thousands of comparisons is one call. Rows where neither side
    varies have no estimate of the noise: NaN interval and p (scipy would report certainty).
    """
    la, lb = np.atleast_2d(np.asarray(log_a, dtype=float)), np.atleast_2d(np.asarray(log_b, dtype=float))
    diff = la.mean(axis=-1) - lb.mean(axis=-1)
    nan = np.full(diff.shape, math.nan)
    if la.shape[-1] < 2 or lb.shape[-1] < 2:
        return LogWelch(diff, nan, nan.copy(), nan.copy())
    # max - min is exactly 0 for repeated values, where a variance can be a rounding error above it
    flat = (np.ptp(la, axis=-1) == 0.0) & (np.ptp(lb, axis=-1) == 0.0)
    if flat.any():  # give scipy data it can work on, then blank those rows
        la, lb = la.copy(), lb.copy()
        la[flat] = np.arange(la.shape[-1], dtype=float)
        lb[flat] = np.arange(lb.shape[-1], dtype=float)
    with warnings.catch_warnings():
        # near-identical repetitions make scipy warn about precision; the answer is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(la, lb, axis=-1, equal_var=False)
        ci = res.confidence_interval(confidence)

    def blank(x: object) -> np.ndarray:
        return np.where(flat, math.nan, np.asarray(x, dtype=float))

    return LogWelch(diff, blank(ci.low), blank(ci.high), blank(res.pvalue))


def holm(p: Values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are no test: left NaN, not counted).

    scipy has Benjamini-Hochberg (false_discovery_control), which controls a different error; Holm
    controls the chance of any false alarm in the family, which is what a verdict table promises.
    """
    raw = np.asarray(p, dtype=float)
    out = np.full(raw.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(raw))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(raw[idx], kind="stable")]
    scaled = raw[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def clean(values: Values) -> tuple[np.ndarray, int]:
    """The positive finite values (those with a logarithm) and how many others were dropped."""
    a = np.asarray(values, dtype=float).ravel()
    keep = np.isfinite(a) & (a > 0)
    kept: np.ndarray = a[keep]
    return kept, int(a.size - kept.size)


def cv(values: np.ndarray) -> float:
    """Sample coefficient of variation (std with ddof=1 over mean); NaN below two values."""
    if values.size < 2:
        return math.nan
    return float(values.std(ddof=1) / values.mean())


def geo_mean_ci(values: Values, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """Geometric mean and its t interval on log values (NaN interval below two values)."""
    a, _ = clean(values)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    logs = np.log(a)
    centre = float(math.exp(logs.mean()))
    if a.size < 2:
        return centre, math.nan, math.nan
    half = float(sps.t.ppf((1 + confidence) / 2, a.size - 1)) * float(logs.std(ddof=1)) / math.sqrt(a.size)
    return centre, centre * math.exp(-half), centre * math.exp(half)


def cv_label(cv_value: float) -> str:
    return f"unstable (CV {cv_value * 100:.0f} %)"


@dataclass(frozen=True)
class Ratio:
    """Ratio of geometric means, condition (a) over baseline (b), with its interval and test."""

    ratio: float
    low: float
    high: float
    n_a: int
    n_b: int
    confidence: float
    p: float = math.nan  # Welch's two-sided p on log values
    p_adj: float = math.nan  # Holm-adjusted over ``family`` comparisons (= p until adjusted)
    family: int = 1
    cv_a: float = math.nan
    cv_b: float = math.nan
    dropped: int = 0  # values with no logarithm (<= 0, NaN, inf), both sides together

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_adj)

    @property
    def significant(self) -> bool:
        return self.tested and self.p_adj < 1.0 - self.confidence

    @property
    def worst_cv(self) -> float:
        finite = [c for c in (self.cv_a, self.cv_b) if not math.isnan(c)]
        return max(finite) if finite else math.nan

    @property
    def unstable(self) -> bool:
        return not math.isnan(self.worst_cv) and self.worst_cv > UNSTABLE_CV

    @property
    def label(self) -> str:
        """'unstable (CV 84 %)' when a side's repetitions disagree too much, else ''."""
        return cv_label(self.worst_cv) if self.unstable else ""

    @property
    def method(self) -> str:
        if not self.tested:
            return f"no test, n={self.n_a}/{self.n_b}"
        text = f"{METHOD}, n={self.n_a}/{self.n_b}"
        return text + (f", Holm over {self.family}" if self.family > 1 else "")

    @property
    def verdict(self) -> str:
        if self.unstable:
            return self.label
        if not self.significant:
            return "not significant"
        return "higher" if self.ratio > 1.0 else "lower"

    def fmt(self) -> str:
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        if math.isnan(self.low):
            return f"{self.ratio:.2f}x (no CI: n={self.n_a}/{self.n_b}{dropped})"
        return f"{self.ratio:.2f}x [{self.low:.2f}, {self.high:.2f}] ({self.method}{dropped})"


def ratio_ci(a: Values, b: Values, *, confidence: float = DEFAULT_CONFIDENCE) -> Ratio:
    """Ratio of geometric means a / b (a the condition, b the baseline) with Welch's t on log values."""
    xa, drop_a = clean(a)
    xb, drop_b = clean(b)
    n_a, n_b, dropped = int(xa.size), int(xb.size), drop_a + drop_b
    cv_a, cv_b = cv(xa), cv(xb)
    if n_a == 0 or n_b == 0:
        nan = math.nan
        return Ratio(nan, nan, nan, n_a, n_b, confidence, cv_a=cv_a, cv_b=cv_b, dropped=dropped)
    res = log_welch(np.log(xa)[None, :], np.log(xb)[None, :], confidence)
    p = float(res.p[0])
    return Ratio(
        float(np.exp(res.diff[0])),
        float(np.exp(res.low[0])),
        float(np.exp(res.high[0])),
        n_a,
        n_b,
        confidence,
        p=p,
        p_adj=p,
        cv_a=cv_a,
        cv_b=cv_b,
        dropped=dropped,
    )


def adjust(ratios: Sequence[Ratio]) -> list[Ratio]:
    """Holm-adjust one family of ratios; the family counts only the ratios that had a test."""
    p_adj = holm([r.p for r in ratios])
    family = int(np.isfinite(p_adj).sum())
    return [
        replace(r, p_adj=float(q), family=family if r.tested else 1)
        for r, q in zip(ratios, p_adj, strict=True)
    ]
