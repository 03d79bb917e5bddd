"""The bench driver in the lab (real kernel): a tiny scenario end to end over real stacks, with the
fio logs where fio-plot reads them. (fio-plot itself is run on a run directory in the unit tier,
test_bench_host_run.py: a fresh Python importing matplotlib costs a minute here. The "framework adds
no measurable cost" figure is a measurement, in test_bench_figures.py.)"""

from __future__ import annotations

from pathlib import Path

import skycache.bench
from skycache.bench import orchestrate, report, scenario
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
[[exclude]]
stack = "lvm-iscsi-wcache"
workload = "randread"
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
    comps, pngs, report_md = report.finish(out.run.path)
    assert report_md.is_file() and len(pngs) >= 3
    assert any(c.condition == "lvm-iscsi-wcache/randwrite" for c in comps)
    # the read cache recorded its counters over the run
    samples = [s for r in out.run.records() for s in r.get("cache", [])]
    assert any(s["role"] == "read" for s in samples) and any(s["role"] == "write" for s in samples)
    # nothing of the run is left behind
    _clean(runner)
    assert "skycache-bench" not in runner.query(["vgs", "--noheadings", "-o", "vg_name"]).stdout
    # fio-plot's layout: per condition a block-size directory with fio's JSON and its logs
    data = out.run.path / "fio" / "rep-1" / "lvm-iscsi_randread" / "4k"
    assert list(data.glob("*.json")), sorted(p.name for p in data.iterdir())
    for kind in ("iops", "lat", "clat", "bw"):
        assert list(data.glob(f"*_{kind}.1.log")), (kind, sorted(p.name for p in data.iterdir()))
