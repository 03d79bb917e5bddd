"""Result store, tidy table, load(), statistics and comparisons on synthetic runs built from real fio JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import make_run

import skycache.bench
from skycache.bench import compare, stats, store, tidy
from skycache.errors import InvalidInput, SkycacheError


def test_run_dirs_are_never_reused(tmp_path: Path) -> None:
    a = store.RunDir.create(tmp_path, "s", "r1")
    b = store.RunDir.create(tmp_path, "s")
    c = store.RunDir.create(tmp_path, "s", b.run_id if False else None)
    assert a.path != b.path and len({a.path, b.path, c.path}) == 3
    with pytest.raises(InvalidInput, match="never overwritten"):
        store.RunDir.create(tmp_path, "s", "r1")
    p = a.write_new(a.path / "x.json", "1")
    with pytest.raises(SkycacheError, match="never overwritten"):
        a.write_new(p, "2")
    assert p.read_text() == "1"


def test_tidy_rows_and_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": [1000, 1100, 900], "b": [2000, 2100]}, failed=["c"])
    df = skycache.bench.load(run)
    ok = df[df["status"] == "ok"]
    # one row per condition x repetition x job x direction (randrw: read and write)
    assert len(ok) == (3 + 2) * 2
    for col in (
        "iops",
        "bw_bytes",
        "bw_kib",
        "lat_mean_ns",
        "lat_p50_ns",
        "lat_p95_ns",
        "lat_p99_ns",
        "lat_p99_9_ns",
        "stack",
        "workload",
        "cache_state",
        "backend",
        "rep",
        "run_id",
        "run_dir",
    ):
        assert col in df.columns, col
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and "login refused" in failed["error"].iloc[0]
    assert math.isnan(failed["iops"].iloc[0])
    assert ok["bw_kib"].iloc[0] == pytest.approx(ok["bw_bytes"].iloc[0] / 1024)


def test_load_many_and_by_parent(tmp_path: Path) -> None:
    make_run(tmp_path, {"a": [1, 2]}, run_id="r1")
    make_run(tmp_path, {"a": [3, 4]}, run_id="r2")
    both = skycache.bench.load(tmp_path / "synthetic")
    assert set(both["run_id"]) == {"r1", "r2"}
    listed = skycache.bench.load(
        [tmp_path / "synthetic" / "r1", tmp_path / "synthetic" / "r2" / "tidy.parquet"]
    )
    assert len(listed) == len(both)
    with pytest.raises(InvalidInput):
        skycache.bench.load(tmp_path / "nope")


def test_load_any_tidy_table_such_as_nat_bench(tmp_path: Path) -> None:
    import pandas as pd

    d = tmp_path / "nat-bench" / "20260101T000000Z"
    d.mkdir(parents=True)
    pd.DataFrame({"mode": ["nat", "routed"], "throughput_bps": [1e9, 2e9]}).to_parquet(d / "tidy.parquet")
    df = skycache.bench.load(d)
    assert list(df["mode"]) == ["nat", "routed"]
    assert (df["run_id"] == "20260101T000000Z").all() and (df["scenario"] == "nat-bench").all()


def test_tidy_rebuild_matches_raw_json(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": [1000, 1200]})
    df = tidy.build(store.RunDir(run))
    raw = json.loads((run / "fio/rep-2/a/4k/randrw-1-1.json").read_text())
    row = df[(df["rep"] == 2) & (df["direction"] == "read")]
    assert row["iops"].iloc[0] == raw["jobs"][0]["read"]["iops"] == 1200


def test_ratio_ci_significance() -> None:
    r = stats.ratio_ci([2000, 2100, 1950, 2050], [1000, 1050, 980, 1010])
    assert r.ratio == pytest.approx(2.0, rel=0.05)
    assert r.low > 1.5 and r.high < 2.5 and r.significant and r.verdict == "higher"
    same = stats.ratio_ci([1000, 1200, 900], [1100, 950, 1050])
    assert not same.significant and same.verdict == "not significant"
    single = stats.ratio_ci([2000], [1000])
    assert single.ratio == 2.0 and math.isnan(single.low) and not single.significant


def test_ratio_ci_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 5), rng.normal(9, 1, 5)
    assert stats.ratio_ci(a, b) == stats.ratio_ci(a, b)


def test_compare_with_factor_baseline(tmp_path: Path) -> None:
    run = make_run(
        tmp_path, {"fast": [2000, 2100, 1900], "base": [1000, 1010, 990], "same": [1000, 1100, 900]}
    )
    comps = compare.compare(skycache.bench.load(run), "stack=base")
    iops = {c.condition: c for c in comps if c.metric == "iops" and c.direction == "read"}
    assert iops["fast"].verdict == "better" and iops["fast"].ratio.ratio == pytest.approx(2.0, rel=0.05)
    assert iops["same"].verdict == "not significant"
    lat = next(
        c for c in comps if c.metric == "lat_mean_ns" and c.condition == "fast" and c.direction == "read"
    )
    assert lat.verdict == "better" and lat.ratio.ratio < 1  # lower latency is better
    with pytest.raises(InvalidInput, match="matches no condition"):
        compare.compare(skycache.bench.load(run), "stack=nope")


def test_compare_with_label_baseline_and_default(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"x": [1, 2, 3], "y": [2, 3, 4]})
    df = skycache.bench.load(run)
    assert {c.condition for c in compare.compare(df, "x")} == {"y"}
    assert {c.baseline for c in compare.compare(df)} == {"x"}
    with pytest.raises(InvalidInput, match="no such condition"):
        compare.compare(df, "zz")


def test_regression_gate_across_runs(tmp_path: Path) -> None:
    base = make_run(tmp_path, {"c": [1000, 1010, 990, 1005]}, run_id="base")
    worse = make_run(tmp_path, {"c": [700, 710, 690, 705]}, run_id="worse")
    noisy = make_run(tmp_path, {"c": [950, 1060, 980, 1000]}, run_id="noisy")
    comps = compare.compare(skycache.bench.load([base, worse]))
    assert compare.regressions(comps, 10)  # 30% fewer IOPS, significant
    assert not compare.regressions(comps, 50)  # but not beyond 50% (latency is 1/0.7 = +43%)
    comps2 = compare.compare(skycache.bench.load([base, noisy]))
    assert not compare.regressions(comps2, 10)


def test_summary_has_intervals(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": [1000, 1100, 900]})
    s = compare.summary(skycache.bench.load(run))
    r = s[s["direction"] == "read"].iloc[0]
    assert r["n"] == 3 and r["iops_lo"] <= r["iops"] <= r["iops_hi"]
