"""The bench driver in the lab (real kernel): a tiny scenario end to end over real stacks, with the
fio logs where fio-plot reads them, and the cache metrics of issue 12 item 6 plausible (a warm read
cache hits and spares the repository, the write-back cache's flush is timed and counted). (fio-plot
itself is run on a run directory in the unit tier, test_bench_host_run.py: a fresh Python importing
matplotlib costs a minute here. The "framework adds no measurable cost" figure is a measurement, in
test_bench_figures.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import skycache.bench
from skycache.bench import compare, orchestrate, scenario, store
from skycache.runner import Runner

TINY = """
name = "lab-tiny"
where = "lab"
repetitions = 2
image_size = "32M"
baseline = "stack=lvm-iscsi"
[[stacks]]
name = "lvm-iscsi"
backend = "lvm"
transport = "iscsi"
[[stacks]]
name = "lvm-iscsi-rcache"
backend = "lvm"
transport = "iscsi"
read_cache = "32M"
[[stacks]]
name = "lvm-iscsi-wcache"
backend = "lvm"
transport = "iscsi"
write_cache = "32M"
[[workloads]]
name = "randread"
rw = "randread"
size = "8M"
iodepth = 4
runtime_s = 2
[[workloads]]
name = "randwrite"
rw = "randwrite"
size = "8M"
iodepth = 4
runtime_s = 2
[factors]
cache_state = ["cold", "warm"]
[[exclude]]
stack = "lvm-iscsi-wcache"
workload = "randread"
[[exclude]]
stack = ["lvm-iscsi", "lvm-iscsi-wcache"]
cache_state = "warm"
[[exclude]]
stack = "lvm-iscsi-rcache"
workload = "randwrite"
"""


def _clean(runner: Runner) -> None:
    assert not [n for n in stacks_dm(runner) if n.startswith("skycache-bench")]


def stacks_dm(runner: Runner) -> list[str]:
    out = runner.query(["dmsetup", "ls"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and "No devices" not in line]


def test_tiny_scenario_end_to_end(runner: Runner, scratch_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    sc = scenario.load(f)
    results = scratch_dir / "bench-results"
    out = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=results, where="lab", workdir=scratch_dir / "bench-work")
    )
    assert out.failed == 0, out.errors
    assert out.ok == len(sc.conditions) * 2
    df = skycache.bench.load(out.run.path)
    assert (df[df["status"] == "ok"]["iops"] > 0).all()
    assert out.run.manifest()["environment"]["accel"] in ("tcg", "kvm")
    # plots and report.md are drawn on the host in real use (matplotlib under TCG takes minutes);
    # make bench-ci draws a real run's there
    comps = compare.compare(df, sc.model.baseline)
    assert any(c.condition == "lvm-iscsi-wcache/randwrite/cold" for c in comps)
    # the read cache recorded its counters over the run, also while fio ran
    samples = [s for r in out.run.records() for s in r.get("cache", [])]
    assert any(s["role"] == "read" for s in samples) and any(s["role"] == "write" for s in samples)
    assert any(s["when"] == "during" and s["role"] == "read" for s in samples)
    _cache_metrics_are_plausible(df)
    # nothing of the run is left behind
    _clean(runner)
    assert "skycache-bench" not in runner.query(["vgs", "--noheadings", "-o", "vg_name"]).stdout
    # fio-plot's layout: per condition a block-size directory with fio's JSON and its logs
    data = out.run.path / "fio" / "rep-1" / store.target_name("lvm-iscsi/randread/cold") / "4k"
    assert list(data.glob("*.json")), sorted(p.name for p in data.iterdir())
    for kind in ("iops", "lat", "clat", "bw"):
        assert list(data.glob(f"*_{kind}.1.log")), (kind, sorted(p.name for p in data.iterdir()))


def _cache_metrics_are_plausible(df: object) -> None:
    """Per repetition (the first row of each): a warm read cache hits more than half the time and
    reads less from the repository than the cold one; the uncached stack reads from the repository
    and has no cache columns; the write-back cache's flush was timed and wrote to the repository."""
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    ok = df[df["status"] == "ok"].drop_duplicates(["label", "rep"]).set_index("label")

    def col(label: str, name: str) -> list[float]:
        return [float(v) for v in ok.loc[[label], name]]

    warm, cold = "lvm-iscsi-rcache/randread/warm", "lvm-iscsi-rcache/randread/cold"
    assert min(col(warm, "rc_hit_ratio")) > 0.5, ok.loc[[warm, cold], ["rc_hit_ratio", "repo_read_bytes"]]

    # Per byte the workload read, over all repetitions: the runs are time-based, so a warm run (faster)
    # reads more in total, and smq may still promote a few blocks while it runs (each a 64 KiB read of
    # the repository); per byte read the warm cache must still fetch less than the cold one.
    def per_byte(label: str) -> float:
        return sum(col(label, "repo_read_bytes")) / sum(col(label, "io_bytes"))

    shown = ok.loc[[warm, cold], ["rc_hit_ratio", "rc_promotions", "repo_read_bytes", "io_bytes"]]
    assert per_byte(warm) < per_byte(cold), shown
    assert col(warm, "repo_read_per_byte") == pytest.approx(
        [b / r for b, r in zip(col(warm, "repo_read_bytes"), col(warm, "io_bytes"), strict=True)]
    ), shown
    assert all(v >= 0 for v in col(cold, "rc_promotions"))
    plain = "lvm-iscsi/randread/cold"
    assert min(col(plain, "repo_read_bytes")) > 0 and all(pd.isna(col(plain, "rc_hit_ratio")))
    wc = "lvm-iscsi-wcache/randwrite/cold"
    flush = ok.loc[[wc], ["wb_dirty_end", "wb_flush_s", "wb_flush_dirty_bytes", "wb_flushed_bytes"]]
    assert (flush["wb_flush_s"] > 0).all() and (flush["wb_dirty_end"] >= 0).all(), flush
    # the flush wrote what was dirty to the repository (the block counter vs dirty blocks x 4 KiB)
    assert (flush["wb_flushed_bytes"] >= 0.9 * flush["wb_flush_dirty_bytes"]).all(), flush
