"""pytest-benchmark: the bench driver's hot paths (result parsing, scenario expansion, statistics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pytest_benchmark.fixture import BenchmarkFixture

from skycache.bench import fioparse, scenario, stats

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "unit" / "data" / "bench"


def test_parse_fio_json(benchmark: BenchmarkFixture) -> None:
    text = (DATA / "randread-2jobs.json").read_text()
    result = benchmark(fioparse.parse, text)
    assert len(result.jobs) == 2


def test_parse_fio_json_with_text_around(benchmark: BenchmarkFixture) -> None:
    text = (DATA / "client-server.json").read_text()
    result = benchmark(fioparse.parse, text)
    assert result.jobs[0].hostname == "127.0.0.1"


def test_expand_testbed_2009(benchmark: BenchmarkFixture) -> None:
    path = ROOT / "scenarios" / "testbed-2009.toml"
    sc = benchmark(scenario.load, path, profiles=("none", "gbe-2009", "10gbe"))
    assert len(sc.conditions) > 100


def test_ratio_ci(benchmark: BenchmarkFixture) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(2000, 100, 5), rng.normal(1000, 50, 5)
    r = benchmark(stats.ratio_ci, a, b)
    assert r.significant
