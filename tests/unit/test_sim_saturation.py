"""The saturation rule read from a sweep table: first point whose p99 exceeds twice the first
point's, or whose busiest mean utilisation exceeds 90 %; replications averaged; the CLI's lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from skycache.errors import InvalidInput
from skycache.sim.cli import app
from skycache.sim.saturation import find_saturation

RATES = ["1 /s", "2 /s", "4 /s", "8 /s"]


def rows(variant: str, p99: list[float], disk: list[float], seed: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "param:workload.rate": rate,
            "variant": variant,
            "seed": seed,
            "start_latency_p99_s": p,
            "repo_link_util_mean": 0.1,
            "repo_disk_util_mean": d,
            "rack_uplink_util_mean": None,
        }
        for rate, p, d in zip(RATES, p99, disk, strict=True)
    ]


def table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            # latency doubles between 2 /s and 4 /s (2.1 > 2 x 1.0), utilisation stays low
            *rows("latency", [1.0, 1.5, 2.1, 9.0], [0.1, 0.2, 0.4, 0.8]),
            # the disk passes 90 % at 8 /s before the latency doubles
            *rows("disk", [1.0, 1.1, 1.2, 1.9], [0.2, 0.4, 0.8, 0.95]),
            *rows("never", [1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.1, 0.1]),
            # two seeds: 2 /s averages 1.9 and 2.3 to 2.1 > 2 x 1.0
            *rows("seeds", [1.0, 1.9, 3.0, 4.0], [0.1] * 4, seed=1),
            *rows("seeds", [1.0, 2.3, 3.0, 4.0], [0.1] * 4, seed=2),
        ]
    )


def test_first_point_past_either_limit() -> None:
    found = {s.variant: s for s in find_saturation(table())}
    assert (found["latency"].last_below, found["latency"].saturated_at) == ("2 /s", "4 /s")
    assert found["latency"].reason == "p99 2.1 s > 2 x 1 s"
    assert (found["disk"].last_below, found["disk"].saturated_at) == ("4 /s", "8 /s")
    assert found["disk"].reason == "repo_disk 95.0% > 90%"
    assert (found["never"].last_below, found["never"].saturated_at) == ("8 /s", None)
    assert (found["seeds"].last_below, found["seeds"].saturated_at) == ("1 /s", "2 /s")
    assert found["seeds"].unloaded_p99_s == pytest.approx(1.0)


def test_limits_are_parameters() -> None:
    found = {s.variant: s for s in find_saturation(table(), latency_factor=10, util_limit=0.5)}
    assert found["latency"].saturated_at == "8 /s"  # 0.8 > 0.5
    assert found["disk"].saturated_at == "4 /s"


def test_the_swept_key_must_be_named_when_several(tmp_path: Path) -> None:
    t = table().assign(**{"param:cluster.nodes": 4})
    with pytest.raises(InvalidInput, match=r"varies workload\.rate, cluster\.nodes: name one with --param"):
        find_saturation(t)
    with pytest.raises(InvalidInput, match=r"does not vary images\.count"):
        find_saturation(t, "images.count")
    assert find_saturation(t, "workload.rate")[0].saturated_at == "4 /s"


def test_cli_prints_one_line_per_variant(tmp_path: Path) -> None:
    table().to_parquet(tmp_path / "sweep.parquet", index=False)
    result = CliRunner().invoke(app, ["saturation", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "latency: unloaded p99 1 s; saturates at workload.rate = 4 /s (p99 2.1 s > 2 x 1 s); last below: 2 /s"
    )
    assert (
        lines[2] == "never: unloaded p99 1 s; not saturated up to workload.rate = 8 /s"
        " (within the limits at every point)"
    )
    missing = CliRunner().invoke(app, ["saturation", str(tmp_path / "none")])
    assert isinstance(missing.exception, InvalidInput)
