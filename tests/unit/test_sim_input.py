"""Scenario, calibration, unit and SWF validation: bad input is refused with one line, before a run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skycache.errors import InvalidInput
from skycache.sim.calibration import load_calibration, parse_calibration, render_calibration
from skycache.sim.quantities import parse_bandwidth, parse_bytes, parse_duration, parse_frequency
from skycache.sim.scenario import load_scenario
from skycache.sim.swf import load_swf, parse_swf

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "sim"
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"

SCENARIO = """
[scenario]
name = "t"
seed = 3
sample_interval = "1 s"

[cluster]
nodes = 4
slots_per_node = 2
nic = "1 Gbit/s"
read_cache = "1 GiB"

[repository]
kind = "central"
link = "1 Gbit/s"

[images]
count = 2
working_set = "100 MiB"

[workload]
arrivals = "burst"
count = 6
runtime = "10 s"
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "parse", "expected"),
    [
        ("120 MiB/s", parse_bandwidth, 120 * 2**20),
        ("1 Gbit/s", parse_bandwidth, 125e6),
        ("10 Gbps", parse_bandwidth, 1.25e9),
        ("2 ms", parse_duration, 0.002),
        ("1.5 us", parse_duration, 1.5e-6),
        ("30 min", parse_duration, 1800),
        ("300 MiB", parse_bytes, 300 * 2**20),
        ("0 B", parse_bytes, 0),
        ("5 /s", parse_frequency, 5),
        ("120 /h", parse_frequency, 120 / 3600),
    ],
)
def test_quantities(text: str, parse, expected: float) -> None:  # type: ignore[no-untyped-def]
    assert parse(text, what="x") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "parse", "message"),
    [
        (120, parse_bandwidth, "needs a unit"),
        ("120", parse_bandwidth, "not a bandwidth"),
        ("-5 MiB/s", parse_bandwidth, "negative"),
        ("2 parsecs", parse_duration, "not a duration"),
        ("2 MiB/s", parse_bytes, "not a size"),
        ("5", parse_frequency, "not a rate"),
    ],
)
def test_quantities_refused(value: object, parse, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=message):
        parse(value, what="cluster.nic")


def test_good_scenario_loads(tmp_path: Path) -> None:
    sf = load_scenario(write(tmp_path, SCENARIO))
    assert sf.base.cluster.nodes == 4
    assert sf.base.cluster.nic_bw == pytest.approx(125e6)
    assert sf.base.images.working_set == 100 * 2**20


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('nic = "1 Gbit/s"', 'nic = "-1 Gbit/s"', "negative"),
        ('nic = "1 Gbit/s"', "nic = 1000", "needs a unit"),
        ('nic = "1 Gbit/s"', 'nic = "1000"', "not a bandwidth"),
        ('read_cache = "1 GiB"', 'read_cahce = "1 GiB"', "s.toml: cluster.read_cahce: unknown key$"),
        ("[images]", "[imags]", "s.toml: imags: unknown key \\(and 1 more problem\\)$"),
        ("nodes = 4", "nodes = 0", "cluster.nodes: 0 is out of range \\[1, 1000000\\]"),
        (
            'kind = "central"',
            'kind = "p2p"',
            "repository.kind: 'p2p': Input should be 'central' or 'distributed'",
        ),
        ('arrivals = "burst"', 'arrivals = "swf"', "needs workload.trace"),
        ('link = "1 Gbit/s"', 'link = "0 Gbit/s"', "repository: link is required \\(and positive\\)"),
        ('runtime = "10 s"', 'runtime = "10 s"\nwrite_bytes = "-1 GiB"', "negative"),
    ],
)
def test_bad_scenario_refused_with_one_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in SCENARIO
    with pytest.raises(InvalidInput, match=message) as err:
        load_scenario(write(tmp_path, SCENARIO.replace(old, new, 1)))
    assert "\n" not in str(err.value)


def test_bad_variant_and_sweep_point_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"s\.toml: variants\.v\.cluster\.bogus: unknown key$"):
        load_scenario(write(tmp_path, SCENARIO + "\n[variants.v]\ncluster = { bogus = 1 }\n"))
    point = re.escape("""s.toml: sweep.grid."cluster.nic"[1]: '-2 Gbit/s' is negative, not a bandwidth""")
    with pytest.raises(InvalidInput, match=point + "$"):
        load_scenario(
            write(tmp_path, SCENARIO + '\n[sweep.grid]\n"cluster.nic" = ["1 Gbit/s", "-2 Gbit/s"]\n')
        )


def test_calibration_example_loads_and_round_trips() -> None:
    cal = load_calibration(CAL)
    assert cal.backend("lvm").read_bw.value == pytest.approx(400 * 2**20)
    assert cal.backend("lvm").read_bw.provenance["note"].startswith("SAN")
    import tomllib

    again = parse_calibration(tomllib.loads(render_calibration(cal)))
    assert again.nat_cpu_per_conn.value == pytest.approx(cal.nat_cpu_per_conn.value)
    assert again.backend("file").latency.value == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('hit_bw = "800 MiB/s"', 'hit_bw = "-800 MiB/s"', "negative"),
        ('hit_bw = "800 MiB/s"', "hit_bw = 800", "needs a unit"),
        ('hit_bw = "800 MiB/s"', 'hit_bw = "0 MiB/s"', "must be positive"),
        ('latency = "2 ms"', 'latncy = "2 ms"', "latency is missing|unknown key"),
        ('cpu_per_conn = "25 us"', 'cpu_per_conn = "25 us"\nfoo = "1 s"', "nat\\.foo: unknown key"),
        ('format = "skycache-sim-calibration/2"', 'format = "other/2"', "format"),
    ],
)
def test_bad_calibration_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = CAL.read_text()
    assert old in text
    with pytest.raises(InvalidInput, match=message):
        load_calibration(write(tmp_path, text.replace(old, new, 1), "c.toml"))


def test_unknown_backend_refused() -> None:
    with pytest.raises(InvalidInput, match="no repository backend 'zfs'"):
        load_calibration(CAL).backend("zfs")


def test_swf_sample_parses() -> None:
    t = load_swf(DATA / "tiny.swf")
    assert len(t) == 5
    assert t.submit.tolist() == [0, 10, 10, 45, 120]
    assert t.runtime.tolist() == [600, 300, -1, 1200, 60]
    assert t.processors.tolist() == [1, 2, 1, 4, 1]  # job 4: allocated unknown -> requested
    assert t.header["MaxProcs"] == "8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello world\n", "2 fields, SWF has 18: not SWF"),
        ("; only comments\n", "no job lines"),
        ("1 0 5 600 1 -1 -1 1 900 -1 1 1 1 1 1 -1 -1 x\n", "non-numeric"),
        (
            "1 10 0 1 1 -1 -1 1 1 -1 1 1 1 1 1 -1 -1 -1\n2 5 0 1 1 -1 -1 1 1 -1 1 1 1 1 1 -1 -1 -1\n",
            "backwards",
        ),
        ("job,submit,wait\n1,0,5\n", "not SWF"),
    ],
)
def test_not_swf_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_swf(text, name="t.swf")


def test_cli_refuses_bad_scenario_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skycache.cli.main import main

    bad = write(tmp_path, SCENARIO.replace('nic = "1 Gbit/s"', 'nic = "-1 Gbit/s"'))
    monkeypatch.setattr(
        "sys.argv", ["skycache", "sim", "run", str(bad), "-c", str(CAL), "-o", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"skycache: error: {bad}: cluster.nic: '-1 Gbit/s' is negative, not a bandwidth"
    assert not (tmp_path / "o").exists()  # refused before the run


def test_cli_refuses_trace_that_is_not_swf(tmp_path: Path) -> None:
    from skycache.sim.cli import app

    trace = write(tmp_path, "not,a,trace\n", "t.swf")
    sc = write(
        tmp_path,
        SCENARIO.replace('arrivals = "burst"', f'arrivals = "swf"\ntrace = "{trace.name}"'),
    )
    result = CliRunner().invoke(app, ["check", str(sc), "-c", str(CAL)])
    assert isinstance(result.exception, InvalidInput)
    assert "not SWF" in str(result.exception)
