"""docs/storage.md's first commands as a newcomer types them in a fresh lab: no SKYCACHE_LOOP_DIR,
so the loop file goes to the default directory (/var/lib/skycache, made 0700 on first use)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from _storage import sk

from skycache.runner import Runner

DEFAULT_LOOP_DIR = Path("/var/lib/skycache")


def test_repo_init_with_the_default_loop_directory_then_list_and_delete(runner: Runner) -> None:
    saved = os.environ.pop("SKYCACHE_LOOP_DIR", None)
    try:
        # 64M rather than the docs' 20G: the same code path, and the sparse file stays in RAM here.
        sk(runner, "repo", "init", "docs1", "--backend", "lvm", "--loop", "64M")
        assert stat.S_IMODE(DEFAULT_LOOP_DIR.stat().st_mode) == 0o700
        listing = sk(runner, "repo", "list").stdout.split("\n")
        assert any(line.split()[:2] == ["docs1", "lvm"] for line in listing), listing
        sk(runner, "repo", "delete", "docs1")
        assert "docs1" not in sk(runner, "repo", "list").stdout
    finally:
        if saved is not None:
            os.environ["SKYCACHE_LOOP_DIR"] = saved
