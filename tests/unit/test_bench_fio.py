"""fio job rendering and fio JSON parsing (recorded real fio 3.33 output in tests/unit/data/bench/)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from skycache.bench import fiojob, fioparse
from skycache.bench.scenario import Workload

DATA = Path(__file__).parent / "data" / "bench"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_parse_two_jobs_units() -> None:
    r = fioparse.parse(text("randread-2jobs.json"))
    assert r.fio_version == "fio-3.33"
    assert len(r.jobs) == 2  # group_reporting=0: one entry per job
    st = r.jobs[0].directions["read"]
    assert set(r.jobs[0].directions) == {"read"}
    assert st.iops > 1000
    # bw_bytes is bytes/s and bw KiB/s: the record keeps bytes and derives KiB
    assert st.bw_kib == pytest.approx(st.bw_bytes / 1024)
    assert st.bw_bytes == pytest.approx(st.iops * 4096, rel=0.02)
    # latencies are ns: a page-cache read is microseconds, i.e. thousands of ns
    assert 1_000 < st.lat.mean_ns < 10_000_000
    pct = st.clat.percentiles_ns
    assert pct["p50"] <= pct["p99"] <= pct["p99_9"]
    # plain json and fio's defaults: completion-latency percentiles only, no histograms
    assert all(math.isnan(v) for v in st.lat.percentiles_ns.values())
    assert st.clat.bins == () and st.lat.bins == ()


def test_parse_mixed_read_write() -> None:
    r = fioparse.parse(text("randrw.json"))
    assert set(r.jobs[0].directions) == {"read", "write"}


def test_parse_client_server_with_text_before_json() -> None:
    raw = text("client-server.json")
    assert raw.startswith("<vm>")  # fio printed progress text before the document
    r = fioparse.parse(raw)
    assert r.jobs[0].hostname == "127.0.0.1"
    assert any("Starting 1 process" in n for n in r.notes)
    r.check()


def test_all_clients_aggregate_is_marked() -> None:
    raw = text("client-server.json").replace('"jobname" : "randrw"', '"jobname" : "All clients"', 1)
    r = fioparse.parse(raw)
    assert r.jobs[0].hostname == fioparse.ALL_CLIENTS


def test_job_error_is_reported() -> None:
    r = fioparse.parse(text("job-error.json"))
    with pytest.raises(fioparse.FioError, match="error 1"):
        r.check()


def test_error_text_inside_output() -> None:
    raw = "fio: pid=0, err=5/file:io_u.c:1845, func=io_u error, error=Input/output error\n" + text(
        "randrw.json"
    )
    r = fioparse.parse(raw)
    with pytest.raises(fioparse.FioError, match="Input/output error"):
        r.check()


def test_garbage_and_truncated_json() -> None:
    with pytest.raises(fioparse.FioParseError, match="no fio JSON"):
        fioparse.parse("fio: engine libaio not loadable\n")
    with pytest.raises(fioparse.FioParseError):
        fioparse.parse(text("randrw.json")[:500])
    with pytest.raises(fioparse.FioParseError, match="empty output"):
        fioparse.parse("")


def test_missing_fields_become_nan() -> None:
    r = fioparse.parse(
        '{"fio version": "x", "jobs": [{"jobname": "j", "read": {"iops": 5, "total_ios": 10}}]}'
    )
    st = r.jobs[0].directions["read"]
    assert st.iops == 5 and math.isnan(st.lat.mean_ns) and math.isnan(st.clat.percentiles_ns["p99"])
    assert st.clat.bins == ()


def test_render_job_file(tmp_path: Path) -> None:
    w = Workload(name="rr", rw="randread", bs="4k", iodepth=4, numjobs=2, size="16M", runtime_s=5)
    job = fiojob.render(w, "/dev/sda", log_dir=tmp_path, header="cond x\nrep 1")
    lines = job.splitlines()
    assert lines[0] == "; cond x"
    for expected in (
        "filename=/dev/sda",
        "direct=1",
        "size=16m",
        "bs=4k",
        "iodepth=4",
        "numjobs=2",
        "runtime=5",
        "time_based=1",
        "rw=randread",
        "group_reporting=1",
        "randrepeat=0",
    ):
        assert expected in lines, expected
    assert f"write_iops_log={tmp_path}/randread-iodepth-4-numjobs-2" in lines
    assert fiojob.shape(w).stem == "randread-4-2"


def test_untimed_render_has_no_logs() -> None:
    w = Workload(name="fill", rw="write", bs="1M", size="64M", time_based=False)
    job = fiojob.render(w, "/dev/x", log_dir=None, untimed=True)
    assert "write_bw_log" not in job and "time_based" not in job and "runtime" not in job
    assert "bs=1m" in job


def test_render_with_user_job_file() -> None:
    w = Workload(name="custom", job_file="x.fio")
    job = fiojob.render(w, "/dev/x", log_dir=Path("/r"), job_file_text="[mine]\nrw=randwrite\nbs=8k\n")
    assert job.index("[global]") < job.index("[mine]")
    assert fiojob.shape(w, "[mine]\nrw=randwrite\n").mode == "randwrite"


def test_bs_labels() -> None:
    assert fiojob.bs_label("4k") == "4k"
    assert fiojob.bs_label("1M") == "1m"
    assert fiojob.bs_label(65536) == "64k"


def test_fio_argv_client_mode(tmp_path: Path) -> None:
    argv = fiojob.fio_argv(tmp_path / "j.fio", tmp_path / "o.json", clients=("h1", "h2"))
    assert argv[:3] == ["fio", "--output-format=json+", f"--output={tmp_path}/o.json"]
    assert "--client=h1" in argv and "--client=h2" in argv and argv[-1].endswith("j.fio")
