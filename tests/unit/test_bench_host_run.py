"""A real fio run through the orchestrator on the host (file image, no root needed), then the framework
cost check: the IOPS skycache records equal what the stored job file gives when run by hand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from bench_fixtures import TINY_FILE_STACK_AND_JOBS

import skycache.bench
from skycache.bench import fioparse, orchestrate, scenario

pytestmark = pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed")

SCENARIO = (
    """
name = "host-tiny"
where = "host"
repetitions = 2
image_size = "8M"
"""
    + TINY_FILE_STACK_AND_JOBS
)


def test_host_run_end_to_end(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(SCENARIO)
    sc = scenario.load(f)
    out = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=tmp_path / "results", where="host", workdir=tmp_path / "work")
    )
    assert out.failed == 0 and out.ok == 4, out.errors
    run = out.run.path
    manifest = out.run.manifest()
    assert manifest["status"] == "complete" and manifest["environment"]["fio_version"].startswith("fio-")
    for key in ("kernel", "skycache_version", "git_commit", "where", "accel"):
        assert key in manifest["environment"]
    # fio-plot layout, one JSON per repetition, logs next to it
    for rep in (1, 2):
        assert (run / f"fio/rep-{rep}/randread/4k/randread-1-1.json").is_file()
        assert list((run / f"fio/rep-{rep}/randread/4k").glob("randread-iodepth-1-numjobs-1_iops.1.log"))
    df = skycache.bench.load(run)
    assert set(df["workload"]) == {"randread", "randwrite"} and (df["iops"] > 0).all()
    # the image file's block device is the "repository" of a local stack, when it has one (not tmpfs)
    samples = [s for r in out.run.records() for s in r["cache"]]
    if samples:
        assert {"before", "measured"} <= {s["when"] for s in samples}
        assert {s["role"] for s in samples} == {"repo"}
        assert (df["repo_read_bytes"] >= 0).all() and df["rc_hit_ratio"].isna().all()
    # one untimed warm-up run of the first planned condition, before round 1: in the manifest and
    # under untimed/rep-0/, never a record or a tidy row
    first = next(out.run.records())["label"]
    (warm,) = manifest["warmups"]
    assert warm["condition"] == first and warm["status"] == "ok" and warm["s"] > 0
    assert warm["dir"] == "untimed/session-warmup-1" and list(
        (run / warm["dir"] / "fio" / "rep-0").rglob("*.json")
    )
    assert not (run / "fio" / "rep-0").exists()  # fio-plot sees the measured repetitions only
    assert sorted(set(df["rep"])) == [1, 2] and len(list(out.run.records())) == 4
    # the image is removed after the run
    assert not list((tmp_path / "work").glob("skycache-*"))


def test_order_is_interleaved(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(SCENARIO.replace("repetitions = 2", "repetitions = 3"))
    sc = scenario.load(f)
    orch = orchestrate.Orchestrator(
        sc, orchestrate.RunOptions(), runner=None, reporter=orchestrate.NullReporter()
    )  # type: ignore[arg-type]
    order = orch.schedule()
    reps = [rep for rep, _ in order]
    assert reps == [1, 1, 2, 2, 3, 3]  # rounds: every condition once per round, not blocks


def test_framework_adds_no_cost(tmp_path: Path) -> None:
    """Same job file, run by hand right after: skycache's figure is within noise of the manual one."""
    f = tmp_path / "s.toml"
    f.write_text(
        SCENARIO.replace("repetitions = 2", "repetitions = 3").replace("runtime_s = 1", "runtime_s = 2", 1)
    )
    sc = scenario.load(f)
    out = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=tmp_path / "results", where="host", workdir=tmp_path / "work")
    )
    df = skycache.bench.load(out.run.path)
    ours = df[(df["workload"] == "randread")]["iops"].to_numpy()
    # the stored job file names the image, which the run removed: recreate it and run fio by hand
    image = tmp_path / "work" / "skycache-bench-base.img"
    subprocess.run(
        ["fio", "--name=fill", f"--filename={image}", "--rw=write", "--bs=1m", "--size=8M"],
        check=True,
        capture_output=True,
    )
    manual = []
    for job in sorted(out.run.path.glob("jobs/rep-*/randread/4k/randread-1-1.fio")):
        text = job.read_text().replace("write_", "; write_")  # keep the run's own logs untouched
        j = tmp_path / job.name
        j.write_text(text)
        res = subprocess.run(
            ["fio", "--output-format=json", str(j)], capture_output=True, text=True, check=True
        )
        manual.append(fioparse.parse(res.stdout).jobs[0].directions["read"].iops)
    image.unlink()
    ratio = ours.mean() / (sum(manual) / len(manual))
    assert 0.7 < ratio < 1.3, (ours, manual)


def test_fio_plot_reads_a_run_directory_as_is(tmp_path: Path) -> None:
    """fio-plot (installed in the venv) renders a PNG from a run directory without any conversion."""
    import sys

    fio_plot = Path(sys.executable).parent / "fio-plot"
    if not fio_plot.exists():
        pytest.skip("fio-plot not installed in this environment")
    f = tmp_path / "s.toml"
    f.write_text(
        SCENARIO.replace("repetitions = 2", "repetitions = 1").replace("runtime_s = 1", "runtime_s = 3")
    )
    out = orchestrate.run_scenario(
        scenario.load(f), orchestrate.RunOptions(results=tmp_path / "r", where="host", workdir=tmp_path / "w")
    )
    data = out.run.path / "fio" / "rep-1" / "randread" / "4k"
    png = tmp_path / "fio-plot.png"
    res = subprocess.run(
        [str(fio_plot), "-i", str(data), "-T", "skycache run", "-l", "-r", "randread", "-o", str(png)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logpng = tmp_path / "fio-plot-log.png"
    res = subprocess.run(
        [str(fio_plot), "-i", str(data), "-T", "skycache run", "-g", "-r", "randread", "-d", "1", "-n", "1",
         "-t", "iops", "-o", str(logpng)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0 and logpng.is_file(), res.stdout + res.stderr


def test_warm_condition_runs_one_untimed_pass_over_the_working_set(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    text = (
        SCENARIO.replace("repetitions = 2", "repetitions = 1")
        + '[factors]\nworkload = ["randread"]\ncache_state = ["cold", "warm"]\n'
    )
    f.write_text(text)
    out = orchestrate.run_scenario(
        scenario.load(f), orchestrate.RunOptions(results=tmp_path / "r", where="host", workdir=tmp_path / "w")
    )
    assert out.failed == 0, out.errors
    warmups = list(out.run.path.glob("untimed/rep-1/*/4k/warmup-*.fio"))
    assert [p.parent.parent.name for p in warmups] == ["warm"]
    job = warmups[0].read_text()
    assert "time_based" not in job and "size=8m" in job  # the whole working set once, not for N seconds
    assert warmups[0].with_suffix(".json").is_file()
