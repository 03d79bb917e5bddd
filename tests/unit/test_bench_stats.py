"""The comparison statistics: Welch's t on log values, Holm's correction, unstable and dropped values.

The simulation tests draw lognormal repetitions (the multiplicative noise of a benchmark) with a
coefficient of variation from 5 % to 80 % at the sample sizes the bench uses (3, 5, 10), and check
what docs/bench.md promises: the 95 % interval of the ratio covers the true ratio at least 93 % of
the time, and an A/A comparison (no change) is called significant at most 5 % of the time. The
allowance on false alarms is the Monte Carlo noise of the estimate (2.5 standard errors); the
figures are printed (pytest -s) and quoted in docs/bench.md. Seeded; a few seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import make_run
from scipy import stats as sps

import skycache.bench
from skycache.bench import compare, report, stats

ROOT = Path(__file__).resolve().parents[2]
SIMULATIONS = 20_000  # per cell: a rate of 5 % is then known to +-0.15 % (one standard error)
SIZES = (3, 5, 10)
CVS = (0.05, 0.2, 0.5, 0.8)
TRUE_RATIO = 1.3


def _sigma(cv: float) -> float:
    """The log-scale standard deviation of a lognormal with this coefficient of variation."""
    return math.sqrt(math.log1p(cv * cv))


def _allowance(rate: float, k: int = SIMULATIONS) -> float:
    return 2.5 * math.sqrt(rate * (1 - rate) / k)


def _draw(rng: np.random.Generator, mu: float, cv: float, n: int, k: int = SIMULATIONS) -> np.ndarray:
    return rng.normal(mu, _sigma(cv), (k, n))


@pytest.mark.parametrize("n", SIZES)
def test_interval_coverage_and_false_alarms_on_lognormal_noise(n: int) -> None:
    rng = np.random.default_rng(1200 + n)
    true = math.log(TRUE_RATIO)
    for cv in CVS:
        base = _draw(rng, 0.0, cv, n)
        changed = stats.log_welch(_draw(rng, true, cv, n), base)
        coverage = float(((changed.low <= true) & (true <= changed.high)).mean())
        same = stats.log_welch(_draw(rng, 0.0, cv, n), base)
        false_alarms = float((same.p < 0.05).mean())
        print(f"n={n} CV {cv:.0%}: coverage {coverage:.1%}, A/A false alarms {false_alarms:.2%}")
        assert coverage >= 0.93, (n, cv, coverage)
        assert false_alarms <= 0.05 + _allowance(0.05), (n, cv, false_alarms)


def test_unequal_noise_on_the_two_sides_keeps_coverage() -> None:
    """A cached stack at CV 5 % against an uncached one at 80 %: Welch's df absorb the difference."""
    rng = np.random.default_rng(7)
    for n in SIZES:
        a, b = _draw(rng, 0.0, 0.05, n), _draw(rng, 0.0, 0.8, n)
        r = stats.log_welch(a, b)
        coverage = float(((r.low <= 0) & (r.high >= 0)).mean())
        print(f"n={n} CV 5 % vs 80 %: coverage {coverage:.1%}, false alarms {1 - coverage:.2%}")
        assert coverage >= 0.93, (n, coverage)


def test_the_old_percentile_bootstrap_would_fail_this_check() -> None:
    """The simulation can tell a bad method: a percentile bootstrap of 3 values undercovers."""
    rng = np.random.default_rng(3)
    k, n, resamples = 2000, 3, 400
    a, b = np.exp(_draw(rng, 0.0, 0.2, n, k)), np.exp(_draw(rng, 0.0, 0.2, n, k))
    pick = rng.integers(0, n, (k, resamples, n))
    ma = np.take_along_axis(a[:, None, :], pick, axis=2).mean(axis=2)
    mb = np.take_along_axis(b[:, None, :], rng.integers(0, n, (k, resamples, n)), axis=2).mean(axis=2)
    lo, hi = np.quantile(ma / mb, [0.025, 0.975], axis=1)
    assert float(((lo <= 1) & (hi >= 1)).mean()) < 0.9


def test_log_welch_rows_are_scipys_welch_test_on_logs() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 0.3, (4, 3)), rng.normal(0.8, 0.1, (4, 5))
    r = stats.log_welch(a, b, 0.9)
    for i in range(4):
        ref = sps.ttest_ind(a[i], b[i], equal_var=False)
        ci = ref.confidence_interval(0.9)
        assert r.p[i] == pytest.approx(ref.pvalue)
        assert (r.low[i], r.high[i]) == pytest.approx((ci.low, ci.high))
        assert r.diff[i] == pytest.approx(a[i].mean() - b[i].mean())


def test_ratio_is_of_geometric_means_with_its_interval() -> None:
    a, b = [2000.0, 2200.0, 1800.0], [1000.0, 1050.0, 950.0]
    r = stats.ratio_ci(a, b)
    expected = math.exp(np.log(a).mean() - np.log(b).mean())
    ref = sps.ttest_ind(np.log(a), np.log(b), equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert r.ratio == pytest.approx(expected)
    assert (r.low, r.high) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))
    assert r.p == r.p_adj == pytest.approx(ref.pvalue) and r.family == 1
    assert r.verdict == "higher" and r.method == "Welch t on log, n=3/3"
    assert r.fmt() == f"{r.ratio:.2f}x [{r.low:.2f}, {r.high:.2f}] (Welch t on log, n=3/3)"


def test_holm_adjusted_values_by_hand() -> None:
    # sorted: 0.005*6, 0.01*5, 0.03*4, 0.04*3, 0.2*2, 0.5*1, then made monotone
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5]
    assert stats.holm(p) == pytest.approx([0.05, 0.12, 0.12, 0.03, 0.4, 0.5])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = stats.holm([0.01, math.nan, 0.02])  # a comparison with no test is not in the family
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_holm_over_a_family_of_six_controls_the_familywise_false_alarms() -> None:
    rng = np.random.default_rng(6)
    k, n = SIMULATIONS, 3
    a, b = _draw(rng, 0.0, 0.3, 6 * n, k), _draw(rng, 0.0, 0.3, 6 * n, k)
    p = stats.log_welch(a.reshape(-1, n), b.reshape(-1, n)).p.reshape(k, 6)
    raw = float((p < 0.05).any(axis=1).mean())
    adjusted = np.apply_along_axis(stats.holm, 1, p)
    familywise = float((adjusted < 0.05).any(axis=1).mean())
    print(f"six A/A comparisons at n=3: any false alarm {raw:.1%} uncorrected, {familywise:.2%} with Holm")
    assert raw > 0.15
    assert familywise <= 0.05


def test_compare_adjusts_each_metric_over_its_comparisons(tmp_path: Path) -> None:
    conditions = {f"c{i}": [1000 + 40 * i, 1100 + 30 * i, 950 + 50 * i] for i in range(6)}
    run = make_run(tmp_path, {"base": [1000, 1050, 980], **conditions})
    comps = compare.compare(skycache.bench.load(run), "stack=base")
    iops = [c for c in comps if c.metric == "iops"]
    assert len(iops) == 12  # six conditions x read/write
    assert {c.ratio.family for c in iops} == {12}
    assert [c.ratio.p_adj for c in iops] == pytest.approx(list(stats.holm([c.ratio.p for c in iops])))
    assert all("Holm over 12" in c.ratio.fmt() for c in iops)


def test_adjusted_p_decides_the_verdict_and_the_gate() -> None:
    worse = stats.Ratio(0.7, 0.55, 0.9, 3, 3, 0.95, p=0.02, p_adj=0.02)  # significant alone
    c = compare.Comparison("r", "c", "b", "read", "iops", 700, 1000, worse)
    assert c.verdict == "worse" and c.regression(10) and not c.regression(40)
    others = [stats.Ratio(1.0, 0.5, 2.0, 3, 3, 0.95, p=0.5, p_adj=0.5)] * 3
    in_family = stats.adjust([worse, *others])[0]
    assert in_family.p == 0.02 and in_family.p_adj == pytest.approx(0.08) and in_family.family == 4
    assert in_family.method == "Welch t on log, n=3/3, Holm over 4"
    c = compare.Comparison("r", "c", "b", "read", "iops", 700, 1000, in_family)
    assert c.verdict == "not significant" and not c.regression(10)


def test_values_without_a_logarithm_are_dropped_and_counted() -> None:
    r = stats.ratio_ci([1000.0, 0.0, -5.0, math.nan, 1100.0, math.inf, 900.0], [500.0, 520.0, 480.0])
    assert (r.n_a, r.n_b, r.dropped) == (3, 3, 4)
    assert r.ratio == pytest.approx(stats.ratio_ci([1000.0, 1100.0, 900.0], [500.0, 520.0, 480.0]).ratio)
    assert r.fmt().endswith(", 4 dropped)")
    nothing = stats.ratio_ci([0.0, -1.0], [500.0, 520.0])
    assert math.isnan(nothing.ratio) and nothing.verdict == "not significant" and nothing.dropped == 2


def test_fewer_than_two_values_give_no_interval_and_not_significant() -> None:
    single = stats.ratio_ci([2000.0], [1000.0, 1010.0, 990.0])
    assert single.ratio == pytest.approx(2.0, rel=0.01)
    assert math.isnan(single.low) and math.isnan(single.high) and math.isnan(single.p)
    assert not single.significant and single.verdict == "not significant"
    assert single.method == "no test, n=1/3" and single.fmt().startswith("2.00x (no CI: n=1/3")
    # and it stays out of the Holm family of the others
    other = stats.ratio_ci([700.0, 720.0, 690.0], [1000.0, 1010.0, 980.0])
    adjusted = stats.adjust([single, other])
    assert adjusted[1].family == 1 and adjusted[1].p_adj == other.p and math.isnan(adjusted[0].p_adj)


def test_repetitions_that_do_not_vary_give_no_test() -> None:
    flat = stats.ratio_ci([2000.0, 2000.0, 2000.0], [1000.0, 1000.0, 1000.0])
    assert flat.ratio == pytest.approx(2.0) and math.isnan(flat.low) and flat.verdict == "not significant"


def test_unstable_above_a_cv_of_fifty_percent() -> None:
    at_limit = stats.ratio_ci([100.0, 200.0, 300.0], [1000.0, 1010.0, 990.0])  # CV exactly 50 %
    assert at_limit.cv_a == pytest.approx(0.5) and not at_limit.unstable
    r = stats.ratio_ci([1000.0, 1010.0, 990.0], [7534.0, 1870.0, 296.0])  # the noisy condition
    assert r.cv_b == pytest.approx(np.std([7534, 1870, 296], ddof=1) / np.mean([7534, 1870, 296]))
    assert r.unstable and r.label == f"unstable (CV {r.cv_b * 100:.0f} %)" == "unstable (CV 118 %)"
    assert r.verdict == r.label
    c = compare.Comparison("r", "c", "b", "read", "iops", 1000, 2000, r)
    assert c.verdict == "unstable (CV 118 %)"
    row = compare.record(c)
    assert row["unstable"] is True and row["label"] == row["verdict"] == "unstable (CV 118 %)"


def _strict_json(text: str) -> object:
    def refuse(token: str) -> object:
        raise AssertionError(f"--json wrote {token}")

    return json.loads(text, parse_constant=refuse)


def test_compare_json_has_every_statistic_as_finite_numbers_or_null(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"base": [1000, 1050, 980], "fast": [2000, 2100, 1900], "one": [1500]})
    r = subprocess.run(
        [sys.executable, "-m", "skycache.cli.main", "bench", "compare", str(run), "--baseline", "stack=base",
         "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = _strict_json(r.stdout)["comparisons"]  # type: ignore[index]
    fast = next(c for c in rows if c["condition"] == "fast" and c["metric"] == "iops")
    one = next(c for c in rows if c["condition"] == "one" and c["metric"] == "iops")
    for key in ("p", "p_adj", "family", "cv", "baseline_cv", "method", "dropped", "unstable", "label", "n"):
        assert key in fast and key in one
    assert fast["verdict"] == "better" and fast["family"] == 2  # fast read + fast write; "one" has no test
    assert fast["method"] == "Welch t on log, n=3/3, Holm over 2" and 0 < fast["p_adj"] < 0.05
    assert one["p"] is None and one["ci_low"] is None and one["cv"] is None
    assert one["verdict"] == "not significant" and one["method"] == "no test, n=1/3"


def test_report_tables_show_p_cv_and_unstable(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"base": [1000, 1050, 980], "noisy": [7534, 1870, 296]})
    df = skycache.bench.load(run)
    comps = compare.compare(df, "stack=base")
    table = report.comparison_table(comps)
    assert "| p (Holm) | CV |" in table.splitlines()[0]
    assert "| noisy | base | read | iops |" in table and "| 118%/4% | unstable (CV 118 %) |" in table
    summary = compare.summary(df)
    noisy = summary[(summary["condition"] == "noisy") & (summary["direction"] == "read")].iloc[0]
    assert bool(noisy["unstable"]) and noisy["iops"] == pytest.approx(stats.geo_mean_ci([7534, 1870, 296])[0])
    assert "| 118% unstable |" in report.summary_table(summary)
