"""skycache sim calibrate: values from fio and NAT runs (synthetic and the committed real runs), each
with its source; what the runs do not provide is listed, not fatal."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skycache.errors import InvalidInput
from skycache.sim.calibrate import derive, derive_report
from skycache.sim.calibration import load_calibration
from skycache.sim.calibration_roles import FLUSH_COLUMN
from skycache.sim.cli import app

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "sim"
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"
# The committed real runs (lab, TCG): fio 4 KiB random I/O at iodepth 4, and a NAT measurement.
QUICKSTART = ROOT / "results" / "quickstart" / "20261125T164441Z"
NAT_BENCH = ROOT / "results" / "nat-bench" / "20261125T122106Z"
REGRESSION = ROOT / "results" / "regression" / "baseline"
LVM_ISCSI_READ = "stack=lvm-iscsi,workload=randread,cache_state=cold"


def test_fio_and_nat_runs_give_every_rate_with_its_source() -> None:
    cal = derive([DATA / "fio-run", DATA / "nat-run"])
    read = cal.values["repository.lvm.read_bw"]
    # 2 jobs x 60e6 (+1e6 per repetition): per-repetition sums 120e6, 122e6, 124e6 -> median 122e6.
    assert read.value == pytest.approx(122e6, rel=1e-5)
    src = read.source
    assert (src.kind, src.run, src.condition, src.column) == (
        "run",
        str(DATA / "fio-run"),
        "backend=lvm,cache=none,rw=read",
        "bw_bytes",
    )
    assert src.statistic == "median of 3 repetitions (each the sum over its jobs)"
    assert src.workload.as_dict() == {"rw": "read", "bs": "1M", "iodepth": 4, "numjobs": 2}
    assert src.accel == "tcg"  # from the manifest: TCG figures are slow
    assert cal.values["repository.lvm.write_bw"].value == pytest.approx(80e6, rel=1e-5)
    assert cal.values["repository.lvm.write_bw"].source.workload.rw == "write"
    assert cal.backend("file").read_bw is not None
    assert cal.backend("file").read_bw.value == pytest.approx(82e6, rel=1e-5)
    assert cal.values["cache.hit_bw"].value == pytest.approx(400e6, rel=1e-5)  # warm only, not cold
    assert "warm" in cal.values["cache.hit_bw"].source.condition
    nat = cal.values["nat.cpu_per_packet"]
    assert nat.value == pytest.approx(1510e-9, rel=1e-5)
    assert (nat.source.condition, nat.source.column) == ("nat", "cpu_ns_per_packet")
    assert nat.source.note == "routed baseline 900 ns (median)"
    assert cal.values["nat.cpu_per_conn"].value == pytest.approx(25e-6, rel=1e-5)
    # 1M streaming reads and writes fit their roles; 1M reads are not a request latency (iodepth 4).
    assert cal.mismatches() == ["repository.file.latency", "repository.lvm.latency"]
    # No run measured a flush: listed, not made up from the write rate.
    assert cal.missing == ("cache.flush_bw",)
    assert "cache.flush_bw" not in cal.values


def test_committed_quickstart_run_alone_names_every_source() -> None:
    report = derive_report([QUICKSTART])
    cal = report.calibration
    tidy = pd.read_parquet(QUICKSTART / "tidy.parquet")
    expected = tidy.loc[tidy.condition == LVM_ISCSI_READ, "bw_bytes"].median()  # one job per repetition
    read = cal.values["repository.lvm.read_bw"]
    assert read.value == pytest.approx(expected, rel=1e-5)
    assert read.text == "12.5808 MiB/s"
    for name, rate in cal.values.items():
        src = rate.source
        assert (src.kind, src.run, src.accel) == ("run", str(QUICKSTART), "tcg"), name
        assert src.statistic.startswith("median of 3 repetitions"), name
        # The tidy table has no rw/bs columns: the workload comes from the run's raw fio JSON.
        assert src.workload.bs == "4k" and src.workload.iodepth == 4, name
        assert src.workload.rw in ("randread", "randwrite"), name
    assert cal.values["repository.lvm.write_bw"].source.workload.rw == "randwrite"
    assert cal.values["cache.hit_bw"].source.condition.endswith("cache_state=warm")
    # What the quickstart run cannot give: no file-backed writes, no flush, no NAT.
    assert cal.missing == (
        "repository.file.write_bw",
        "cache.flush_bw",
        "nat.cpu_per_packet",
        "nat.cpu_per_conn",
    )
    # Every value it has is 4 KiB random I/O at iodepth 4: none fits a streaming or latency role.
    assert cal.mismatches() == sorted(cal.values)
    assert any(
        n.startswith("repository.lvm.read_bw: measured with rw=randread bs=4k iodepth=4")
        for n in report.notes
    )


def test_cli_on_the_committed_quickstart_run(tmp_path: Path) -> None:
    out = tmp_path / "cal.toml"
    result = CliRunner().invoke(app, ["calibrate", str(QUICKSTART), "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = tomllib.loads(out.read_text())
    names = {f"{section}.{key}" for section in ("cache", "nat") for key in doc.get(section, {})}
    names |= {f"repository.{b}.{k}" for b, t in doc["repository"].items() for k in t}
    assert names and set(doc["sources"]) == names  # every value names its source, and only those
    assert all(doc["sources"][n]["run"] == str(QUICKSTART) for n in names)
    assert doc["sources"]["repository.lvm.read_bw"]["workload"] == {
        "rw": "randread",
        "bs": "4k",
        "iodepth": 4,
        "numjobs": 1,
    }
    cal = load_calibration(out)  # what was written loads
    assert cal.values["repository.lvm.latency"].source.condition == LVM_ISCSI_READ
    assert "missing: nat.cpu_per_packet: the NAT gateway CPU time per forwarded packet" in result.stderr
    assert "skycache bench nat" in result.stderr
    assert "# missing" in out.read_text() and "ROLE MISMATCH" in out.read_text()


def test_cli_json_lists_missing_and_mismatched_values(tmp_path: Path) -> None:
    out = tmp_path / "cal.toml"
    result = CliRunner().invoke(app, ["calibrate", str(QUICKSTART), str(NAT_BENCH), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [m["name"] for m in doc["missing"]] == ["repository.file.write_bw", "cache.flush_bw"]
    assert "rw=write, bs=1M on an image of backend file" in doc["missing"][0]["how"]
    assert "repository.lvm.read_bw" in doc["role_mismatches"]
    assert "nat.cpu_per_packet" not in doc["role_mismatches"]  # a nat-bench CPU cost fits its role
    nat = doc["values"]["nat.cpu_per_packet"]
    assert nat["value"] == "2.32233 ms"
    assert nat["source"]["run"] == str(NAT_BENCH)
    assert nat["source"]["statistic"] == "median of 5 repetitions"


def test_three_committed_runs_pick_per_value_and_say_so() -> None:
    cal = derive([QUICKSTART, NAT_BENCH, REGRESSION])
    read = cal.values["repository.lvm.read_bw"]
    # Both runs measured lvm over iSCSI; the quickstart's 13.2 MB/s beats the regression run's 6.4 MB/s.
    assert read.source.run == str(QUICKSTART)
    assert read.source.statistic.endswith("; the largest of 2 conditions")
    latency = cal.values["repository.lvm.latency"]
    assert latency.source.statistic.endswith("; the smallest of 2 conditions")


def test_base_fills_gaps_and_says_so() -> None:
    base = load_calibration(CAL)
    report = derive_report([DATA / "fio-run"], base=base)
    cal = report.calibration
    read = cal.values["repository.lvm.read_bw"]
    assert read.source.kind == "run"  # a measurement that fits its role wins over the base
    flush = cal.values["cache.flush_bw"].source
    assert (flush.kind, flush.file) == ("base", str(CAL))
    assert flush.origin is not None and flush.origin.kind == "default"
    assert flush.origin.note.endswith("illustrative")
    # The runs' latency (1M reads at iodepth 4) misfits its role: the base's value is taken instead.
    assert cal.values["repository.lvm.latency"].source.kind == "base"
    assert any(n.startswith("repository.lvm.latency: from --base") for n in report.notes)
    assert cal.missing == ()


def test_a_base_of_a_base_keeps_the_first_origin(tmp_path: Path) -> None:
    first = tmp_path / "first.toml"
    CliRunner().invoke(app, ["calibrate", str(NAT_BENCH), "-o", str(first), "--base", str(CAL)])
    second = derive([NAT_BENCH], base=load_calibration(first))
    src = second.values["cache.hit_bw"].source
    assert (src.kind, src.file) == ("base", str(first))
    assert src.origin is not None and src.origin.kind == "default"  # not "base of a base"


def test_accept_role_mismatch_is_written_and_checked(tmp_path: Path) -> None:
    out = tmp_path / "cal.toml"
    args = ["calibrate", str(QUICKSTART), "-o", str(out), "--accept-role-mismatch", "repository.lvm.read_bw"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert load_calibration(out).accept_role_mismatch == ("repository.lvm.read_bw",)
    for name, needle in (("nat.cpu_per_conn", "no such value"), ("repository.lvm.nope", "no such value")):
        with pytest.raises(InvalidInput, match=needle):
            derive_report([QUICKSTART], accept=[name])
    with pytest.raises(InvalidInput, match="fits its role; nothing to accept"):
        derive_report([DATA / "fio-run"], accept=["repository.lvm.read_bw"])


def test_a_measured_flush_fits_its_role(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"condition": "wb", "repetition": r, "direction": "write", "bw_bytes": 5e6, "write_cache": "64M",
         "rw": "randwrite", "bs": "4k", "iodepth": 4, "wb_flushed_bytes": 64e6, "wb_flush_s": s}
        for r, s in ((1, 2.0), (2, 4.0), (3, 1.0))
    ]  # fmt: skip
    pd.DataFrame(rows).to_parquet(run / "tidy.parquet")
    cal = derive([run])
    flush = cal.values["cache.flush_bw"]
    assert flush.value == pytest.approx(32e6, rel=1e-5)  # median of 32, 16 and 64 MB/s
    assert flush.source.column == FLUSH_COLUMN
    assert "cache.flush_bw" not in cal.mismatches()


def test_missing_columns_are_tolerated_and_the_workload_is_unknown(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {"bw_bytes": [50e6, 52e6], "direction": ["read", "write"], "lat_mean_ns": [1e6, 1e6]}
    ).to_parquet(run / "tidy.parquet")
    cal = derive([run])
    read = cal.values["repository.lvm.read_bw"]
    assert read.value == pytest.approx(50e6, rel=1e-5)
    assert read.source.run == str(run)
    assert read.source.workload.as_dict() == {}
    assert "repository.lvm.read_bw" in cal.mismatches()  # an unrecorded workload fits no role


def test_not_a_run_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"has no tidy\.parquet"):
        derive([tmp_path])
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "tidy.parquet")
    with pytest.raises(InvalidInput, match="neither a fio nor a NAT"):
        derive([tmp_path])


def test_runs_that_provide_nothing_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"bw_bytes": [5e6], "direction": ["read"], "transport": ["local"]}).to_parquet(
        run / "tidy.parquet"
    )
    with pytest.raises(InvalidInput, match="the runs provide no calibration value"):
        derive([run])


def test_cli_keeps_the_old_command_form(tmp_path: Path) -> None:
    fio = tmp_path / "fio"
    shutil.copytree(DATA / "fio-run", fio)
    out = tmp_path / "cal.toml"
    result = CliRunner().invoke(app, ["calibrate", str(fio), str(DATA / "nat-run"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    cal = load_calibration(out)
    assert cal.values["repository.lvm.read_bw"].source.run == str(fio)
    assert "skycache sim calibrate" in out.read_text()


def test_bench_driver_columns_rep_phase_status_transport(tmp_path: Path) -> None:
    """The bench driver writes ``rep``, ``phase``, ``status`` and ``transport``: honour them."""
    run = tmp_path / "run"
    run.mkdir()
    base = {"run_id": "q", "backend": "lvm", "direction": "read", "read_cache": "", "lat_mean_ns": 1e6}
    rows = [
        {**base, "condition": "iscsi", "transport": "iscsi", "rep": 1, "phase": "measure", "status": "ok",
         "bw_bytes": 10e6},
        {**base, "condition": "iscsi", "transport": "iscsi", "rep": 1, "phase": "warmup", "status": "ok",
         "bw_bytes": 99e6},
        {**base, "condition": "iscsi", "transport": "iscsi", "rep": 2, "phase": "measure", "status": "error",
         "bw_bytes": 98e6},
        {**base, "condition": "local", "transport": "local", "rep": 1, "phase": "measure", "status": "ok",
         "bw_bytes": 500e6},
    ]  # fmt: skip
    pd.DataFrame(rows).to_parquet(run / "tidy.parquet")
    rate = derive([run]).values["repository.lvm.read_bw"]
    assert rate.value == pytest.approx(10e6, rel=1e-5)  # not the warm-up, the failed job, the local disk
    assert rate.source.condition == "iscsi"
    assert rate.source.statistic == "median of 1 repetition (each the sum over its jobs)"


def test_multi_host_runs_count_the_all_clients_sum_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"condition": "c", "repetition": 1, "direction": "read", "host": h, "bw_bytes": bw}
        for h, bw in (("a:8765", 10e6), ("b:8765", 12e6), ("All clients", 22e6))
    ]
    pd.DataFrame(rows).to_parquet(run / "tidy.parquet")
    assert derive([run]).values["repository.lvm.read_bw"].value == pytest.approx(22e6, rel=1e-5)


def test_accepting_a_misfit_by_name_prefers_the_measurement_to_the_base() -> None:
    base = load_calibration(CAL)
    cal = derive_report([QUICKSTART], base=base, accept=["repository.lvm.read_bw"]).calibration
    assert cal.values["repository.lvm.read_bw"].source.kind == "run"
    assert cal.accept_role_mismatch == ("repository.lvm.read_bw",)
    assert cal.values["repository.lvm.latency"].source.kind == "base"  # not named: the base's fitting value


def test_hostile_run_tables_still_give_a_loadable_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"condition": "a\nb\x07", "repetition": 1, "direction": "read", "bw_bytes": 5e6, "rw": "r\x07"}]
    pd.DataFrame(rows).to_parquet(run / "tidy.parquet")
    out = tmp_path / "cal.toml"
    result = CliRunner().invoke(app, ["calibrate", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    src = load_calibration(out).values["repository.lvm.read_bw"].source
    assert src.condition == "a?b?" and src.workload.rw is None  # not printable: not recorded


def test_fio_json_is_read_only_inside_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(QUICKSTART, run, ignore=shutil.ignore_patterns("plots", "untimed"))
    lines = (run / "conditions.jsonl").read_text().splitlines()
    outside = tmp_path / "elsewhere.json"
    shutil.copy(run / json.loads(lines[0])["json"], outside)
    records = [json.loads(line) for line in lines]
    for rec in records:
        if rec["condition"] == LVM_ISCSI_READ:
            rec["json"] = "../elsewhere.json"
    (run / "conditions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cal = derive([run])
    assert cal.values["repository.lvm.read_bw"].source.workload.as_dict() == {}
    assert cal.values["repository.file.read_bw"].source.workload.rw == "randread"  # its own JSON
