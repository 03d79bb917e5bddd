"""Helpers of the boundary tests: run the ``skycache`` command in-process through its real entry
(``run_app``, the last line of defence) and snapshot a directory tree to show nothing changed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from skycache.cli.common import run_app
from skycache.cli.main import app


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.err.splitlines()


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a FIFO that blocks an open would block the test run forever)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def skycache(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> Outcome:
    """``skycache ARGS`` in this process; its exit status and output."""
    capsys.readouterr()
    with deadline(60), pytest.raises(SystemExit) as done:
        run_app(app, [os.fspath(a) for a in args])
    captured = capsys.readouterr()
    code = done.value.code
    return Outcome(code if isinstance(code, int) else 1, captured.out, captured.err)


def assert_one_error(result: Outcome, *fragments: str, code: int | None = None) -> str:
    """One ``skycache: error:`` line holding every fragment, a non-zero exit, no traceback."""
    assert result.code != 0, result
    if code is not None:
        assert result.code == code, result
    assert len(result.lines) == 1, result.err
    line = result.lines[0]
    assert line.startswith("skycache: error: "), line
    assert "Traceback" not in result.err + result.out
    for f in fragments:
        assert f in line, (f, line)
    return line


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``roots`` with its mode, size and mtime (symlinks not followed)."""
    seen: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames, ""]:
                p = Path(dirpath, name) if name else Path(dirpath)
                st = p.lstat()
                seen[str(p)] = (st.st_mode, st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return seen


def touched(before: dict[str, tuple[int, int, int]], roots: Sequence[Path]) -> list[str]:
    """Paths added, removed or changed since ``before``."""
    after = snapshot(*roots)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
