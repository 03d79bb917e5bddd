"""The fio gate's error rates, measured by replaying the committed baseline's repetitions.

Not a timing: pytest-benchmark runs the replay once (so it runs under ``--benchmark-only`` too) and
the figures are printed (``-s``) and kept in the benchmark's ``extra_info`` (``--benchmark-json``).

Each trial draws two runs of the baseline's size from its own repetitions, with replacement, whole
rounds at a time (a round's conditions, and a repetition's IOPS, bandwidth and latency, stay together:
the reference stack's value in a round is the one measured beside the stack under test), and gates
the second against the first exactly as ``bench compare A B --relative-to lvm-local
--fail-on-regression 30`` (``make bench-ci``) does: compare, then regressions on the gated metrics.
A/A: both runs from the baseline as it is; slowdown: the second run's stack under test (not the
reference) with throughput x 0.7 and latencies / 0.7. Resampling n values with replacement understates their
spread by a factor sqrt((n-1)/n) and repeats values, so these rates are estimates of the real gate's,
from the only noise measured on this machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pytest_benchmark.fixture import BenchmarkFixture
from scipy import stats as sps

import skycache.bench
from skycache.bench import compare

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "results" / "regression" / "baseline"
TRIALS = 400
GATE_PCT = 30.0
SLOWDOWN = 0.7
SEED = 12
REFERENCE = "lvm-local"  # the Makefile's BENCH_REFERENCE
_THROUGHPUT = ("iops", "bw_bytes")
# lat_p99_ns only where the run recorded total-latency percentiles (the committed baseline predates
# them: its p99 is completion latency, read back as clat_p99_ns, which the gate does not gate).
_LATENCY_CANDIDATES = ("lat_mean_ns", "lat_p99_ns")


def _draw(
    ok: pd.DataFrame, reps: list[np.ndarray], rng: np.random.Generator, run: str, factor: float
) -> pd.DataFrame:
    picked = rng.integers(0, len(reps), size=len(reps))
    rows = np.concatenate([reps[k] for k in picked])
    out = ok.iloc[rows].copy()
    out["run_id"] = run
    out["rep"] = np.repeat(np.arange(1, len(picked) + 1), [len(reps[k]) for k in picked])
    slowed = out["stack"] != REFERENCE
    out.loc[slowed, list(_THROUGHPUT)] *= factor
    out.loc[slowed, [c for c in _LATENCY_CANDIDATES if c in out.columns]] /= factor
    return out


def _flagged(base: pd.DataFrame, new: pd.DataFrame) -> bool:
    comps = compare.compare(pd.concat([base, new], ignore_index=True), metrics=compare.GATED,
                            relative_to=REFERENCE)  # fmt: skip
    return bool(compare.regressions(comps, GATE_PCT))


def replay(trials: int, factor: float, seed: int) -> tuple[int, int, int]:
    """(trials the gate flagged, trials a second new run confirmed, trials) for new runs ``factor``
    times the baseline's speed: make bench-ci fails only when a confirming run is flagged too."""
    df = skycache.bench.load(BASELINE)
    ok = df[(df["status"] == "ok") & (df["direction"] != "")].reset_index(drop=True)
    ok = ok[["run_id", "condition", "label", "stack", "workload", "rep", "direction", "status",
             *_THROUGHPUT, *(c for c in _LATENCY_CANDIDATES if c in df.columns)]]  # fmt: skip
    reps = [np.flatnonzero(ok["rep"] == r) for r in sorted(set(ok["rep"]))]
    rng = np.random.default_rng(seed)
    flagged = confirmed = 0
    for _ in range(trials):
        base = _draw(ok, reps, rng, "A", 1.0)
        if _flagged(base, _draw(ok, reps, rng, "B", factor)):
            flagged += 1
            # the confirming run is new; the baseline is the same committed run
            confirmed += _flagged(base, _draw(ok, reps, rng, "B", factor))
    return flagged, confirmed, trials


def _rate(hits: int, n: int) -> str:
    ci = sps.binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return f"{100 * hits / n:.1f}% [{100 * ci.low:.1f}, {100 * ci.high:.1f}] (n={n} trials)"


def test_gate_false_alarms_and_detection_on_the_baseline(benchmark: BenchmarkFixture) -> None:
    def both() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return replay(TRIALS, 1.0, SEED), replay(TRIALS, SLOWDOWN, SEED + 1)

    (aa, aa_confirmed, n_aa), (hit, hit_confirmed, n_hit) = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(
        aa_false_alarms=aa / n_aa,
        aa_confirmed_false_alarms=aa_confirmed / n_aa,
        detection_30pct=hit / n_hit,
        confirmed_detection_30pct=hit_confirmed / n_hit,
        trials=TRIALS,
    )
    print(
        f"\ngate replay of {BASELINE.relative_to(ROOT)} (--relative-to {REFERENCE} "
        f"--fail-on-regression {GATE_PCT:g}):"
        f"\n  A/A false alarms: {_rate(aa, n_aa)}; confirmed by a second run: {_rate(aa_confirmed, n_aa)}"
        f"\n  30% slowdown detected: {_rate(hit, n_hit)}; confirmed: {_rate(hit_confirmed, n_hit)}"
    )
    # the gate must tell a slowdown from no change at all, whatever its rates
    assert hit > aa and hit_confirmed > aa_confirmed
