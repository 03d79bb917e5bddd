"""What a dry run prints is what runs: every multi-step verb, first with ``--dry-run``, then for real
with the runner's command log on; the mutating commands of both are the same, in order.

The dry run's commands are the ``$`` lines of the printed plan; the real run's are the log's ``run``
records (first attempts: a retried command is one command of the plan). Both are masked the same
way, so CHAP secrets, generated afresh by each planning, compare equal as ``********``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage import PORTAL, sk, sk_inproc, teardown_all

from skycache.runner import Runner, render

STDIN_NOTE = " < (stdin)"


def planned(output: str) -> list[str]:
    return [
        line.split("$ ", 1)[1].removesuffix(STDIN_NOTE)
        for line in output.splitlines()
        if line.startswith("       $ ")
    ]


def ran(log: Path) -> list[str]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        rec = json.loads(line)
        if rec.get("kind") == "run" and rec.get("attempt") == 1:
            out.append(render(rec["argv"]))
    return out


@pytest.fixture
def env(runner: Runner, scratch_dir: Path, tmp_path: Path) -> Iterator[Path]:
    old = {k: os.environ.get(k) for k in ("SKYCACHE_LOOP_DIR", "SKYCACHE_STATE_DIR", "SKYCACHE_COMMAND_LOG")}
    os.environ["SKYCACHE_LOOP_DIR"] = str(scratch_dir / "loops")  # made by repo init (0700)
    os.environ["SKYCACHE_STATE_DIR"] = str(tmp_path / "state")
    try:
        yield tmp_path
    finally:
        os.environ.pop("SKYCACHE_COMMAND_LOG", None)
        teardown_all(runner)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Verbs:
    """Runs one verb as a dry run, then for real, and keeps both command lists."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.n = 0
        self.checked: list[str] = []

    def same(self, *args: str) -> list[str]:
        code, dry, err = sk_inproc(*args, "--dry-run")
        assert code == 0, (args, err)
        self.n += 1
        log = self.tmp / f"commands-{self.n}.jsonl"
        os.environ["SKYCACHE_COMMAND_LOG"] = str(log)
        try:
            code, out, err = sk_inproc(*args)
        finally:
            os.environ.pop("SKYCACHE_COMMAND_LOG", None)
        assert code == 0, (args, out, err)
        expected, real = planned(dry), ran(log)
        print(f"skycache {' '.join(args)}: {len(real)} commands")
        assert expected, (args, dry)
        assert real == expected, (args, dry, real)
        self.checked.append(" ".join(args[:2]))
        return real


def test_dry_run_commands_are_the_commands_that_run(runner: Runner, env: Path) -> None:
    v = Verbs(env)
    # Repository side: the default loop directory does not exist yet; repo init makes it (0700).
    first = v.same("repo", "init", "dr", "--backend", "lvm", "--loop", "2G")
    assert first[0].startswith("mkdir -p -m 0700 ")
    v.same("image", "create", "dr/base", "--size", "64M")
    runner.run(
        ["dd", "if=/dev/urandom", "of=/dev/dr/base", "bs=1M", "count=8", "oflag=direct", "status=none"]
    )
    for cow in ("thin", "snapshot", "copy"):
        v.same("image", "clone", "dr/base", f"dr/c-{cow}", "--cow", cow)
    v.same("image", "create", "dr/plain", "--size", "16M")
    v.same("export", "add", "dr/plain", "--listen", PORTAL)
    v.same("attach", "dr/plain", "--portal", PORTAL)
    v.same("detach", "dr/plain")
    # Node side: every COW engine with and without caches, both write engines.
    v.same("node", "init", "--cache-vg", "drnode", "--loop", "512M")
    variants = [
        ("ds", "snapshot", []),
        ("dt", "thin", []),
        ("dsc", "snapshot", ["--read-cache", "16M", "--write-cache", "16M", "--write-engine", "writecache"]),
        ("dtc", "thin", ["--read-cache", "16M", "--write-cache", "16M", "--write-engine", "dmcache"]),
    ]
    for vm, cow, caches in variants:
        v.same("disk", "clone", vm, "dr/base", "--portal", PORTAL, "--cow", cow, *caches)
        sk(runner, "disk", "list")
    runner.run(["dd", "if=/dev/urandom", "of=/dev/mapper/skycache-vm-dsc", "bs=1M", "count=2", "oflag=direct",
                "status=none"])  # fmt: skip
    v.same("disk", "save", "dsc", "dr/dsc-saved")  # live: suspend, flush, join, copy, resume
    v.same("disk", "delete", "dsc", "--sync")
    v.same("disk", "delete", "dtc", "--sync")
    v.same("disk", "delete", "ds")
    v.same("disk", "save", "dtc", "dr/dtc-saved")  # synced: from the repository alone
    v.same("teardown", "--all")
    assert sk_inproc("inventory", "--json")[1].strip() == "[]"
    print("checked:", ", ".join(sorted(set(v.checked))))
