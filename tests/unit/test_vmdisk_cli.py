"""CLI input checks of ``skycache disk``/``node``: one-line errors, non-zero exit, before any change."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from skycache.runner import SystemRunner

SKYCACHE = str(Path(sys.executable).with_name("skycache"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["disk", "clone", "BAD ID", "vr/base", "--portal", "127.0.0.1"], "VM id 'BAD ID' is invalid"),
        (["disk", "clone", "vm1", "vr/base", "--portal", "127.0.0.1", "--write-cache", "0"], "zero"),
        (["disk", "clone", "vm1", "vr/base", "--portal", "127.0.0.1", "--read-cache", "-3M"], "not a size"),
        (["disk", "mkimage", "vm1", "0"], "zero"),
        (["disk", "delete", "../etc"], "invalid"),
        (["node", "init", "--cache-vg", "Bad/Name", "--loop", "1G"], "invalid"),
        (["node", "init", "--cache-vg", "n1", "--loop", "12Q"], "unknown unit"),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str) -> None:
    done = SystemRunner().query([SKYCACHE, *args], check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("skycache: error:"), done.stderr


def test_help_lists_every_verb() -> None:
    out = SystemRunner().query([SKYCACHE, "disk", "--help"]).stdout
    for verb in ("clone", "ln", "mkimage", "mkswap", "mv", "delete", "purge", "save", "list"):
        assert verb in out
