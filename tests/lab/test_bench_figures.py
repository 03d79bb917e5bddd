"""The bench framework's own cost, measured (a figure, not an acceptance test): the same fio job file
through skycache's fio runner and parser, and by hand, alternated on one real iSCSI stack.

It compares two fio runs of a few seconds each under TCG, so the ratio moves with the machine's
noise; in the lab tier it would fail or pass with the host's load. It runs only when asked::

    .venv/bin/skycache lab run --memory 3G --disk 8G --disk 8G -- env SKYCACHE_BENCH_FIGURES=1 \
        .venv/bin/python -m pytest tests/lab/test_bench_figures.py -v -s
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from skycache.bench import fiojob, fioparse, orchestrate, stacks
from skycache.bench.scenario import Stack, Workload
from skycache.runner import Runner

pytestmark = pytest.mark.skipif(
    os.environ.get("SKYCACHE_BENCH_FIGURES") != "1", reason="measurement: set SKYCACHE_BENCH_FIGURES=1"
)


def test_framework_adds_no_measurable_cost(runner: Runner, scratch_dir: Path, tmp_path: Path) -> None:
    """Alternate: the job through skycache's fio runner and parser, and the same file by hand."""
    stack = Stack(name="lvm-iscsi", backend="lvm", transport="iscsi")
    ws = stacks.Workspace.prepare(runner, [stack], "32M", scratch_dir / "cost-work")
    try:
        ws.fill()
        built = stacks.build(ws, stack)
        try:
            w = Workload(name="rr", rw="randread", size="8M", iodepth=4, runtime_s=3)
            job = tmp_path / "job.fio"
            job.write_text(fiojob.render(w, built.device, log_dir=None))
            ours, manual = [], []
            for i in range(5):
                res = orchestrate.run_fio(runner, job, tmp_path / f"ours-{i}.json", 120)
                ours.append(res.jobs[0].directions["read"].iops)
                by_hand = runner.run(["fio", "--output-format=json", str(job)], timeout_s=120)
                manual.append(fioparse.parse(by_hand.stdout).jobs[0].directions["read"].iops)
        finally:
            assert not built.teardown()
    finally:
        ws.teardown()
    ratio = statistics.mean(ours) / statistics.mean(manual)
    print(f"skycache {ours} vs by hand {manual}: ratio {ratio:.3f}")
    assert 0.8 < ratio < 1.25
