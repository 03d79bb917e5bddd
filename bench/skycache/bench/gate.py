"""The regression gate's own checks: that it compared something, and how small a change it could see.

A gate that compared nothing passes silently forever, so it fails instead (:func:`check_gated`).
And a pass means little if the baseline is so noisy that only a halving would be flagged, so the gate
states the smallest change it could have detected (:func:`detectable`), from the baseline's noise:

- the spread is the sample standard deviation ``s`` of the baseline repetitions' log values (fio
  throughput and latency are multiplicative: the log scale makes "x0.7" and "x1/0.7" equally far);
- the new run is assumed to be as noisy as the baseline, with its own number of repetitions ``n_a``;
- a Welch t test on log values at the gate's alpha (two-sided) flags a change ``d`` (on the log
  scale) when ``|d| > t(1 - alpha/2, df) * s * sqrt(1/n_a + 1/n_b)``, df from Welch-Satterthwaite
  with equal variances. That threshold is the smallest *observed* change that can be significant; a
  true change of that size is caught about half the time (50 % power). For 80 % power the change must
  be larger by ``t(0.8, df)`` standard errors.

The gate also needs the change to exceed its percentage threshold, so what it can flag is the larger
of the two.

The gated metrics are ``compare.GATED`` (IOPS, bandwidth, mean latency and the bytes read from the
repository per byte the workload read, those a run has), or the ``--metric`` ones; a metric with no
worse side (promotions, dirty blocks, flushed bytes, raw repository bytes) cannot be gated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from skycache.bench import compare as comparing
from skycache.errors import InvalidInput


@dataclass(frozen=True)
class Detectable:
    condition: str
    direction: str
    metric: str
    n_a: int
    n_b: int
    log_sd: float  # of the baseline repetitions
    ratio_50: float  # the ratio (new / baseline) at the edge of significance, on the "worse" side
    ratio_80: float  # the ratio a true change needs to be caught 80 % of the time

    def fmt(self) -> str:
        return (
            f"{self.condition} [{self.direction}] {self.metric}: {_pct(self.ratio_50)} "
            f"(80% power: {_pct(self.ratio_80)}; baseline n={self.n_b}, sd of log values {self.log_sd:.2f}, "
            f"new n={self.n_a})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "condition": self.condition,
            "direction": self.direction,
            "metric": self.metric,
            "n": self.n_a,
            "baseline_n": self.n_b,
            "baseline_log_sd": _json_number(self.log_sd),
            "ratio_50pct_power": _json_number(self.ratio_50),
            "ratio_80pct_power": _json_number(self.ratio_80),
        }


METHOD = "Welch t on log values, baseline's spread for both runs, two-sided"
ALPHA = 0.05  # the gate's: its comparisons are 95 % intervals


def _json_number(x: float) -> float | None:
    """NaN and infinity are not JSON: null (not measurable / not detectable)."""
    return x if math.isfinite(x) else None


def _pct(ratio: float) -> str:
    if math.isnan(ratio):
        return "-"
    if math.isinf(ratio):
        return "not detectable"
    return f"{(ratio - 1.0) * 100.0:+.0f}%"


def log_threshold(log_sd: float, n_a: int, n_b: int, alpha: float, power: float = 0.5) -> float:
    """The change on the log scale a Welch t test at ``alpha`` detects with ``power`` (see module)."""
    if n_a < 2 or n_b < 2 or not math.isfinite(log_sd):
        return math.inf
    wa, wb = 1.0 / n_a, 1.0 / n_b
    df = (wa + wb) ** 2 / (wa**2 / (n_a - 1) + wb**2 / (n_b - 1))
    se = log_sd * math.sqrt(wa + wb)
    z = float(sps.t.ppf(1.0 - alpha / 2.0, df))
    if power > 0.5:
        z += float(sps.t.ppf(power, df))
    return z * se


def _worse(metric: str, log_change: float) -> float:
    """The ratio that is ``log_change`` worse: below 1 for throughput, above 1 for latency."""
    return math.exp(-log_change if comparing.METRICS[metric] else log_change)


def detectable(
    df: pd.DataFrame,
    comps: Sequence[comparing.Comparison],
    base_run: str,
    alpha: float,
    metrics: Sequence[str] = comparing.GATED,
    *,
    relative_to: str | None = None,
) -> list[Detectable]:
    """For each gated comparison against ``base_run``: the smallest worsening it could detect (of the
    speeds relative to ``relative_to`` when the comparison was)."""
    rep = comparing.rep_table(df, relative_to)
    out = []
    prefix = f"{base_run}:"
    for c in comps:
        if c.metric not in metrics:
            continue
        base_label = c.baseline[len(prefix) :] if c.baseline.startswith(prefix) else c.baseline
        sel = rep[
            (rep["run_id"] == base_run) & (rep["label"] == base_label) & (rep["direction"] == c.direction)
        ]
        values = sel[c.metric].to_numpy(dtype=float) + comparing.FLOORS.get(c.metric, 0.0)
        values = values[np.isfinite(values) & (values > 0)]
        sd = float(np.std(np.log(values), ddof=1)) if values.size >= 2 else math.nan
        n_a = c.ratio.n_a
        out.append(
            Detectable(
                c.condition, c.direction, c.metric, n_a, int(values.size), sd,
                _worse(c.metric, log_threshold(sd, n_a, int(values.size), alpha)),
                _worse(c.metric, log_threshold(sd, n_a, int(values.size), alpha, power=0.8)),
            )
        )  # fmt: skip
    return out


def check_metrics(metrics: Sequence[str]) -> None:
    """Refuse (one line) a gate asked for a metric that has no worse side."""
    for m in metrics:
        if not comparing.gateable(m):
            raise InvalidInput(
                f"--metric {m!r} has no better or worse side (higher or lower is not a regression); "
                f"the gate can use: {', '.join(k for k in comparing.METRICS if comparing.gateable(k))}"
            )


def check_gated(comps: Sequence[comparing.Comparison], metrics: Sequence[str] = comparing.GATED) -> None:
    """Fail (one line) when the gate has nothing it could flag: no comparison of a gated metric, or
    none with an interval (one repetition on a side can never be significant)."""
    gated = [c for c in comps if c.metric in metrics]
    if not gated:
        raise InvalidInput(
            "gate: no pair of conditions to compare (no condition of the runs has a counterpart with "
            f"{'/'.join(metrics)} measured); a gate that compares nothing cannot pass"
        )
    if all(math.isnan(c.ratio.low) for c in gated):
        n = min(min(c.ratio.n_a, c.ratio.n_b) for c in gated)
        raise InvalidInput(
            f"gate: no comparison has an interval (n={n} repetitions on a side; at least 2 are needed); "
            "a gate that cannot be significant cannot pass"
        )
