"""A bad sim scenario is one line, ``skycache: error: FILE: key.path: what is wrong``, exit 2 (the
line a bench file gives): unknown keys, wrong types, NaN and infinities, negative, huge and
unit-less values, each naming the value; a variant's or a sweep point's problem is located where
the file sets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from boundary import skycache

ROOT = Path(__file__).resolve().parents[2]
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"

BASE = """\
[scenario]
name = "t"
sample_interval = "1 s"

[cluster]
nodes = 4
nic = "1 Gbit/s"
read_cache = "1 GiB"

[repository]
link = "1 Gbit/s"

[images]
working_set = "100 MiB"

[workload]
arrivals = "burst"
count = 6
runtime = "10 s"

[nat]
mode = "per-node"
egress = "2 Mbit/s"

[variants.small]
cluster = { read_cache = "64M" }
"""


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str, Path]:
    """``skycache sim check`` of ``text`` through the real entry point: exit code, stderr, the file."""
    p = tmp_path / "s.toml"
    p.write_text(text)
    result = skycache(capsys, "sim", "check", p, "-c", CAL)
    return result.code, result.err, p


def test_base_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.toml"
    p.write_text(BASE)
    result = skycache(capsys, "sim", "check", p, "-c", CAL)
    assert result.code == 0, result.err
    assert result.out.startswith("ok: t: 2 variant(s)")


CASES: list[tuple[str, str, str]] = [
    # (old text, new text, the line after "skycache: error: FILE: ")
    ('nic = "1 Gbit/s"', 'nic = "1 Gbit/s"\ncolour = "red"', "cluster.colour: unknown key"),
    ("[images]", "[imags]", "imags: unknown key (and 1 more problem)"),  # the typo, not its effect
    ("nodes = 4", 'nodes = "4"', "cluster.nodes: '4' is not a whole number"),
    ("nodes = 4", "nodes = 4.0", "cluster.nodes: 4.0 is not a whole number"),
    ("nodes = 4", "nodes = true", "cluster.nodes: True is not a whole number"),
    ("nodes = 4", "nodes = -4", "cluster.nodes: -4 is out of range [1, 1000000] (the model's node bound)"),
    (
        "nodes = 4",
        "nodes = 100000000000000000000000000000",
        "cluster.nodes: 100000000000000000000000000000 is out of range [1, 1000000] (the model's node bound)",
    ),
    ("nodes = 4", "nodes = 4\nsync_fraction = nan", "cluster.sync_fraction: nan is not a finite number"),
    ("nodes = 4", "nodes = 4\nsync_fraction = -inf", "cluster.sync_fraction: -inf is not a finite number"),
    (
        'nic = "1 Gbit/s"',
        "nic = 1000",
        'cluster.nic: 1000 needs a unit, written as a string (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    (
        'nic = "1 Gbit/s"',
        'nic = "1000"',
        'cluster.nic: \'1000\' is not a bandwidth (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    ('nic = "1 Gbit/s"', 'nic = "-1 Gbit/s"', "cluster.nic: '-1 Gbit/s' is negative, not a bandwidth"),
    ('nic = "1 Gbit/s"', 'nic = "0 Gbit/s"', "cluster.nic: '0 Gbit/s': must be positive"),
    (
        'nic = "1 Gbit/s"',
        'nic = "nan Gbit/s"',
        'cluster.nic: \'nan Gbit/s\' is not a bandwidth (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    (
        'nic = "1 Gbit/s"',
        'nic = "1 Gb/s"',
        'cluster.nic: \'1 Gb/s\' is not a bandwidth (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    (
        'nic = "1 Gbit/s"',
        'nic = "2000 TiB/s"',
        "cluster.nic: '2000 TiB/s' is above the largest bandwidth in B/s the model takes (1e+15)",
    ),
    (
        'read_cache = "1 GiB"',
        'read_cache = "1 GiB/s"',
        "cluster.read_cache: '1 GiB/s' is not a size (examples: 512M, 8G, 1.5GiB)",
    ),
    (
        'read_cache = "1 GiB"',
        'read_cache = "1e3G"',
        "cluster.read_cache: '1e3G' is not a size (examples: 512M, 8G, 1.5GiB)",
    ),
    (
        'read_cache = "1 GiB"',
        'read_cache = "0.1K"',
        "cluster.read_cache: '0.1K' is not a whole number of bytes",
    ),
    (
        'read_cache = "1 GiB"',
        'read_cache = "1 parsec"',
        "cluster.read_cache: '1 parsec' has an unknown unit 'parsec' (use K, M, G, T)",
    ),
    (
        'read_cache = "1 GiB"',
        'read_cache = "8192 PiB"',
        "cluster.read_cache: '8192 PiB' is larger than the largest size, 8E - 1 "
        "(9223372036854775807 bytes, off_t)",
    ),
    (
        'runtime = "10 s"',
        "runtime = 10",
        'workload.runtime: 10 needs a unit, written as a string (e.g. "2 ms", "30 min")',
    ),
    (
        'runtime = "10 s"',
        'runtime = "10 M"',
        "workload.runtime: '10 M' is not a duration (units: ns, us, ms, s, min, h, d)",
    ),
    ('arrivals = "burst"', 'arrivals = "swf"', "workload: arrivals = 'swf' needs workload.trace"),
    (
        'arrivals = "burst"',
        'arrivals = "storm"',
        "workload.arrivals: 'storm': Input should be 'poisson', 'burst' or 'swf'",
    ),
    (
        'name = "t"',
        'name = "t\\n"',
        "scenario.name: 't\\n' is not a name (letters, digits, . _ -; at most 64)",
    ),
    ('name = "t"', 'name = "t"\ndescription = 5', "scenario.description: 5: Input should be a valid string"),
    (
        'name = "t"',
        'name = "t"\ndescription = "a\\u001bb"',
        "scenario.description: 'a\\x1bb' has a control character",
    ),
    (
        'link = "1 Gbit/s"',
        'link = "0 B/s"',
        "repository: link is required (and positive) for a central repository",
    ),
    (
        'mode = "per-node"',
        'mode = "per-node"\ncores = 0',
        "nat: cores must be positive when mode = 'per-node'",
    ),
    (
        'cluster = { read_cache = "64M" }',
        "cluster = 5",
        "variants.small.cluster: 5: Input should be a valid dictionary or instance of ClusterSection",
    ),
    (
        'read_cache = "64M"',
        'read_cache = "-64M"',
        "variants.small.cluster.read_cache: '-64M' is negative, not a size",
    ),
    ('read_cache = "64M"', 'read_cahce = "64M"', "variants.small.cluster.read_cahce: unknown key"),
    (
        'read_cache = "64M" }',
        "slots_per_node = 0 }",
        "variants.small.cluster.slots_per_node: 0 is out of range [1, 100000]",
    ),
    ("[variants.small]", "[variants.base]", "variants.base: 'base' is reserved for the scenario itself"),
    (
        "[variants.small]",
        '[variants.small]\nnat = { mode = "central", cores = 0 }',
        "variants.small.nat: cores must be positive when mode = 'central'",
    ),
    ('sample_interval = "1 s"', 'sample_interval = "1 ns"', "scenario.sample_interval: 1 ns gives about"),
]
GRID = '[sweep.grid]\n"cluster.{}" = {}\n[variants.small]'
CASES += [
    (
        "[variants.small]",
        GRID.format("nic", '["1 Gbit/s", "1 Gb/s"]'),
        'sweep.grid."cluster.nic"[1]: \'1 Gb/s\' is not a bandwidth (e.g. "120 MiB/s", "1 Gbit/s")',
    ),
    (
        "[variants.small]",
        '[sweep.grid]\n"cluster" = [1]\n[variants.small]',
        "sweep.grid.cluster: 'cluster' is not SECTION.KEY",
    ),
    (
        "[variants.small]",
        GRID.format("nodes", "[]"),
        'sweep.grid."cluster.nodes": [] is not a non-empty list of values',
    ),
    (
        "[variants.small]",
        "[sweep]\nreplications = 0\n[variants.small]",
        "sweep.replications: 0 is out of range [1, 10000000]",
    ),
]


@pytest.mark.parametrize(("old", "new", "line"), CASES)
def test_one_line_naming_the_key_and_the_value(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    line: str,
) -> None:
    assert old in BASE
    code, err, path = check(tmp_path, capsys, BASE.replace(old, new, 1))
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"skycache: error: {path}: {line}"), err


def test_bench_and_sim_files_give_the_same_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown key is worded by the one formatter both loaders use."""
    from skycache.bench import scenario as bench_scenario
    from skycache.errors import InvalidInput

    bench = {
        "name": "t",
        "colour": "red",
        "stacks": [{"name": "s"}],
        "workloads": [{"name": "w", "rw": "read"}],
    }
    with pytest.raises(InvalidInput) as exc:
        bench_scenario.from_dict(bench, Path("b.toml"), profiles=["none"])
    assert str(exc.value) == "b.toml: colour: unknown key"
    _, err, path = check(tmp_path, capsys, 'colour = "red"\n' + BASE)
    assert err.strip() == f"skycache: error: {path}: colour: unknown key"


def test_a_problem_the_variant_causes_elsewhere_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace('cluster = { read_cache = "64M" }', 'workload = { runtime = "1000 d" }')
    code, err, path = check(tmp_path, capsys, text)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"skycache: error: {path}: scenario.sample_interval: 1 s gives about "), err
    assert err.rstrip().endswith("(in variant small)"), err


@pytest.mark.parametrize(
    ("param", "line"),
    [
        ("images.count=٣", "sweep.grid.\"images.count\"[0]: '٣' is not a whole number"),  # int() reads 3
        ("images.count=1_000", "sweep.grid.\"images.count\"[0]: '1_000' is not a whole number"),
        ("images.zipf=nan", "sweep.grid.\"images.zipf\"[0]: 'nan' is not a number"),  # float() reads NaN
        ("cluster.nic=1 Gb/s", "sweep.grid.\"cluster.nic\"[0]: '1 Gb/s' is not a bandwidth"),
    ],
)
def test_sweep_params_are_read_by_the_same_grammar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], param: str, line: str
) -> None:
    p = tmp_path / "s.toml"
    p.write_text(BASE)
    out = tmp_path / "out"
    result = skycache(capsys, "sim", "sweep", p, "-c", CAL, "-p", param, "-o", out)
    err = result.err
    assert result.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"skycache: error: {p}: {line}"), err
    assert not out.exists()  # refused before the sweep
