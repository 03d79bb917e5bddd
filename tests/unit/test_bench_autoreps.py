"""repetitions = "auto": the stopping rule on synthetic results, and a seeded simulation that stopping
on the interval's width keeps the shipped method's coverage and false-alarm rate near nominal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import make_run

from skycache.bench import autoreps, stats, tidy

CVS = (0.05, 0.075, 0.10, 0.15, 0.20, 0.40, 0.80)  # the worst case is near the target
TRIALS = 4000
TARGET = 0.10
MIN_REPS, MAX_REPS = 3, 10


def test_within_is_both_sides_of_the_ratio() -> None:
    assert autoreps.within(1.0, 0.92, 1.09, 0.10)
    assert not autoreps.within(1.0, 0.92, 1.11, 0.10)  # high side too far
    assert not autoreps.within(1.0, 0.89, 1.05, 0.10)  # low side too far
    assert not autoreps.within(1.0, math.nan, math.nan, 0.10)  # no interval is never there
    assert autoreps.half_width(2.0, 1.8, 2.3) == pytest.approx(0.15)


def test_rule_on_a_run_names_the_conditions_not_there(tmp_path: Path) -> None:
    run = make_run(
        tmp_path,
        {
            "base": [1000, 1010, 990, 1005],
            "tight": [2000, 2010, 1990, 2004],  # ratio ~2.0, interval a few % wide
            "loose": [500, 1500, 900, 1200],  # its own noise: far from 10 %
        },
    )
    df = tidy.load(run)
    st = autoreps.evaluate(df, ["base", "tight", "loose"], "base", 0.10, 4)
    assert not st.done and list(st.not_reached) == ["loose"]
    assert st.widths["tight"] < 0.10 < st.widths["loose"]
    assert "base" not in st.widths  # the baseline: its noise is inside the others' intervals
    doc = st.as_dict()
    assert doc["rounds_run"] == 4 and doc["reached"] is False and "loose" in doc["not_reached"]


def test_a_noisy_baseline_keeps_every_condition_from_getting_there(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"base": [500, 1500, 900, 1200], "a": [2000, 2010, 1990, 2004]})
    st = autoreps.evaluate(tidy.load(run), ["base", "a"], "base", 0.10, 4)
    assert list(st.not_reached) == ["a"]


def test_failed_repetitions_are_not_data(tmp_path: Path) -> None:
    # "gone" has one failed repetition only: no interval, so not there
    run = make_run(tmp_path, {"base": [1000, 1001, 999], "a": [1000, 1002, 998]}, failed=["gone"])
    st = autoreps.evaluate(tidy.load(run), ["base", "a", "gone"], "base", 0.10, 3)
    assert list(st.not_reached) == ["gone"] and "no ratio" in st.not_reached["gone"]


def _sequential(rng: np.random.Generator, cv: float, true_ratio: float) -> tuple[float, float, float]:
    """One pair per trial (a condition and its baseline, lognormal noise of this CV), rounds from
    MIN_REPS to MAX_REPS, stopping as autoreps.evaluate does: within TARGET after this round and
    after the one before. Returns the coverage of the true ratio, the rate of p < 0.05 and the mean
    repetitions at the stop."""
    sigma = math.sqrt(math.log1p(cv**2))
    a = rng.normal(math.log(true_ratio), sigma, (TRIALS, MAX_REPS))
    b = rng.normal(0.0, sigma, (TRIALS, MAX_REPS))
    stopped = np.zeros(TRIALS, dtype=bool)
    covered = np.zeros(TRIALS, dtype=bool)
    alarm = np.zeros(TRIALS, dtype=bool)
    reps = np.full(TRIALS, MAX_REPS)
    before = np.zeros(TRIALS, dtype=bool)  # within after the round before (n = 2: never, in practice)
    for n in range(MIN_REPS - 1, MAX_REPS + 1):
        res = stats.log_welch(a[:, :n], b[:, :n])
        ratio, low, high = np.exp(res.diff), np.exp(res.low), np.exp(res.high)
        now = autoreps.within(ratio, low, high, TARGET)
        if n >= MIN_REPS:
            stop_now = ~stopped & ((now & before) | (n == MAX_REPS))
            covered[stop_now] = (low[stop_now] <= true_ratio) & (true_ratio <= high[stop_now])
            alarm[stop_now] = res.p[stop_now] < 0.05
            reps[stop_now] = n
            stopped |= stop_now
        before = now
    return float(covered.mean()), float(alarm.mean()), float(reps.mean())


def test_sequential_stopping_on_width_keeps_coverage_and_false_alarms_near_nominal() -> None:
    """Seeded: for each CV, TRIALS "no change" pairs (false alarms, coverage) and TRIALS with a true
    ratio of 1.3 (coverage). Figures printed with -s; docs/bench.md quotes them. False alarms are
    held to 6.5 %, not 5 %: near the target CV stopping on width still costs about one point
    (docs/bench.md, "Auto repetitions"); far from it the rate is nominal."""
    rng = np.random.default_rng(20261212)
    print(f"\nauto repetitions, {stats.METHOD} 95%, target {TARGET:.0%}, {MIN_REPS}..{MAX_REPS}, n={TRIALS}")
    worst = 0.0
    for cv in CVS:
        cover0, alarms, reps0 = _sequential(rng, cv, 1.0)
        cover1, _, reps1 = _sequential(rng, cv, 1.3)
        print(
            f"  CV {cv:5.1%}: coverage {cover0:.3f} (ratio 1) {cover1:.3f} (ratio 1.3), "
            f"false alarms {alarms:.3f}, mean repetitions {reps0:.1f}/{reps1:.1f}"
        )
        assert cover0 >= 0.93 and cover1 >= 0.93, (cv, cover0, cover1)
        assert alarms <= 0.065, (cv, alarms)
        worst = max(worst, alarms)
        if cv >= 0.2:  # hardly ever narrow enough before the cap: a fixed n, nominal
            assert alarms <= 0.06 and reps0 > MAX_REPS - 0.1
    assert worst > 0.0  # the simulation ran
