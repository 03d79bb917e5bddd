"""Shared CLI plumbing (cli/common.py) and how portions add verbs to lib's groups."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skycache.cli import common
from skycache.cli.main import app
from skycache.plan import Action, Plan
from skycache.storage import node
from skycache.storage.node import CacheVG

LIB = Path(__file__).resolve().parents[2] / "lib"


def test_table_aligns_columns_without_trailing_blanks(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_table([["a", "1"], ["long-name", ""]], ["NAME", "N"])
    assert capsys.readouterr().out.splitlines() == ["NAME       N", "a          1", "long-name"]


def test_json_output_is_indented(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_json([{"name": "x"}])
    out = capsys.readouterr().out
    assert json.loads(out) == [{"name": "x"}] and '\n  {\n    "name"' in out


def test_dry_run_prints_the_plan_and_runs_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "x"
    plan = Plan("make x").add(Action.command("step one", ["touch", str(target)]))
    assert common.run_plan(plan, dry_run=True) is False
    assert not target.exists()
    assert capsys.readouterr().out.splitlines() == [
        "plan: make x",
        "  1. step one",
        f"       $ touch {target}",
    ]


def test_applied_plan_runs_every_step(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    plan = (
        Plan("make x")
        .add(Action.command("one", ["touch", str(one)]))
        .add(Action.command("two", ["touch", str(two)]))
    )
    assert common.run_plan(plan, dry_run=False) is True
    assert one.exists() and two.exists() and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["node", "list"],
            "NAME                SIZE  FREE  LVS\n"
            "skycache-cache      1G    512M  2\n"
            "skycache-cache-two  2G    2G    0\n",
        ),
        (
            ["node", "list", "--json"],
            json.dumps(
                [
                    {"name": "skycache-cache", "size": 2**30, "free": 2**29, "lvs": 2},
                    {"name": "skycache-cache-two", "size": 2**31, "free": 2**31, "lvs": 0},
                ],
                indent=2,
            )
            + "\n",
        ),
    ],
)
def test_list_verb_prints_table_or_json(
    monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    vgs = [CacheVG("skycache-cache", 2**30, 2**29, 2), CacheVG("skycache-cache-two", 2**31, 2**31, 0)]
    monkeypatch.setattr(node, "list_cache_vgs", lambda _runner: vgs)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_bench_adds_nat_bench_to_the_net_group() -> None:
    net = typer.main.get_command(app).commands["net"]  # type: ignore[attr-defined]
    cmd = net.commands["nat-bench"]
    assert cmd.callback.__module__ == "skycache.bench.cli_net"
    assert list(net.commands)[-1] == "nat-bench"  # listed after lib's own net verbs, as before


def test_lib_never_references_bench() -> None:
    # docs/architecture.md, "Dependency rules": lib/ works without bench/; bench reaches the CLI
    # through entry points only.
    offenders = [
        str(p.relative_to(LIB))
        for p in sorted(LIB.rglob("*.py"))
        if "skycache.bench" in p.read_text() or "natbench" in p.read_text()
    ]
    assert offenders == []


def _loaded(argv: list[str]) -> list[str]:
    import subprocess
    import sys

    script = (
        "import json, sys; sys.argv = ['skycache', *json.loads(sys.argv[1])]; import skycache.cli.main; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'pydantic', 'matplotlib', 'simpy') or m.startswith(('skycache.bench', 'skycache.sim')))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_a_storage_verb_loads_no_plugin_and_help_loads_them_all() -> None:
    assert _loaded(["repo", "list"]) == []
    assert _loaded(["net", "status"]) != []  # bench adds `net nat-bench`
    assert any(m.startswith("skycache.bench") for m in _loaded(["--help"]))
    assert any(m.startswith("skycache.sim") for m in _loaded(["sim", "--help"]))


def test_a_plan_run_with_steps_announces_each_action_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `skycache teardown --all` in a log: a line per action as it starts, with the time so far
    a, b = tmp_path / "a", tmp_path / "b"
    plan = Plan("t").add(Action.command("make a", ["touch", str(a)]))
    plan.add(Action.command("make b", ["touch", str(b)]))
    assert common.run_plan(plan, dry_run=False, steps="teardown") is True
    out, err = capsys.readouterr()
    assert a.exists() and b.exists() and out == ""
    lines = err.splitlines()
    assert [ln.split(" ... ")[0] for ln in lines] == [
        "teardown: (1 of 2) make a",
        "teardown: (2 of 2) make b",
    ]
    assert all(re.fullmatch(r".* \.\.\. [0-9]+\.[0-9] s", ln) for ln in lines), lines
    common.run_plan(plan, dry_run=False)  # without steps: as quiet as before
    assert capsys.readouterr().err == ""
