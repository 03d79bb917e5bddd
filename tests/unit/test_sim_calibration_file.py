"""The calibration file (format 2): every value has a source; bad files are one line naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from skycache.errors import InvalidInput
from skycache.sim.calibration import FORMAT, load_calibration, parse_calibration, render_calibration

ROOT = Path(__file__).resolve().parents[2]
CAL = ROOT / "scenarios" / "sim-calibration-example.toml"

SMALL = """
format = "skycache-sim-calibration/2"

[repository.lvm]
read_bw = "100 MiB/s"

[sources."repository.lvm.read_bw"]
kind = "run"
run = "results/bench/r1"
condition = "stack=lvm-iscsi,workload=seq"
column = "bw_bytes"
statistic = "median of 3 repetitions"
workload = { rw = "read", bs = "1M", iodepth = 16, numjobs = 1 }
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_example_is_all_illustrative_defaults() -> None:
    cal = load_calibration(CAL)
    assert len(cal.values) == 10
    assert {r.source.kind for r in cal.values.values()} == {"default"}
    assert all("illustrative" in r.source.note for r in cal.values.values())
    assert cal.mismatches() == []  # a default is an assumption made for its role


def test_render_round_trips_sources_and_acceptance(tmp_path: Path) -> None:
    assert f'format = "{FORMAT}"' in SMALL
    text = SMALL.replace('rw = "read"', 'rw = "randread"').replace(
        "[repository.lvm]", 'accept_role_mismatch = ["repository.lvm.read_bw"]\n\n[repository.lvm]'
    )
    cal = load_calibration(write(tmp_path, text))
    again = parse_calibration(tomllib.loads(render_calibration(cal)))
    assert again.values == cal.values
    assert again.accept_role_mismatch == ("repository.lvm.read_bw",)
    example = load_calibration(CAL)
    assert parse_calibration(tomllib.loads(render_calibration(example))).values == example.values


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            '[sources."repository.lvm.read_bw"]',
            '[sources."repository.lvm.write_bw"]',
            r'repository\.lvm\.read_bw: has no \[sources\."repository\.lvm\.read_bw"\] saying where',
        ),
        (
            'read_bw = "100 MiB/s"',
            'read_bw = "100 MiB/s"\nlatency = "1 ms"',
            r"repository\.lvm\.latency: has no \[sources",
        ),
        (
            "numjobs = 1 }\n",
            'numjobs = 1 }\n[sources."cache.hit_bw"]\nkind = "default"\nnote = "y"\n',
            r'sources\."cache\.hit_bw": names no value this calibration sets',
        ),
        (
            'statistic = "median of 3 repetitions"\n',
            "",
            r'sources\."repository\.lvm\.read_bw": a run source needs statistic',
        ),
        (
            'kind = "run"',
            'kind = "measured"',
            r"sources\.\"repository\.lvm\.read_bw\"\.kind: 'measured': Input should be",
        ),
        ('kind = "run"', 'kind = "base"', "a base source needs file"),
        ('kind = "run"', 'kind = "default"', "file and origin|a default needs a note"),
        ("iodepth = 16", "iodepth = 0", r"workload\.iodepth: 0: Input should be greater than or equal to 1"),
        ('read_bw = "100 MiB/s"', 'read_bw = "100"', r"repository\.lvm\.read_bw: '100' is not a bandwidth"),
        (
            'read_bw = "100 MiB/s"',
            "read_bw = 100",
            r"repository\.lvm\.read_bw: 100 needs a unit, written as a string",
        ),
        (
            'read_bw = "100 MiB/s"',
            'read_bw = "0 MiB/s"',
            r"repository\.lvm\.read_bw: '0 MiB/s' must be positive",
        ),
        (
            "[repository.lvm]",
            '[repository."l.v"]',
            r"repository\.\"l\.v\": 'l\.v': String should match pattern",
        ),
        (
            'read_bw = "100 MiB/s"',
            'read_bw = "100 MiB/s"\nconntrack_bytes = "320 B"',
            r"repository\.lvm\.conntrack_bytes: unknown key",
        ),
        (
            "[repository.lvm]",
            'accept_role_mismatch = ["nat.cpu_per_conn"]\n[repository.lvm]',
            r"accept_role_mismatch: 'nat\.cpu_per_conn' is not a value this calibration sets",
        ),
        (
            'condition = "stack=lvm-iscsi,workload=seq"',
            'condition = "a\\u0007b"',
            "one line of printable text",
        ),
    ],
)
def test_bad_calibration_is_one_line_naming_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in SMALL
    path = write(tmp_path, SMALL.replace(old, new, 1))
    with pytest.raises(InvalidInput, match=message) as got:
        load_calibration(path)
    assert str(got.value).startswith(f"{path}: ") and "\n" not in str(got.value)


def test_nat_conntrack_bytes_is_gone(tmp_path: Path) -> None:
    """It was parsed and never used; the model has no memory figure that needs it."""
    text = CAL.read_text().replace(
        'cpu_per_conn = "25 us"', 'cpu_per_conn = "25 us"\nconntrack_bytes = "320 B"'
    )
    with pytest.raises(InvalidInput, match=r"nat\.conntrack_bytes: unknown key"):
        load_calibration(write(tmp_path, text))


def test_format_1_is_refused_with_how_to_upgrade(tmp_path: Path) -> None:
    old = 'format = "skycache-sim-calibration/1"\n[repository.lvm]\nread_bw = { value = "1 MiB/s" }\n'
    with pytest.raises(
        InvalidInput, match="records no source per value; regenerate it with skycache sim calibrate"
    ):
        load_calibration(write(tmp_path, old))


def test_values_may_be_absent(tmp_path: Path) -> None:
    cal = load_calibration(write(tmp_path, SMALL))
    assert cal.backend("lvm").write_bw is None and cal.cache_hit_bw is None
    with pytest.raises(InvalidInput, match="no repository backend 'file' \\(has: lvm\\)"):
        cal.backend("file")


def test_each_kind_describes_itself_in_one_line(tmp_path: Path) -> None:
    example = load_calibration(CAL)
    assert example.values["repository.lvm.read_bw"].describe() == (
        "400 MiB/s (default: SAN sequential read, illustrative)"
    )
    run = load_calibration(write(tmp_path, SMALL)).values["repository.lvm.read_bw"]
    assert run.describe() == (
        "100 MiB/s (run results/bench/r1, condition stack=lvm-iscsi,workload=seq, bw_bytes, "
        "median of 3 repetitions, rw=read bs=1M iodepth=16 numjobs=1)"
    )
    assert run.provenance["run"] == "results/bench/r1" and run.provenance["bs"] == "1M"
