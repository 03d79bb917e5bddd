"""skycache sim sweep: a grid x variants x replications on a local Dask cluster (and sim run's progress)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from skycache.errors import InvalidInput
from skycache.sim.cli import app

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
[scenario]
name = "sweep-t"
calibration = "{cal}"
seed = 1

[cluster]
nodes = 4
slots_per_node = 2
nic = "1 Gbit/s"
read_cache = "1 GiB"

[repository]
link = "1 Gbit/s"

[images]
working_set = "50 MiB"

[workload]
arrivals = "burst"
count = 8
runtime = "1 s"

[variants.no-cache]
cluster = {{ read_cache = "0 B" }}

[sweep]
replications = 2
[sweep.grid]
"cluster.nodes" = [2, 4]
"""


def test_sweep_runs_grid_on_local_dask_cluster(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.format(cal=ROOT / "scenarios" / "sim-calibration-example.toml"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(sc), "--workers", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "sweep.parquet")
    # 2 grid points x 2 variants x 2 replications
    assert len(table) == 8
    assert sorted(table["param:cluster.nodes"].unique()) == [2, 4]
    assert set(table.variant) == {"base", "no-cache"}
    assert set(table.seed) == {1, 2}
    cached = table[table.variant == "base"].repo_fetches
    uncached = table[table.variant == "no-cache"].repo_fetches
    assert cached.max() <= 4 and (uncached == 8).all()
    assert "8 runs in" in result.stdout
    # progress on stderr, a line per finished run with the elapsed time (a log is never silent)
    lines = result.stderr.splitlines()
    assert lines[0] == "sim: sweep: 8 runs on 2 local worker process(es)"
    done = [ln for ln in lines if ln.startswith("sim: sweep point ")]
    assert [ln.split(" done")[0] for ln in done] == [f"sim: sweep point {i} of 8" for i in range(1, 9)]
    assert all(re.search(r"\(variant (base|no-cache), cluster.nodes=[24], seed [12]\) \.\.\. [0-9.]+ s$", ln)
               for ln in done), done  # fmt: skip
    assert "sweep point" not in result.stdout


def test_sweep_param_option_replaces_grid(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.format(cal=ROOT / "scenarios" / "sim-calibration-example.toml"))
    from skycache.sim.scenario import load_scenario
    from skycache.sim.sweep import tasks

    sf = load_scenario(sc)
    assert len(tasks(sf, 1)) == 4
    result = CliRunner().invoke(
        app, ["sweep", str(sc), "-p", "cluster.nic=-1 Gbit/s", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert "negative" in str(result.exception)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "\u0663"), ("--workers", "0"), ("--workers", "1" * 30), ("-r", "0"), ("-r", "1" * 5000)],
)
def test_sweep_refuses_workers_and_replications_out_of_bounds(
    tmp_path: Path, option: str, value: str
) -> None:
    # Refused by the one number grammar before anything is loaded or a worker started
    # (click's int read "٣" as 3 and 10**29 workers as a number).
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.format(cal=ROOT / "scenarios" / "sim-calibration-example.toml"))
    result = CliRunner().invoke(app, ["sweep", str(sc), option, value, "-o", str(tmp_path / "o")])
    assert isinstance(result.exception, InvalidInput), result.output
    assert ("--workers" if option == "--workers" else "--replications") in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_sweep_variant_option_runs_only_those_variants(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.format(cal=ROOT / "scenarios" / "sim-calibration-example.toml"))
    from skycache.sim.scenario import load_scenario
    from skycache.sim.sweep import tasks

    sf = load_scenario(sc)
    assert [v for v, _, _ in tasks(sf, 1, ["no-cache"])] == ["no-cache", "no-cache"]  # 2 grid points
    assert [v for v, _, _ in tasks(sf, 1, ["no-cache", "base"])] == ["base", "no-cache"] * 2
    result = CliRunner().invoke(app, ["sweep", str(sc), "--variant", "nope", "-o", str(tmp_path / "o")])
    assert isinstance(result.exception, InvalidInput), result.output
    assert "no variant 'nope' (has: base, no-cache)" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_sim_run_says_each_variant_as_it_starts_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from boundary import skycache

    sc = tmp_path / "s.toml"
    sc.write_text(SCENARIO.format(cal=ROOT / "scenarios" / "sim-calibration-example.toml"))
    r = skycache(capsys, "sim", "run", sc, "--no-plots", "--out", tmp_path / "o", "--json")
    assert r.code == 0, r
    json.loads(r.out)  # stdout stays the JSON alone
    lines = [re.sub(r"[0-9]+\.[0-9] s$", "T s", ln) for ln in r.err.splitlines()]
    assert lines == [
        "sim: run: variant base (1 of 2) ... T s",
        "sim: run: variant no-cache (2 of 2) ... T s",
        "sim: run: done in T s",
    ]
