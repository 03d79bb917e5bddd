"""skycache sim calibrate: rates from synthetic fio and NAT runs, with their provenance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skycache.errors import InvalidInput
from skycache.sim.calibrate import derive
from skycache.sim.calibration import load_calibration
from skycache.sim.cli import app

DATA = Path(__file__).parent / "data" / "sim"
CAL = Path(__file__).resolve().parents[2] / "scenarios" / "sim-calibration-example.toml"


def test_fio_and_nat_runs_give_every_rate() -> None:
    cal = derive([DATA / "fio-run", DATA / "nat-run"])
    lvm = cal.backend("lvm")
    # 2 jobs x 60e6 (+1e6 per repetition): per-repetition sums 120e6, 122e6, 124e6 -> median 122e6.
    assert lvm.read_bw.value == pytest.approx(122e6)
    assert lvm.read_bw.provenance["run"].endswith("fio-run")
    assert lvm.read_bw.provenance["condition"] == "backend=lvm,cache=none,rw=read"
    assert lvm.write_bw.value == pytest.approx(80e6)
    assert lvm.latency.value == pytest.approx(2.1e-3)  # median of the per-repetition means
    assert cal.backend("file").read_bw.value == pytest.approx(82e6)
    assert cal.cache_hit_bw.value == pytest.approx(400e6)  # warm only, not the cold 140e6
    assert "warm" in cal.cache_hit_bw.provenance["condition"]
    assert cal.flush_bw.provenance["note"] == "repository write rate"  # no flush run: documented fallback
    assert cal.nat_cpu_per_packet.value == pytest.approx(1510e-9)
    assert cal.nat_cpu_per_packet.provenance["condition"] == "nat"
    assert "routed baseline 900" in cal.nat_cpu_per_packet.provenance["note"]
    assert cal.nat_cpu_per_conn.value == pytest.approx(25e-6)
    assert cal.conntrack_bytes is not None
    assert cal.conntrack_bytes.value == pytest.approx(320)


def test_missing_rates_need_a_base() -> None:
    with pytest.raises(InvalidInput, match=r"no run provides nat\.cpu_per_packet"):
        derive([DATA / "fio-run"])
    cal = derive([DATA / "fio-run"], base=load_calibration(CAL))
    assert cal.nat_cpu_per_conn.value == pytest.approx(25e-6)
    assert cal.backend("lvm").read_bw.value == pytest.approx(122e6)  # measured wins over base


def test_missing_columns_are_tolerated(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {"bw_bytes": [50e6, 52e6], "direction": ["read", "write"], "lat_mean_ns": [1e6, 1e6]}
    ).to_parquet(run / "tidy.parquet")
    cal = derive([run], base=load_calibration(CAL))
    assert cal.backend("lvm").read_bw.value == pytest.approx(50e6)
    assert cal.backend("lvm").read_bw.provenance["run"] == str(run)


def test_not_a_run_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"has no tidy\.parquet"):
        derive([tmp_path])
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "tidy.parquet")
    with pytest.raises(InvalidInput, match="neither a fio nor a NAT"):
        derive([tmp_path])


def test_cli_writes_a_loadable_calibration(tmp_path: Path) -> None:
    fio = tmp_path / "fio"
    shutil.copytree(DATA / "fio-run", fio)
    out = tmp_path / "cal.toml"
    result = CliRunner().invoke(app, ["calibrate", str(fio), str(DATA / "nat-run"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    cal = load_calibration(out)
    assert cal.backend("lvm").read_bw.provenance["run"] == str(fio)
    assert "skycache sim calibrate" in out.read_text()


def test_bench_driver_columns_rep_phase_status_transport(tmp_path: Path) -> None:
    """The bench driver writes ``rep``, ``phase``, ``status`` and ``transport``: honour them."""
    run = tmp_path / "run"
    run.mkdir()
    base = {"run_id": "q", "backend": "lvm", "direction": "read", "read_cache": "", "lat_mean_ns": 1e6}
    rows = [
        {
            **base,
            "condition": "iscsi",
            "transport": "iscsi",
            "rep": 1,
            "phase": "measure",
            "status": "ok",
            "bw_bytes": 10e6,
        },
        {
            **base,
            "condition": "iscsi",
            "transport": "iscsi",
            "rep": 1,
            "phase": "warmup",
            "status": "ok",
            "bw_bytes": 99e6,
        },
        {
            **base,
            "condition": "iscsi",
            "transport": "iscsi",
            "rep": 2,
            "phase": "measure",
            "status": "error",
            "bw_bytes": 98e6,
        },
        {
            **base,
            "condition": "local",
            "transport": "local",
            "rep": 1,
            "phase": "measure",
            "status": "ok",
            "bw_bytes": 500e6,
        },
    ]
    pd.DataFrame(rows).to_parquet(run / "tidy.parquet")
    cal = derive([run], base=load_calibration(CAL))
    rate = cal.backend("lvm").read_bw
    assert rate.value == pytest.approx(10e6)  # not the warm-up, not the failed job, not the local disk
    assert rate.provenance["condition"] == "iscsi"
