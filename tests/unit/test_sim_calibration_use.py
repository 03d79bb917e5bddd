"""Roles: which source workloads fit which value, and what the model takes from a calibration."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from boundary import assert_one_error, skycache
from typer.testing import CliRunner

from skycache.errors import InvalidInput
from skycache.sim.calibrate import derive
from skycache.sim.calibration import Calibration, load_calibration, parse_calibration, render_calibration
from skycache.sim.calibration_roles import FLUSH_COLUMN, fio_bytes, judge
from skycache.sim.calibration_source import Source, Workload
from skycache.sim.calibration_use import model_rates
from skycache.sim.cli import app
from skycache.sim.model import ClusterModel
from skycache.sim.scenario import ScenarioFile, parse_scenario_file

ROOT = Path(__file__).resolve().parents[2]
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"
QUICKSTART = ROOT / "results" / "quickstart" / "20261125T164441Z"
NAT_BENCH = ROOT / "results" / "nat-bench" / "20261125T122106Z"


def run_source(rw: str | None, bs: str | None, iodepth: int | None, column: str = "bw_bytes") -> Source:
    return Source(
        kind="run",
        run="r",
        condition="c",
        column=column,
        statistic="median of 3 repetitions",
        workload=Workload(rw, bs, iodepth, 1),
    )


@pytest.mark.parametrize(
    ("name", "source", "fits"),
    [
        ("repository.lvm.read_bw", run_source("randread", "4k", 4), False),  # the case
        ("repository.lvm.read_bw", run_source("read", "1M", 16), True),
        ("repository.lvm.read_bw", run_source("read", "64k", 1), True),
        ("repository.lvm.read_bw", run_source("read", "32k", 1), False),
        ("repository.lvm.read_bw", run_source("write", "1M", 16), False),
        ("repository.lvm.read_bw", run_source(None, None, None), False),  # unrecorded: no guess
        ("repository.lvm.write_bw", run_source("write", "1m", 8), True),
        ("repository.lvm.write_bw", run_source("randwrite", "4k", 4), False),
        ("repository.lvm.latency", run_source("randread", "4k", 1), True),
        ("repository.lvm.latency", run_source("randread", "4k", 4), False),  # queueing in the latency
        ("repository.lvm.latency", run_source("read", "1M", 1), False),  # transfer time in the latency
        ("cache.hit_bw", run_source("read", "1M", 4), True),
        ("cache.hit_bw", run_source("randread", "4k", 4), False),
        ("cache.flush_bw", run_source("randwrite", "4k", 4, column=FLUSH_COLUMN), True),
        ("cache.flush_bw", run_source("randwrite", "4k", 4), False),
        ("nat.cpu_per_packet", run_source(None, None, None, column="cpu_ns_per_packet"), True),
        ("nat.cpu_per_packet", run_source(None, None, None, column="cpu_ns_per_conn"), False),
        ("repository.lvm.read_bw", Source(kind="default", note="assumed"), True),
        # A value passed on with --base is judged by where the base file says it came from.
        (
            "repository.lvm.read_bw",
            Source(kind="base", file="b", origin=run_source("randread", "4k", 4)),
            False,
        ),
    ],
)
def test_judge(name: str, source: Source, fits: bool) -> None:
    assert judge(name, source).fits is fits


def test_fio_sizes() -> None:
    assert [fio_bytes(x) for x in ("4k", "1M", "64KiB", "512", 8192)] == [4096, 2**20, 65536, 512, 8192]
    assert fio_bytes("4k-16k") is None and fio_bytes("4k,8k") is None and fio_bytes(None) is None


def scenario(tmp_path: Path, **sections: dict[str, Any]) -> ScenarioFile:
    data: dict[str, Any] = {
        "scenario": {"name": "t", "seed": 5, "sample_interval": "1 s"},
        "cluster": {"nodes": 2, "slots_per_node": 1, "nic": "10 Gbit/s", "read_cache": "0 B"},
        "repository": {"kind": "central", "link": "10 Gbit/s"},
        "images": {"count": 1, "working_set": "100 MiB"},
        "workload": {"arrivals": "burst", "count": 2, "runtime": "10 s", "runtime_dist": "fixed"},
        "nat": {"mode": "none"},
    }
    for name, over in sections.items():
        data.setdefault(name, {}).update(over)
    return parse_scenario_file(data, tmp_path / "s.toml")


def only(names: dict[str, str], accept: tuple[str, ...] = ()) -> Calibration:
    """A calibration with just these values, each a default."""
    doc: dict[str, Any] = {"format": "skycache-sim-calibration/2", "accept_role_mismatch": list(accept)}
    for name, text in names.items():
        *section, key = name.split(".")
        table = doc
        for part in section:
            table = table.setdefault(part, {})
        table[key] = text
        doc.setdefault("sources", {})[name] = {"kind": "default", "note": "test"}
    return parse_calibration(doc, path="t.toml")


READ_ONLY = {"repository.lvm.read_bw": "100 MiB/s", "repository.lvm.latency": "1 ms"}


def test_a_scenario_takes_only_the_values_it_uses(tmp_path: Path) -> None:
    sf = scenario(tmp_path)  # no read cache, no NAT, no writes
    rates = model_rates(sf.base, only(READ_ONLY))
    assert rates.read_bw == pytest.approx(100 * 2**20) and rates.latency == pytest.approx(1e-3)
    assert rates.nat_cpu_per_packet == 0.0  # no NAT, no gateway
    model = ClusterModel(sf.base, only(READ_ONLY))
    assert model.t_wdisk == []  # no write reaches the repository: no write disk, no write_bw needed
    res = model.run()
    assert res.counters["repo_read_bytes"] == pytest.approx(2 * 100 * 2**20)


@pytest.mark.parametrize(
    ("sections", "needed"),
    [
        ({"cluster": {"read_cache": "1 GiB"}}, "cache.hit_bw"),
        ({"nat": {"mode": "per-node"}}, "nat.cpu_per_packet"),
        (
            {"workload": {"write_bytes": "1 GiB"}, "cluster": {"write_cache": False}},
            "repository.lvm.write_bw",
        ),
        (
            {"workload": {"write_bytes": "1 GiB"}, "cluster": {"write_cache": True, "sync_fraction": 0.5}},
            "repository.lvm.write_bw",
        ),
        ({"repository": {"backend": "file"}}, "repository.file.read_bw"),
    ],
)
def test_a_value_the_scenario_uses_and_the_file_lacks_is_named(
    tmp_path: Path, sections: dict[str, dict[str, Any]], needed: str
) -> None:
    sf = scenario(tmp_path, **sections)
    with pytest.raises(InvalidInput, match=rf"^t\.toml: no {needed.replace('.', '[.]')}\b.*--base FILE$"):
        ClusterModel(sf.base, only(READ_ONLY))


def test_scenario_overrides_replace_calibrated_values(tmp_path: Path) -> None:
    sf = scenario(tmp_path, repository={"read_bw": "50 MiB/s", "latency": "3 ms"})
    rates = model_rates(sf.base, only({"nat.cpu_per_conn": "1 us"}))  # no repository value needed
    assert rates.read_bw == pytest.approx(50 * 2**20) and rates.latency == pytest.approx(3e-3)


def test_the_model_refuses_a_random_read_rate_as_streaming_bandwidth(tmp_path: Path) -> None:
    out = tmp_path / "q.toml"
    assert CliRunner().invoke(app, ["calibrate", str(QUICKSTART), "-o", str(out)]).exit_code == 0
    cal = load_calibration(out)
    sf = scenario(tmp_path)
    with pytest.raises(InvalidInput) as got:
        ClusterModel(sf.base, cal)
    message = str(got.value)
    assert message.startswith(f"{out}: repository.lvm.read_bw = 12.5808 MiB/s (run {QUICKSTART}, ")
    assert "rw=randread bs=4k iodepth=4" in message  # the source workload
    assert "does not fit its role, the streaming read bandwidth of the repository" in message
    assert message.endswith(
        "list 'repository.lvm.read_bw' in the calibration's accept_role_mismatch to use it anyway"
    )


def test_accepted_mismatches_are_used_as_measured(tmp_path: Path) -> None:
    out = tmp_path / "q.toml"
    accept = [
        "--accept-role-mismatch",
        "repository.lvm.read_bw",
        "--accept-role-mismatch",
        "repository.lvm.latency",
    ]
    args = ["calibrate", str(QUICKSTART), str(NAT_BENCH), "-o", str(out), *accept]
    assert CliRunner().invoke(app, args).exit_code == 0
    cal = load_calibration(out)
    model = ClusterModel(scenario(tmp_path, nat={"mode": "per-node"}).base, cal)
    assert model.read_bw == cal.values["repository.lvm.read_bw"].value
    nat = cal.values["nat.cpu_per_packet"].value
    assert model.rates.nat_cpu_per_packet == nat
    # The scenario with a read cache also needs cache.hit_bw, which is 4 KiB random reads: refused.
    with pytest.raises(InvalidInput, match=r"cache\.hit_bw = .* does not fit its role"):
        ClusterModel(scenario(tmp_path, cluster={"read_cache": "1 GiB"}).base, cal)


def test_acceptance_in_a_base_file_travels_with_its_value(tmp_path: Path) -> None:
    first = tmp_path / "first.toml"
    args = ["calibrate", str(QUICKSTART), "-o", str(first), "--accept-role-mismatch", "cache.hit_bw"]
    assert CliRunner().invoke(app, args).exit_code == 0
    cal = derive([NAT_BENCH], base=load_calibration(first))
    assert cal.accept_role_mismatch == ("cache.hit_bw",)
    assert cal.values["cache.hit_bw"].source.kind == "base"
    text = render_calibration(cal)
    assert tomllib.loads(text)["accept_role_mismatch"] == ["cache.hit_bw"]


def test_example_calibration_still_runs_every_scenario_shape(tmp_path: Path) -> None:
    cal = load_calibration(CAL)
    sf = scenario(tmp_path, cluster={"read_cache": "1 GiB", "write_cache": True, "sync_fraction": 0.5},
                  workload={"write_bytes": "10 MiB"}, nat={"mode": "central", "gateways": 1})  # fmt: skip
    model = ClusterModel(sf.base, cal)
    assert model.flush_bw == pytest.approx(200 * 2**20) and model.hit_bw == pytest.approx(800 * 2**20)
    assert model.run().counters["repo_write_bytes"] > 0


def test_sim_check_refuses_a_misfit_value_before_anything_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "q.toml"
    assert CliRunner().invoke(app, ["calibrate", str(QUICKSTART), "-o", str(out)]).exit_code == 0
    sf_path = tmp_path / "s.toml"
    sf_path.write_text(
        '[scenario]\nname = "t"\nseed = 5\nsample_interval = "1 s"\n'
        '[cluster]\nnodes = 2\nslots_per_node = 1\nnic = "10 Gbit/s"\nread_cache = "0 B"\n'
        '[repository]\nkind = "central"\nlink = "10 Gbit/s"\n'
        '[images]\ncount = 1\nworking_set = "100 MiB"\n'
        '[workload]\narrivals = "burst"\ncount = 2\nruntime = "10 s"\nruntime_dist = "fixed"\n'
        '[nat]\nmode = "none"\n'
    )
    checked = skycache(capsys, "sim", "check", sf_path, "-c", out)
    assert_one_error(checked, "repository.lvm.read_bw = 12.5808 MiB/s", "does not fit its role", code=2)
    assert skycache(capsys, "sim", "check", sf_path, "-c", CAL).code == 0
