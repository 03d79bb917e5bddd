"""Latency done right: clat and lat kept apart, percentiles across repetitions from fio's histograms
merged, old tables still readable, tidy.csv, plots with repetitions as points, fio-plot on all
repetitions. Real fio 3.33 json+ output recorded on the host: tests/unit/data/bench/jsonplus/."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bench_fixtures import JSONPLUS, make_jsonplus_run, make_run

import skycache.bench
from skycache.bench import compare, fiojob, fioparse, latency, plots, tidy
from skycache.bench.scenario import Workload

ROOT = Path(__file__).parents[2]
REP_JSONS = sorted((JSONPLUS / "run" / "fio").glob("rep-*/file-local/4k/randread-4-1.json"))


def _raw_percentiles(doc_direction: dict[str, object], kind: str) -> dict[float, int]:
    pct = doc_direction[f"{kind}_ns"]["percentile"]  # type: ignore[index]
    return {float(k): int(v) for k, v in pct.items()}  # type: ignore[union-attr]


def _hist(lat: fioparse.Latency) -> latency.Histogram:
    return latency.merge([([v for v, _ in lat.bins], [c for _, c in lat.bins])])


# -- fio's options and output ------------------------------------------------------------------


def test_job_files_ask_for_both_latencies_and_json_plus(tmp_path: Path) -> None:
    w = Workload(name="rr", rw="randread", size="16M", runtime_s=5)
    lines = fiojob.render(w, "/dev/x", log_dir=tmp_path).splitlines()
    assert "clat_percentiles=1" in lines and "lat_percentiles=1" in lines
    assert lines.index("lat_percentiles=1") < lines.index("[rr]")  # global: a scenario may override
    assert fiojob.fio_argv(tmp_path / "j.fio", tmp_path / "o.json")[1] == "--output-format=json+"


def test_json_plus_keeps_clat_and_lat_apart_with_their_histograms() -> None:
    text = (JSONPLUS / "randrw-libaio.json").read_text()
    doc = json.loads(text)["jobs"][0]
    job = fioparse.parse(text).jobs[0]
    for direction in ("read", "write"):
        st = job.directions[direction]
        raw = doc[direction]
        assert st.clat.mean_ns == raw["clat_ns"]["mean"] and st.lat.mean_ns == raw["lat_ns"]["mean"]
        # total = submission + completion (buffered libaio copies at submission): lat above clat
        assert st.lat.mean_ns > st.clat.mean_ns
        assert st.lat.percentiles_ns["p50"] > st.clat.percentiles_ns["p50"]
        for kind, lat in (("clat", st.clat), ("lat", st.lat)):
            assert sum(c for _, c in lat.bins) == raw[f"{kind}_ns"]["N"] == st.total_ios
            assert lat.percentiles_ns["p99_9"] == raw[f"{kind}_ns"]["percentile"]["99.900000"]


@pytest.mark.parametrize("name", ["randrw-libaio.json", "two-servers.json", *(str(p) for p in REP_JSONS)])
def test_one_histogram_gives_back_every_percentile_fio_printed(name: str) -> None:
    """fio's own rule, to the nanosecond: all 17 of fio's default percentiles, each kind and direction."""
    text = (JSONPLUS / name).read_text()
    doc, _ = fioparse.extract_json(text)
    entries = doc.get("jobs") or doc["client_stats"]
    checked = 0
    for raw, job in zip(entries, fioparse.parse(text).jobs, strict=True):
        for direction, st in job.directions.items():
            for kind, lat in (("clat", st.clat), ("lat", st.lat)):
                if not lat.bins:
                    continue  # client mode's "All clients" aggregate has neither percentiles nor bins
                fio = _raw_percentiles(raw[direction], kind)
                ours = latency.percentiles(_hist(lat), list(fio))
                assert [int(x) for x in ours] == list(fio.values()), (direction, kind)
                checked += 1
    assert checked >= 2


def _log_latencies(path: Path) -> np.ndarray:
    """Every I/O's latency (ns) from a fio log written with log_avg_msec=0."""
    return np.array([int(line.split(",")[1]) for line in path.read_text().splitlines() if line.strip()])


@pytest.mark.parametrize("kind", ["clat", "lat"])
def test_merged_percentiles_are_the_percentiles_of_all_ios(kind: str) -> None:
    """Two real repetitions whose logs hold each I/O: the merged-histogram percentile is the exact
    percentile of the pooled I/Os within fio's bucket width (1/64), where the mean of the two
    repetitions' own percentiles need not be."""
    hists, samples = [], []
    for rep in (1, 2):
        st = fioparse.parse((JSONPLUS / "per-io" / f"rep-{rep}.json").read_text()).jobs[0].directions["read"]
        lat = st.clat if kind == "clat" else st.lat
        hists.append(_hist(lat))
        x = _log_latencies(JSONPLUS / "per-io" / f"rep-{rep}_{kind}.1.log")
        assert x.size == st.total_ios  # the log is complete
        samples.append(x)
    pooled = np.sort(np.concatenate(samples))
    merged = latency.merge(hists)
    assert int(merged[1].sum()) == pooled.size
    for p in (50.0, 90.0, 95.0, 99.0):
        exact = pooled[math.ceil(p / 100 * pooled.size) - 1]  # fio's rank: first with cum >= p/100*N
        ours = latency.percentiles(merged, [p])[0]
        assert abs(ours - exact) <= exact / 64 + 1, (p, ours, exact)


def _rows(reps: dict[int, tuple[list[int], list[int]]], **extra: object) -> pd.DataFrame:
    rows = []
    for rep, (values, counts) in reps.items():
        row: dict[str, object] = {"run_id": "r", "label": "c", "rep": rep, "direction": "read",
                                  "status": "ok", "phase": "measure", "hostname": ""}  # fmt: skip
        row.update(clat_hist_ns=values, clat_hist_count=counts, lat_hist_ns=[], lat_hist_count=[])
        row.update(clat_p99_ns=float(max(values, default=math.nan)), lat_p99_ns=math.nan)
        row.update(extra)
        rows.append(row)
    return pd.DataFrame(rows)


def test_summary_pools_ios_instead_of_averaging_repetitions() -> None:
    """Rep 1: 100 I/Os at 100 us; rep 2: 900 I/Os at 1000 us. Of all 1000 I/Os the median is 1000 us;
    the mean of the two medians (550 us) is a latency no I/O had."""
    df = _rows({1: ([100_000], [100]), 2: ([1_000_000], [900])})
    s = latency.summary(df)
    assert len(s) == 1
    r = s.iloc[0]
    assert r["clat_p50_ns"] == 1_000_000 and r["clat_p99_ns"] == 1_000_000
    assert r["clat_from"] == latency.FROM_HISTOGRAMS and r["clat_ios"] == 1000 and r["n"] == 2
    assert r["lat_from"] == "" and math.isnan(r["lat_p50_ns"])  # no lat histograms, no lat columns
    per_rep = latency.per_repetition(df).set_index("rep")
    assert per_rep.loc[1, "clat_p50_ns"] == 100_000 and per_rep.loc[2, "clat_p50_ns"] == 1_000_000


def test_summary_without_histograms_says_it_averaged() -> None:
    df = _rows({1: ([], []), 2: ([], [])}).assign(clat_p99_ns=[1000.0, 3000.0])
    r = latency.summary(df).iloc[0]
    assert r["clat_p99_ns"] == 2000.0 and r["clat_from"] == latency.FROM_REP_MEANS


def test_client_mode_merges_the_servers_not_the_aggregate(tmp_path: Path) -> None:
    """fio's "All clients" entry has no histogram: the servers' histograms together are every I/O."""
    text = (JSONPLUS / "two-servers.json").read_text()
    result = fioparse.parse(text)
    rec = {"scenario": "s", "run_id": "r", "condition": "c", "label": "c", "rep": 1, "phase": "measure",
           "status": "ok"}  # fmt: skip
    df = tidy.frame(tidy.rows_for(rec, result))
    assert set(df["hostname"]) == {"127.0.0.1", "All clients"}
    r = latency.summary(df).iloc[0]
    servers = [j.directions["read"] for j in result.jobs if j.hostname != fioparse.ALL_CLIENTS]
    assert r["clat_ios"] == sum(st.total_ios for st in servers) == 1200
    lo, hi = sorted(st.clat.percentiles_ns["p99"] for st in servers)
    assert lo <= r["clat_p99_ns"] <= hi


# -- the tidy table ----------------------------------------------------------------------------


def test_tidy_columns_named_for_what_they_are(tmp_path: Path) -> None:
    run = make_jsonplus_run(tmp_path)
    df = skycache.bench.load(run)
    raw = json.loads(REP_JSONS[1].read_text())["jobs"][0]["read"]
    row = df[df["rep"] == 2].iloc[0]
    assert row["clat_mean_ns"] == raw["clat_ns"]["mean"] and row["lat_mean_ns"] == raw["lat_ns"]["mean"]
    assert row["clat_p99_ns"] == raw["clat_ns"]["percentile"]["99.000000"]
    assert row["lat_p99_ns"] == raw["lat_ns"]["percentile"]["99.000000"]
    assert row["lat_p99_9_ns"] == raw["lat_ns"]["percentile"]["99.900000"]
    assert sum(row["clat_hist_count"]) == raw["clat_ns"]["N"]
    s = latency.summary(df).iloc[0]
    assert s["n"] == 3 and s["clat_from"] == s["lat_from"] == latency.FROM_HISTOGRAMS
    assert s["lat_ios"] == sum(json.loads(p.read_text())["jobs"][0]["read"]["total_ios"] for p in REP_JSONS)


def test_csv_beside_parquet_has_the_same_rows(tmp_path: Path) -> None:
    run = make_jsonplus_run(tmp_path)
    table = pd.read_parquet(run / "tidy.parquet")
    csv = pd.read_csv(run / tidy.TIDY_CSV)
    assert len(csv) == len(table) and not set(tidy.HISTOGRAMS) & set(csv.columns)
    assert list(csv.columns) == [c for c in table.columns if c not in tidy.HISTOGRAMS]
    assert csv["clat_p99_ns"].tolist() == table["clat_p99_ns"].tolist()
    assert not list(run.glob("*.tmp"))


def _as_old_table(run: Path) -> None:
    """Rewrite a run's table as skycache wrote it before the clat/lat split."""
    df = pd.read_parquet(run / "tidy.parquet").drop(columns=list(tidy.HISTOGRAMS))
    df = df.drop(columns=[f"lat_{n}_ns" for n in latency.PERCENTILES])
    df = df.rename(columns={f"clat_{n}_ns": f"lat_{n}_ns" for n in latency.PERCENTILES})
    df.to_parquet(run / "tidy.parquet", index=False)


def test_old_tables_are_mapped_on_load(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": [1000, 1100], "b": [2000, 2100]})
    expected = pd.read_parquet(run / "tidy.parquet")["clat_p99_ns"].tolist()
    _as_old_table(run)
    df = skycache.bench.load(run)
    assert df["clat_p99_ns"].tolist() == expected  # completion latency, named so
    assert "lat_p99_ns" not in df.columns  # total-latency percentiles were never recorded
    assert {c.metric for c in compare.compare(df)} == {"iops", "bw_bytes", "lat_mean_ns"}
    assert latency.summary(df).iloc[0]["clat_from"] == latency.FROM_REP_MEANS


def test_old_tables_of_runs_that_asked_for_lat_percentiles_keep_them(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"a": [1000]})
    _as_old_table(run)
    job = run / "jobs" / "rep-1" / "a" / "4k" / "randrw-1-1.fio"
    job.parent.mkdir(parents=True)
    job.write_text("[global]\nlat_percentiles=1\n[a]\nrw=randrw\n")
    df = skycache.bench.load(run)
    assert df["lat_p99_ns"].notna().all() and "clat_p99_ns" not in df.columns


def test_committed_runs_still_load_with_the_new_names() -> None:
    df = skycache.bench.load(ROOT / "results" / "quickstart")
    ok = df[df["status"] == "ok"]
    assert ok["clat_p99_ns"].notna().all() and "lat_p99_ns" not in ok.columns
    s = latency.condition_summary(df)
    assert (s["clat_p99_ns"] > s["clat_p50_ns"]).all() and "lat_p99_us" not in s.columns


def test_nat_bench_tables_are_not_touched(tmp_path: Path) -> None:
    d = tmp_path / "nat-bench" / "r"
    d.mkdir(parents=True)
    tidy.write_table(d, pd.DataFrame({"mode": ["nat"], "lat_p99_ns": [5.0]}))
    df = skycache.bench.load(d)
    assert df["lat_p99_ns"].tolist() == [5.0] and "clat_p99_ns" not in df.columns
    assert (d / tidy.TIDY_CSV).is_file()


# -- plots -------------------------------------------------------------------------------------


def _points(ax: object) -> int:
    return sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == "o")  # type: ignore[attr-defined]


def test_bars_are_linear_with_every_repetition_as_a_point(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"fast": [2000, 2100, 1900], "base": [1000, 1010, 990, 1005]})
    df = skycache.bench.load(run)
    for fig in (plots.iops_figure(df), plots.latency_figure(df)):
        for ax in fig.axes:
            assert ax.get_xscale() == "linear"
            assert _points(ax) == (3 + 4) * 2  # two directions (randrw) x every repetition
        plots.plt.close(fig)


def test_p99_bar_is_the_merged_one(tmp_path: Path) -> None:
    df = skycache.bench.load(make_jsonplus_run(tmp_path))
    fig = plots.latency_figure(df)
    bar = fig.axes[1].patches[0].get_width()
    assert bar == pytest.approx(latency.summary(df).iloc[0]["lat_p99_ns"] / 1000.0)
    plots.plt.close(fig)


def test_cache_timeline_never_joins_repetitions() -> None:
    samples = [
        {"t": t, "label": "c", "role": "read", "rep": rep, "hits": h, "misses": 0, "dirty": 0}
        for rep, start in ((1, 0.0), (2, 100.0))
        for t, h in ((start, 0), (start + 5.0, 10 * rep))
    ]
    lines = plots.timeline_lines(samples)
    assert len(lines) == 2
    for _, g in lines:
        assert g["rep"].nunique() == 1 and g["t_rep"].tolist() == [0.0, 5.0]


# -- fio-plot ----------------------------------------------------------------------------------


def test_fio_plot_draws_all_repetitions_of_a_run_directory(tmp_path: Path) -> None:
    """fio-plot (a dependency) reads each repetition's directory of a run as is, json+ included."""
    fio_plot = Path(sys.executable).parent / "fio-plot"
    run = make_jsonplus_run(tmp_path)
    reps = sorted(str(p) for p in (run / "fio").glob("rep-*/file-local/4k"))
    assert len(reps) == 3
    for graph, extra in (("-C", []), ("-g", ["-t", "iops", "lat"])):
        png = tmp_path / f"fio-plot{graph}.png"
        res = subprocess.run(
            [str(fio_plot), "-i", *reps, "-T", "all repetitions", graph, "-r", "randread", "-d", "4",
             "-n", "1", "--xlabel-parent", "2", *extra, "-o", str(png)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the verbs ---------------------------------------------------------------------------------


def sky(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skycache.cli.main", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=300,
    )  # fmt: skip


def test_show_prints_the_merged_percentiles(tmp_path: Path) -> None:
    run = make_jsonplus_run(tmp_path)
    pooled = latency.summary(skycache.bench.load(run)).iloc[0]
    r = sky("bench", "show", str(run), "--json")
    assert r.returncode == 0 and not r.stderr, r.stderr
    row = json.loads(r.stdout)[0]
    assert row["clat_from"] == latency.FROM_HISTOGRAMS and row["clat_p99_ns"] == pooled["clat_p99_ns"]
    assert row["lat_p99_9_ns"] == pooled["lat_p99_9_ns"] and row["n"] == 3 and "lat_p99_us" not in row
    table = sky("bench", "show", str(run))
    assert table.returncode == 0 and "percentiles: merged histograms" in table.stdout
    assert f"{pooled['lat_p99_ns'] / 1000:.0f}" in table.stdout


def test_show_of_an_old_run_says_how_its_percentiles_were_made() -> None:
    r = sky("bench", "show", "tests/unit/data/bench/gate/base")
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert latency.FROM_REP_MEANS in r.stdout


def test_plots_json_and_report_latency_table(tmp_path: Path) -> None:
    run = make_jsonplus_run(tmp_path)
    r = sky("bench", "plots", str(run), "--json")
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    assert {Path(p).name for p in out["plots"]} == {"iops.png", "latency.png", "latency-percentiles.png",
                                                   "cache.png"}  # fmt: skip
    assert all(Path(p).is_file() for p in out["plots"])
    r = sky("bench", "report", str(run), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["report"] == str(run / "report.md"), r.stderr
    report = (run / "report.md").read_text()
    ios = int(latency.summary(skycache.bench.load(run)).iloc[0]["lat_ios"])
    assert f"| file-local/randread/cold | read | 3 | {ios} |" in report and latency.FROM_HISTOGRAMS in report


def test_bench_run_json_on_the_host(tmp_path: Path) -> None:
    from bench_fixtures import TINY_FILE_STACK_AND_JOBS

    f = tmp_path / "s.toml"
    head = 'name = "tiny"\nwhere = "host"\nrepetitions = 1\nimage_size = "8M"\n'
    f.write_text(head + TINY_FILE_STACK_AND_JOBS)
    r = sky("bench", "run", str(f), "--out", str(tmp_path / "r"), "--workdir", str(tmp_path / "w"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    run = Path(out["run_dir"])
    assert out["ok"] == 2 and out["failed"] == 0 and json.loads((run / "summary.json").read_text()) == out
    assert (run / "tidy.csv").is_file()
    s = latency.summary(skycache.bench.load(run))
    assert set(s["clat_from"]) == set(s["lat_from"]) == {latency.FROM_HISTOGRAMS}


def test_the_report_p99_is_the_merged_one(tmp_path: Path) -> None:
    df = skycache.bench.load(make_jsonplus_run(tmp_path))
    assert latency.mean_summary(df).iloc[0]["lat_p99_us"] == latency.summary(df).iloc[0]["lat_p99_ns"] / 1000


def test_report_tags_cache_samples_with_their_repetition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_run's samples carry no "rep" (like any record that only has it at the top): the report
    takes it from the record, so two repetitions are two lines."""
    from skycache.bench import report

    run = make_run(tmp_path, {"a": [1000, 1100]})
    seen: list[list[dict[str, object]]] = []
    real = plots.plot_run

    def spy(df, manifest, out_dir, samples=(), progress=None):  # type: ignore[no-untyped-def]
        seen.append(list(samples))
        return real(df, manifest, out_dir, samples)

    monkeypatch.setattr(plots, "plot_run", spy)
    report.finish(run)
    assert sorted(s["rep"] for s in seen[0]) == [1, 2]  # type: ignore[type-var]
    assert len(plots.timeline_lines(seen[0])) == 2
