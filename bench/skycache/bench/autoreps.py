"""``repetitions = "auto"``: keep running rounds until every ratio the report will show is precise.

The rule, checked after each round from ``min_repetitions`` on: every condition that has a baseline
(the report's pairing, :func:`skycache.bench.compare.compare`) must have, on IOPS and in every
direction it has, a ratio interval to that baseline (Welch t 95 % on log values, the report's own
method) no wider than ``target_ci_pct`` on either side of the ratio::

    high / ratio - 1 <= target   and   1 - low / ratio <= target

(the interval is symmetric on the log scale, so the first bound is the binding one) in two
rounds in a row: after round r and, with round r's data left out, after round r - 1. The baseline's
own noise is inside that interval, so a noisy baseline keeps the run going too. The run stops when
every condition is there or at ``max_repetitions``. Failed repetitions are not data: a condition
with fewer than two successful repetitions on a side has no interval and is not there.

Why width, and why twice. Stopping on the interval's *width* (never on the ratio or its p-value)
does not aim at an answer; but a width is small when the repetitions happen to agree, and an
interval computed at such a moment is a little too narrow: stopping at the first narrow interval
covered the true ratio 93 % of the time with 6.5-7 % false alarms at a CV near the target. Asking for
two narrow intervals in a row brings that to about 94 % and 5-6 % (tests/unit/test_bench_autoreps.py,
figures in docs/bench.md); the first possible stop is round min_repetitions + 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from skycache.bench import stats
from skycache.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

    from skycache.bench.scenario import ScenarioModel

METRIC = "iops"
RULE = (
    "after each round from min_repetitions on, stop when every condition's IOPS ratio to its baseline "
    f"({stats.METHOD}, 95%) has high/ratio - 1 <= target and 1 - low/ratio <= target in this round and the "
    "one before, or at max_repetitions"
)


def within(ratio: Any, low: Any, high: Any, target: float) -> Any:
    """Whether intervals are within ``target`` (a fraction) of their ratio; NaN (no interval) is not.
    Works on numbers and on numpy arrays alike (the simulation test uses the arrays)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r, lo, hi = (np.asarray(x, dtype=float) for x in (ratio, low, high))
        ok = (hi / r - 1.0 <= target) & (1.0 - lo / r <= target)
    return ok if ok.ndim else bool(ok)


def half_width(ratio: float, low: float, high: float) -> float:
    """The wider side of the interval relative to the ratio (NaN without an interval)."""
    if not all(math.isfinite(x) for x in (ratio, low, high)) or ratio <= 0:
        return math.nan
    return max(high / ratio - 1.0, 1.0 - low / ratio)


@dataclass(frozen=True)
class Rule:
    target: float  # fraction: 0.10 for target_ci_pct = 10
    min_repetitions: int
    max_repetitions: int

    @classmethod
    def of(cls, model: ScenarioModel) -> Rule:
        return cls(model.target_ci_pct / 100.0, model.min_repetitions, model.max_repetitions)

    def describe(self) -> dict[str, Any]:
        return {
            "rule": RULE,
            "metric": METRIC,
            "target_ci_pct": round(self.target * 100.0, 6),
            "min_repetitions": self.min_repetitions,
            "max_repetitions": self.max_repetitions,
        }


@dataclass(frozen=True)
class Status:
    """Where each condition stands after a round."""

    rounds: int
    widths: dict[str, float] = field(default_factory=dict)  # label -> widest half-width (fraction)
    not_reached: dict[str, str] = field(default_factory=dict)  # label -> why

    @property
    def done(self) -> bool:
        return not self.not_reached

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds_run": self.rounds,
            "reached": self.done,
            "half_width_pct": {
                k: None if math.isnan(v) else round(v * 100, 2) for k, v in self.widths.items()
            },
            "not_reached": dict(self.not_reached),
        }


def evaluate(
    df: pd.DataFrame, labels: Sequence[str], baseline: str | None, target: float, rounds: int
) -> Status:
    """The rule after round ``rounds``: within target now and, without that round, the round before."""
    now = evaluate_once(df, labels, baseline, target, rounds)
    if "rep" not in df.columns:
        return now
    before = evaluate_once(df[df["rep"] < rounds], labels, baseline, target, rounds - 1)
    missing = dict(now.not_reached)
    for label in labels:
        if label in before.not_reached and label not in missing:
            missing[label] = f"within target only since round {rounds} (needs two rounds in a row)"
    return Status(rounds, now.widths, missing)


def evaluate_once(
    df: pd.DataFrame, labels: Sequence[str], baseline: str | None, target: float, rounds: int
) -> Status:
    """The width check on a run's tidy table: which of ``labels`` (the conditions run) are not within."""
    from skycache.bench import compare  # pandas: only when a rule is evaluated

    try:
        comps = [c for c in compare.compare(df, baseline, metrics=[METRIC]) if c.metric == METRIC]
    except InvalidInput:  # nothing succeeded yet
        comps = []
    by_label: dict[str, list[compare.Comparison]] = {}
    for c in comps:
        by_label.setdefault(c.condition, []).append(c)
    baselines = {c.baseline for c in comps}
    widths: dict[str, float] = {}
    missing: dict[str, str] = {}
    for label in labels:
        mine = by_label.get(label)
        if not mine:
            if label in baselines:
                continue  # a baseline only: its noise is inside the intervals of its conditions
            if len(labels) == 1:  # a scenario of one condition has no ratio: its own interval then
                mine_w = _own_width(df, label)
                widths[label] = mine_w
                if not mine_w <= target:
                    missing[label] = _why(mine_w, target)
                continue
            missing[label] = "no ratio (fewer than 2 successful repetitions, or no baseline)"
            continue
        w = max((half_width(c.ratio.ratio, c.ratio.low, c.ratio.high) for c in mine), key=_nan_high)
        widths[label] = w
        if not all(within(c.ratio.ratio, c.ratio.low, c.ratio.high, target) for c in mine):
            missing[label] = _why(w, target)
    return Status(rounds, widths, missing)


def _nan_high(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _why(width: float, target: float) -> str:
    if math.isnan(width):
        return "no interval (fewer than 2 successful repetitions)"
    return f"interval +-{width * 100:.1f}% > {target * 100:g}%"


def _own_width(df: pd.DataFrame, label: str) -> float:
    from skycache.bench import compare

    rep = compare.per_rep(df)
    mine = rep[rep["label"] == label]
    if mine.empty:
        return math.nan
    widths = []
    for _, g in mine.groupby("direction"):
        centre, lo, hi = stats.geo_mean_ci(g[METRIC].to_numpy(dtype=float))
        widths.append(half_width(centre, lo, hi))
    return max(widths, key=_nan_high)
