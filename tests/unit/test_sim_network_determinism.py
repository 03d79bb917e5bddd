"""Two runs of one scenario in two processes write bit-identical tables.

Links, classes and pools used to live in sets hashed by address, so the order in which rates were
summed, and so their last bits, changed from one process to the next. Every iteration is now in
insertion order. The two processes also get different string-hash seeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, hash_seed: str) -> None:
    path = os.pathsep.join(
        [str(ROOT / "lib"), str(ROOT / "bench"), str(ROOT / "sim"), os.environ.get("PYTHONPATH", "")]
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "skycache.cli.main",
            "sim",
            "run",
            "scenarios/sim-repository.toml",  # central and distributed repositories, 5,000 VMs each
            "--variant",
            "base",
            "--variant",
            "distributed",
            "--no-plots",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": hash_seed},
    )
    assert r.returncode == 0, r.stderr


def test_a_scenario_run_in_two_processes_writes_identical_parquet(tmp_path: Path) -> None:
    _run(tmp_path / "a", "1")
    _run(tmp_path / "b", "2")
    for table in ("vms.parquet", "timeseries.parquet"):
        a = (tmp_path / "a" / table).read_bytes()
        b = (tmp_path / "b" / table).read_bytes()
        assert a == b, f"{table} differs between the two processes"
