"""Docs that run (issue 17): every fenced block of README.md and docs/*.md is classified by its info
string (tests/unit/docblocks.py, docs/testing.md), and the host-side ones run as written.

The commands run in a scratch copy of the repository's ``scenarios/`` and ``results/`` (what they
write stays there), with ``skycache`` and ``.venv/bin/skycache`` meaning this checkout's CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docblocks import COMMAND_LINE as COMMAND
from docblocks import ROOT, Block, all_blocks, console_steps, sh_commands

BLOCKS = all_blocks()
KNOWN_LANGS = {"", "text", "sh", "console", "python", "toml"}
COMMAND_TIMEOUT_S = 30


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def test_docs_have_blocks_of_each_kind() -> None:
    """The extraction finds what the docs hold (an empty list would make every check pass)."""
    assert len(BLOCKS) >= 40
    kinds = {b.lang for b in BLOCKS if b.runnable}
    assert {"sh", "console", "python"} <= kinds, kinds
    assert sum(b.excerpt for b in BLOCKS) >= 20


@pytest.mark.parametrize("block", BLOCKS, ids=_ids(BLOCKS))
def test_block_is_classified(block: Block) -> None:
    """A known language; commands in a block that is not run are marked excerpt."""
    if block.pending:
        pytest.skip(f"{block.where}: {block.pending}")
    assert block.lang in KNOWN_LANGS, f"{block.where}: unknown info string {block.info!r}"
    words = block.info.split()[1:]
    assert set(words) <= {"excerpt"}, f"{block.where}: unknown words in {block.info!r}"
    if block.lang in ("", "text"):
        cmds = [line for line in block.body.splitlines() if COMMAND.match(line)]
        assert not cmds, (
            f"{block.where}: a {block.lang or 'bare'} block holds commands {cmds[:2]}: run them "
            "(```sh / ```console) or mark the block ```sh excerpt / ```console excerpt"
        )


def _scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "repo"
    work.mkdir()
    for name in ("scenarios", "results"):
        shutil.copytree(ROOT / name, work / name, symlinks=True)
    (work / "notebooks").symlink_to(ROOT / "notebooks")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = f'#!/bin/sh\nexec "{sys.executable}" -m skycache.cli.main "$@"\n'
    for where in (bindir / "skycache", work / ".venv" / "bin" / "skycache"):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(shim)
        where.chmod(0o755)
    (work / ".venv" / "bin" / "python").symlink_to(sys.executable)
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / p) for p in ("lib", "bench", "sim")] + [env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env["COLUMNS"] = "200"
    env.pop("SKYCACHE_NOTEBOOK_RUN", None)
    # The docs show a machine without a lab up; a lab the user has up must not change what they print.
    env["SKYCACHE_LAB_SESSION"] = str(tmp_path / "lab-session")
    return work, env


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S, check=False,
    )  # fmt: skip


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr[-2000:]


RUNNABLE = [b for b in BLOCKS if b.runnable and not b.pending]


@pytest.mark.parametrize("block", RUNNABLE, ids=_ids(RUNNABLE))
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    work, env = _scratch(tmp_path)
    if block.lang == "sh":
        for cmd in sh_commands(block.body):
            done = _run(cmd, work, env)
            assert done.returncode == 0, f"{block.where}: `{cmd}` exit {done.returncode}: {_tail(done)}"
    elif block.lang == "python":
        script = tmp_path / "block.py"
        script.write_text(block.body + "\n")
        done = _run(f'"{sys.executable}" "{script}"', work, env)
        assert done.returncode == 0, f"{block.where}: exit {done.returncode}: {_tail(done)}"
    else:
        steps = console_steps(block.body)
        assert steps, f"{block.where}: a console block without a `$ ` command"
        for step in steps:
            done = _run(step.command, work, env)
            want = step.expected_exit
            if want is None:
                assert done.returncode != 0, f"{block.where}: `{step.command}` was shown failing but exit 0"
            else:
                assert done.returncode == want, (
                    f"{block.where}: `{step.command}` exit {done.returncode}, shown {want}: {_tail(done)}"
                )
            printed = {line.rstrip() for line in (done.stdout + "\n" + done.stderr).splitlines()}
            missing = [line for line in step.checked_lines if line not in printed]
            assert not missing, f"{block.where}: `{step.command}` did not print the lines shown: {missing}"


TOML = [b for b in BLOCKS if b.lang == "toml" and not b.pending]


@pytest.mark.parametrize("block", TOML, ids=_ids(TOML))
def test_toml_block_parses(block: Block) -> None:
    tomllib.loads(block.body)
