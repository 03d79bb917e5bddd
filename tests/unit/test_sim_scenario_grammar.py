"""One grammar of sizes, bandwidths, durations and event rates (skycache.units) for bench and sim
files: the spellings of docs/sim.md ("Units") are accepted with the value they say, the others are
refused naming the value, and a size written in a bench scenario means what it means in a sim one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skycache import units
from skycache.bench import scenario as bench_scenario
from skycache.errors import InvalidInput
from skycache.sim import quantities
from skycache.sim.scenario import parse_scenario_file

KIB, MIB, GIB = 2**10, 2**20, 2**30

SIZES: list[tuple[str | int, int]] = [
    ("1G", GIB),
    ("1g", GIB),
    ("1 GiB", GIB),
    ("1gib", GIB),
    ("1 GB", 10**9),
    ("1gb", 10**9),  # b and B are bytes in a size, as bench files always had it
    ("4k", 4 * KIB),
    ("4 K", 4 * KIB),
    ("1.5K", 1536),
    ("300 MiB", 300 * MIB),
    ("512M", 512 * MIB),
    ("1 kB", 1000),
    ("2 TiB", 2 * 2**40),
    ("1 PB", 10**15),
    ("1200 B", 1200),
    ("1200", 1200),  # a bare whole number is bytes
    (4096, 4096),
    (" 64M ", 64 * MIB),
]
BAD_SIZES: list[tuple[object, str]] = [
    ("1e3G", "is not a size"),  # no exponents: read as a thousand GiB it would be a silent typo
    ("1e3", "is not a size"),
    (".5G", "is not a size"),
    ("1.G", "is not a size"),
    ("-1G", "is negative"),
    ("inf", "is not a size"),
    ("nan G", "is not a size"),
    ("1 2G", "is not a size"),
    ("0x10G", "is not a size"),
    ("1_000G", "is not a size"),
    ("١٢M", "is not a size"),  # Arabic-Indic digits
    ("1.5", "not a whole number of bytes"),
    ("0.1K", "not a whole number of bytes"),
    ("1Q", "has an unknown unit 'Q'"),
    ("1 Gbit", "has an unknown unit 'Gbit'"),  # bits are for bandwidths
    ("1 iB", "has an unknown unit 'iB'"),
    ("10 GiB/s", "is not a size"),
    ("8192P", "larger than the largest size, 8E - 1"),
    ("9" * 50, "larger than the largest size"),
    (1.5, "is not a size"),
    (True, "is not a size"),
    ("", "is not a size"),
]


@pytest.mark.parametrize(("text", "expected"), SIZES)
def test_sizes(text: str | int, expected: int) -> None:
    assert units.parse_size(text) == expected
    assert quantities.parse_bytes(text, what="x") == expected


@pytest.mark.parametrize(("text", "needle"), BAD_SIZES)
def test_sizes_refused(text: object, needle: str) -> None:
    for parse in (units.parse_size, quantities.parse_bytes):
        with pytest.raises(InvalidInput) as exc:
            parse(text, what="x")
        assert needle in str(exc.value) and units.shown(text)[:20] in str(exc.value), str(exc.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120 MiB/s", 120 * MIB),
        ("120MiB/s", 120 * MIB),
        ("1 Gbit/s", 1.25e8),
        ("1 gbit/s", 1.25e8),
        ("10 Gbps", 1.25e9),
        ("10 gbps", 1.25e9),
        ("1 bps", 0.125),
        ("100 Kbit/s", 12500),
        ("2 Mbit / min", 2e6 / 8 / 60),
        ("1G/s", GIB),
        ("1 kib/s", KIB),
        ("100 KB/s", 1e5),
        ("3600 B/h", 1),
    ],
)
def test_bandwidths(text: str, expected: float) -> None:
    assert units.parse_bandwidth(text, what="x") == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("10 Gb/s", "is not a bandwidth"),  # bits to a reader, bytes to the size grammar: refused
        ("10 Mb/s", "is not a bandwidth"),
        ("1 b/s", "is not a bandwidth"),
        ("10 GBps", "is not a bandwidth"),
        ("120/s", "is not a bandwidth"),
        ("120", "is not a bandwidth"),
        (120, "needs a unit"),
        ("1e3 MiB/s", "is not a bandwidth"),
        ("inf MiB/s", "is not a bandwidth"),
        ("-1 MiB/s", "is negative"),
        ("1 MiB/ms", "is not a bandwidth"),
        ("1 Gibit/s", "is not a bandwidth"),
    ],
)
def test_bandwidths_refused(value: object, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        units.parse_bandwidth(value, what="link")
    assert str(exc.value).startswith(f"link {units.shown(value)} ") and needle in str(exc.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500 ns", 5e-7),
        ("1.5 us", 1.5e-6),
        ("1.5 µs", 1.5e-6),
        ("2 ms", 0.002),
        ("10 s", 10),
        ("0 s", 0),
        ("30 min", 1800),
        ("1 h", 3600),
        ("2 d", 172800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert units.parse_duration(text, what="x") == pytest.approx(seconds, rel=1e-15)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("1 M", "is not a duration"),  # not minutes: M is mega everywhere else
        ("1 MS", "is not a duration"),
        ("1 m", "is not a duration"),
        ("1 sec", "is not a duration"),
        ("10", "is not a duration"),
        (10, "needs a unit"),
        ("1e3 s", "is not a duration"),
        ("-1 s", "is negative"),
        ("1 s/s", "is not a duration"),
    ],
)
def test_durations_refused(value: object, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        units.parse_duration(value, what="x")


@pytest.mark.parametrize(("text", "per_s"), [("5 /s", 5), ("5/s", 5), ("2 /min", 2 / 60), ("360 /h", 0.1)])
def test_event_rates(text: str, per_s: float) -> None:
    assert units.parse_event_rate(text, what="x") == pytest.approx(per_s, rel=1e-15)


@pytest.mark.parametrize("value", ["5", "5 Hz", "5 B/s", "5 /d", 5, "-5 /s"])
def test_event_rates_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"not a rate of events|needs a unit|negative"):
        units.parse_event_rate(value, what="x")


def test_sim_bounds_on_top_of_the_grammar() -> None:
    with pytest.raises(InvalidInput, match="above the largest bandwidth in B/s the model takes"):
        quantities.parse_bandwidth("2000 TiB/s", what="x")
    with pytest.raises(InvalidInput, match="above the largest duration in seconds the model takes"):
        quantities.parse_duration("100000 d", what="x")


def test_formatted_rates_read_back() -> None:
    """Calibrations are written with these forms: they must be in the grammar (no exponents)."""
    for bps in (0.5, 3.0, 120 * MIB, 1e14, 1.2e-5):
        assert quantities.parse_bandwidth(quantities.format_bandwidth(bps), what="x") == pytest.approx(
            bps, rel=1e-5
        )
    for s in (2e6, 1.0, 0.002, 2.5e-6, 1e-12):
        assert quantities.parse_duration(quantities.format_duration(s), what="x") == pytest.approx(
            s, rel=1e-5
        )


# -- the same size in a bench file and in a sim file ------------------------------------------------

BENCH = {
    "name": "t",
    "stacks": [{"name": "s", "backend": "lvm", "transport": "local"}],
    "workloads": [{"name": "w", "rw": "randread"}],
}
SIM: dict[str, Any] = {
    "scenario": {"name": "t", "sample_interval": "1 s"},
    "cluster": {"nodes": 2, "nic": "1 Gbit/s"},
    "repository": {"link": "1 Gbit/s"},
    "images": {"working_set": "1 MiB"},
    "workload": {"arrivals": "burst", "count": 2, "runtime": "10 s"},
}


def bench_size(value: object) -> int | str:
    """The bytes a bench scenario's image_size says, or the problem (after the file and key)."""
    try:
        model = bench_scenario.from_dict({**BENCH, "image_size": value}, Path("b.toml"), profiles=["none"])
        return units.parse_positive_size(model.model.image_size)
    except InvalidInput as exc:
        return str(exc).split(": ", 2)[2]


def sim_size(value: object) -> float | str:
    """The bytes a sim scenario's nat.packet_size (positive, like image_size) says, or the problem."""
    try:
        sf = parse_scenario_file({**SIM, "nat": {"packet_size": value}}, Path("s.toml"))
        return sf.base.nat.packet_size
    except InvalidInput as exc:
        return str(exc).split(": ", 2)[2]


@pytest.mark.parametrize("value", [t for t, _ in SIZES] + [t for t, _ in BAD_SIZES] + ["0", 0, "0 B"])
def test_bench_and_sim_files_read_a_size_alike(value: object) -> None:
    b, s = bench_size(value), sim_size(value)
    if isinstance(b, int):
        assert s == b
    elif value in ("0", 0, "0 B"):  # both positive: bench says "is zero", pydantic "must be positive"
        assert isinstance(s, str) and "must be positive" in s, (b, s)
    else:  # the same problem; bench names the key again in its size problems ("image_size '1Q' ...")
        assert b == f"image_size {s}", (b, s)


_number = st.one_of(st.integers(0, 10**6).map(str), st.from_regex(r"[0-9]{1,4}\.[0-9]{1,3}", fullmatch=True))
_unit = st.sampled_from(["", "B", "b", "k", "K", "KiB", "kib", "KB", "kB", "M", "MiB", "MB", "G", "GiB", "Gb",
                         "T", "TiB", "P", "iB", "Gbit", "X", "e3", "/s"])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(number=_number, space=st.sampled_from(["", " ", "  "]), unit=_unit)
def test_any_spelling_is_read_alike_by_bench_and_sim(number: str, space: str, unit: str) -> None:
    text = f"{number}{space}{unit}"
    b, s = bench_size(text), sim_size(text)
    assert isinstance(b, int) == isinstance(s, float), (text, b, s)
    if isinstance(b, int):
        assert s == b
