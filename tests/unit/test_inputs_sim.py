"""Sim scenario values the model cannot take are refused when the file is read, naming the value and
the bound: NaN anywhere, infinite or absurd rates, seeds beyond 32 bits, sample intervals that would
allocate terabytes, SWF traces of 10**12 VMs, sweeps of a million points (without --yes)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from skycache.cli import main as cli_main
from skycache.errors import InvalidInput
from skycache.sim import budget
from skycache.sim.quantities import parse_bandwidth, parse_bytes
from skycache.sim.scenario import load_scenario
from skycache.sim.workload import generate

ROOT = Path(__file__).resolve().parents[2]
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"

BASE = {
    "scenario": 'name = "t"\nseed = 3\nsample_interval = "1 s"\n',
    "cluster": 'nodes = 4\nslots_per_node = 2\nnic = "1 Gbit/s"\nread_cache = "1 GiB"\n',
    "repository": 'kind = "central"\nlink = "1 Gbit/s"\n',
    "images": 'count = 2\nworking_set = "100 MiB"\n',
    "workload": 'arrivals = "burst"\ncount = 6\nruntime = "10 s"\n',
    "nat": "",
}


def text(**extra: str) -> str:
    """The base scenario with lines added to (or replacing keys of) its sections."""
    out = []
    for section, body in BASE.items():
        lines = body.splitlines()
        for line in extra.get(section, "").splitlines():
            key = line.split("=")[0].strip()
            lines = [x for x in lines if x.split("=")[0].strip() != key] + [line]
        out.append(f"[{section}]\n" + "\n".join(lines) + "\n")
    out.append(extra.get("tail", ""))
    return "\n".join(out)


def refused(tmp_path: Path, body: str, needle: str) -> str:
    p = tmp_path / "s.toml"
    p.write_text(body)
    with pytest.raises(InvalidInput) as exc:
        load_scenario(p)
    msg = str(exc.value)
    assert "\n" not in msg
    assert needle in msg, msg
    return msg


def test_base_is_valid(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(text())
    assert load_scenario(p).base.seed == 3


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"images": "zipf = nan"}, "images.zipf: nan is not a finite number"),
        ({"images": "zipf = inf"}, "images.zipf: inf is not a finite number"),
        ({"cluster": "sync_fraction = nan"}, "cluster.sync_fraction: nan"),
        ({"nat": 'mode = "central"\ncores = nan'}, "nat.cores: nan"),
        ({"workload": 'arrivals = "poisson"\nrate = "nan /s"'}, "workload.rate: 'nan /s'"),
        ({"cluster": 'nic = "inf Gbit/s"'}, "cluster.nic: 'inf Gbit/s'"),
        ({"cluster": 'nic = "2000 TiB/s"'}, "above the largest bandwidth in B/s the model takes (1e+15)"),
        ({"repository": 'read_bw = "1e400 MiB/s"'}, "repository.read_bw"),
        ({"images": 'working_set = "inf"'}, "images.working_set: 'inf'"),
        ({"images": 'working_set = "8192 PiB"'}, "larger than the largest size, 8E - 1"),
        ({"scenario": "seed = -1"}, "scenario.seed: -1 is out of range [0, 4294967295]"),
        ({"scenario": "seed = 1234567890123456789012345678"}, "out of range [0, 4294967295] (a 32-bit seed)"),
        ({"cluster": "nodes = 100000000000"}, "cluster.nodes: 100000000000 is out of range [1, 1000000]"),
        ({"workload": "count = 1000000000000"}, "the model's VM bound"),
        ({"scenario": 'sample_interval = "1 ns"'}, "scenario.sample_interval: 1 ns gives about"),
        ({"scenario": 'duration = "1 h"\nsample_interval = "1 ms"'}, "above the bound of 1,000,000"),
    ],
)
def test_bad_values(tmp_path: Path, extra: dict[str, str], needle: str) -> None:
    refused(tmp_path, text(**extra), needle)


def test_sizes_like_bench_files() -> None:
    assert parse_bytes("1G", what="x") == 2**30
    assert parse_bytes("512M", what="x") == 512 * 2**20
    assert parse_bandwidth("120 MiB/s", what="x") == 120 * 2**20


def swf_line(job: int, submit: int, procs: str) -> str:
    fields = [str(job), str(submit), "0", "60", procs] + ["-1"] * 13
    return " ".join(fields) + "\n"


def test_swf_with_huge_processor_counts(tmp_path: Path) -> None:
    trace = tmp_path / "t.swf"
    trace.write_text(swf_line(1, 0, "1000000000000"))
    # The scenario itself is fine: the trace is read (and its VMs counted) by the model and `sim check`.
    p = tmp_path / "s.toml"
    p.write_text(text(workload=f'arrivals = "swf"\ntrace = "{trace.name}"\ncount = 0'))
    sc = load_scenario(p).base
    with pytest.raises(InvalidInput, match="1000000000000 processors, above the model's bound of 10,000,000"):
        generate(sc, np.random.default_rng(1))


def test_swf_total_vms_bounded(tmp_path: Path) -> None:
    trace = tmp_path / "t.swf"
    trace.write_text("".join(swf_line(i, i, "9000000") for i in range(1, 4)))
    p = tmp_path / "s.toml"
    p.write_text(text(workload=f'arrivals = "swf"\ntrace = "{trace.name}"\ncount = 0'))
    with pytest.raises(InvalidInput, match="asks for 27,000,000 VM starts"):
        generate(load_scenario(p).base, np.random.default_rng(1))


@pytest.mark.parametrize("field", ["nan", "inf", "1e999"])
def test_swf_non_finite_fields(tmp_path: Path, field: str) -> None:
    from skycache.sim.swf import parse_swf

    with pytest.raises(InvalidInput, match="line 1 has a field that is not a finite number"):
        parse_swf(swf_line(1, 0, field))


def grid(n: int, m: int) -> str:
    a = ", ".join(f'"{i + 1} Gbit/s"' for i in range(n))
    b = ", ".join(str(i + 1) for i in range(m))
    return f'[sweep.grid]\n"cluster.nic" = [{a}]\n"images.count" = [{b}]\n'


def test_sweep_of_a_million_points_refused_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    msg = refused(tmp_path, text(tail=grid(1000, 1000)), "has 1,000,000 runs")
    assert "above sweep.max_points = 1,000: pass --yes or raise sweep.max_points" in msg
    assert time.perf_counter() - t0 < 5  # counted, not expanded


def test_sweep_above_max_points_needs_yes_or_a_higher_bound(tmp_path: Path) -> None:
    body = text(tail="[sweep]\nreplications = 2\n" + grid(30, 20))  # 1,200 runs
    refused(tmp_path, body, "has 1,200 runs")
    p = tmp_path / "s.toml"
    assert len(load_scenario(p, yes=True).sweep_points()) == 600
    p.write_text(body.replace("replications = 2", "replications = 2\nmax_points = 1200"))
    assert load_scenario(p).replications == 2


def test_hard_bound_even_with_yes(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(text(tail=f"[sweep]\nreplications = {budget.HARD_MAX_POINTS}\n" + grid(2, 1)))
    with pytest.raises(InvalidInput, match="above the model's bound of 10,000,000"):
        load_scenario(p, yes=True)


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["skycache", "sim", *args])
    with pytest.raises(SystemExit) as exc:
        cli_main.main()
    code = exc.value.code
    return int(code) if isinstance(code, int) else 1, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"images": "zipf = nan"}, "images.zipf: nan"),
        ({"scenario": 'sample_interval = "1 ns"'}, "sample_interval"),
        ({"tail": grid(1000, 1000)}, "pass --yes"),
    ],
)
def test_sim_check_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: dict[str, str],
    needle: str,
) -> None:
    p = tmp_path / "s.toml"
    p.write_text(text(**extra))
    code, err = run_cli(monkeypatch, capsys, "check", str(p), "-c", str(CAL))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("skycache: error: ") and needle in err, err


def test_sim_check_reads_the_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.swf"
    trace.write_text(swf_line(1, 0, "1000000000000"))
    p = tmp_path / "s.toml"
    p.write_text(text(workload=f'arrivals = "swf"\ntrace = "{trace.name}"\ncount = 0'))
    code, err = run_cli(monkeypatch, capsys, "check", str(p), "-c", str(CAL))
    assert code == 2 and "1000000000000 processors" in err and err.count("\n") == 1, err


def test_sim_sweep_param_grid_counted_before_expansion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "s.toml"
    p.write_text(text())
    values = ",".join(str(i) for i in range(1, 1001))
    code, err = run_cli(
        monkeypatch, capsys, "sweep", str(p), "-c", str(CAL), "-p", f"images.count={values}",
        "-p", f"cluster.slots_per_node={values}",
    )  # fmt: skip
    assert code == 2 and "--param grid has 1,000,000 runs" in err, err


def test_calibrate_ignores_infinite_and_nan_measurements(tmp_path: Path) -> None:
    import pandas as pd

    from skycache.sim.calibrate import derive

    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {
            "bw_bytes": [float("inf"), float("nan"), 50e6, 52e6],
            "direction": ["read", "read", "read", "write"],
            "lat_mean_ns": [1e6, 1e6, 1e6, 1e6],
        }
    ).to_parquet(run / "tidy.parquet")
    cal = derive([run])  # with --base, its value would replace this one (no workload recorded)
    assert cal.backend("lvm").read_bw.value == pytest.approx(50e6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "--vms", "9" * 5000], "is out of range [1, 10000000] (the model's VM bound)"),
        (["bench", "--vms", "nan"], "--vms 'nan' is not a whole number"),
        (["bench", "--vms", "5", "--nodes", "0"], "--nodes '0' is out of range"),
    ],
)
def test_sim_bench_counts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
