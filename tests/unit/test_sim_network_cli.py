"""`skycache sim bench --network`: what it prints, and what it refuses (one line, exit 2)."""

from __future__ import annotations

import json
import sys

import pytest

from skycache.cli import main as cli_main


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["skycache", "sim", *args])
    code: object = 0
    try:
        cli_main.main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return (int(code) if isinstance(code, int) else 1), out.out, out.err


@pytest.mark.parametrize("topology", ["star", "racks", "mixed-racks"])
def test_network_bench_prints_its_concurrency_and_speed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], topology: str
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--network", topology, "--flows", "1200", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["flows"] == 1200 and 0 < doc["peak_concurrent_transfers"] <= 1200
    for key in ("wall_s", "cpu_s", "events", "events_per_s", "makespan_s", "peak_rss_MiB", "loadavg_1min"):
        assert key in doc
    code, out, _ = run_cli(monkeypatch, capsys, "bench", "--network", topology, "--flows", "300")
    assert code == 0 and "concurrent transfers" in out and "events" in out and "load average" in out


def test_vm_bench_says_how_many_transfers_it_had_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--vms", "500")
    assert code == 0, err
    assert "concurrent transfers" in out and "not bandwidth sharing" in out
    code, out, _ = run_cli(monkeypatch, capsys, "bench", "--vms", "500", "--json")
    assert code == 0 and json.loads(out)["peak_concurrent_transfers"] >= 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--network", "ring"], "--network = 'ring': not one of star, racks, mixed-racks"),
        (["--network", "star", "--flows", "nan"], "--flows 'nan' is not a whole number"),
        (["--network", "star", "--flows", "0"], "--flows '0' is out of range"),
        (["--network", "star", "--flows", "9" * 50], "is out of range [1, 1000000]"),
        (
            ["--network", "star", "--racks", "3"],
            "--racks is for --network racks, mixed-racks, san-racks or peer-racks",
        ),
        (["--network", "racks", "--flows", "10", "--racks", "11"], "--racks '11' is out of range"),
        (["--network", "star", "--vms", "5"], "--network times the network alone"),
    ],
)
def test_network_bench_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "bench", *args)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
