"""Running the ``skycache`` CLI in-process on hostile input, and checking that it was refused cleanly.

Shared by the fuzz test (test_fuzz_cli.py) and the examples of issue 18 (test_hostile_examples.py).
A refusal is clean when the command exits non-zero (2 for bad input), writes exactly one line to
stderr, ``skycache: error: ...``, shows no traceback, and changes nothing:

- the "fake system" (a temporary directory holding the state, loop and run directories, the working
  directory and every file handed to the command) is byte-identical before and after;
- no command that changes the system was started: ``SKYCACHE_COMMAND_LOG`` holds no record of kind
  ``run`` or ``stream`` (runner.py logs every finished command with its kind; ``query`` is read-only),
  and :class:`SystemRunner`'s ``run``/``stream``/``replace_process`` are blocked for the duration of
  the call, so even a dry run that forgot to be dry cannot touch this host (or boot a lab);
- the call ends within a deadline (SIGALRM): a read that blocks on a FIFO fails the test instead of
  hanging the suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import typer

from skycache.cli.common import run_app
from skycache.cli.main import PLUGIN_GROUP, app
from skycache.runner import COMMAND_LOG_ENV, SystemRunner

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
BAD_INPUT = 2  # skycache.errors.InvalidInput.exit_code
CHANGE_KINDS = ("run", "stream")  # what runner.py logs for commands that change the system
DEFAULT_TIMEOUT_S = 5.0


class Hung(BaseException):
    """The in-process call outlived its deadline (a BaseException, so no ``except Exception`` in the
    code under test can swallow it)."""


class ChangeAttempted(BaseException):
    """The code under test asked the runner to change the system during a hostile-input call."""


def _ensure_plugins() -> None:
    """cli/main.py registers bench/sim/suite only when sys.argv can need them; pytest's argv may
    name a lib verb (``pytest -k repo``), so add whichever plugin group is missing."""
    have = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for ep in entry_points().select(group=PLUGIN_GROUP):
        if ep.name not in have:
            app.add_typer(ep.load(), name=ep.name)


# -- the fake system ----------------------------------------------------------------------------------


@dataclass
class World:
    """A temporary directory standing in for the managed host's files.

    ``sys`` is what must not change (state, loops, run, cwd, fixtures); the command log lives beside
    it, because read-only queries do append to it.
    """

    base: Path
    sys: Path = field(init=False)

    def __post_init__(self) -> None:
        self.sys = self.base / "sys"
        for sub in ("loops", "run", "cwd", "files"):
            (self.sys / sub).mkdir(parents=True)
        # The state directory does not exist until the first real change creates it (0700): a dry
        # run or a refusal must leave it absent.

    @property
    def state(self) -> Path:
        return self.sys / "state"

    @property
    def files(self) -> Path:
        return self.sys / "files"

    @property
    def command_log(self) -> Path:
        return self.base / "commands.jsonl"

    def env(self) -> dict[str, str]:
        return {
            "SKYCACHE_STATE_DIR": str(self.state),
            "SKYCACHE_LOOP_DIR": str(self.sys / "loops"),
            "SKYCACHE_RUN_DIR": str(self.sys / "run"),
            COMMAND_LOG_ENV: str(self.command_log),
        }

    def snapshot(self) -> dict[str, tuple[Any, ...]]:
        """Every entry under ``sys``: type, mode and content (regular files), target (links).

        lstat only: FIFOs are never opened, symlink loops never followed.
        """
        out: dict[str, tuple[Any, ...]] = {}

        def walk(d: Path) -> None:
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                st = entry.stat(follow_symlinks=False)
                rel = os.path.relpath(entry.path, self.sys)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", os.readlink(entry.path))
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = ("dir", mode)
                    walk(Path(entry.path))
                elif stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                    out[rel] = ("file", mode, st.st_size, digest)
                else:
                    out[rel] = ("special", stat.S_IFMT(st.st_mode), mode)

        walk(self.sys)
        return out

    def changes(self) -> list[dict[str, Any]]:
        """Records of commands of a changing kind in the command log."""
        if not self.command_log.exists():
            return []
        records = [json.loads(line) for line in self.command_log.read_text().splitlines() if line]
        return [r for r in records if r.get("kind") in CHANGE_KINDS]

    # -- hostile fixtures (all inside ``files``) --

    def directory(self, name: str = "a-directory.toml") -> Path:
        p = self.files / name
        p.mkdir()
        return p

    def fifo(self, name: str = "a-fifo.toml") -> Path:
        p = self.files / name
        os.mkfifo(p)
        return p

    def binary(self, name: str = "binary.toml") -> Path:
        p = self.files / name
        p.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
        return p

    def latin1(self, name: str = "latin1.toml") -> Path:
        p = self.files / name
        p.write_bytes('name = "caf\u00e9"\ndescription = "d\u00e9j\u00e0 vu"\n'.encode("latin-1"))
        return p

    def symlink_loop(self, name: str = "loop.toml") -> Path:
        a, b = self.files / name, self.files / f"{name}.other"
        a.symlink_to(b.name)
        b.symlink_to(a.name)
        return a

    def under_a_file(self, name: str = "plain-file") -> Path:
        p = self.files / name
        p.write_text("a plain file\n")
        return p / "below.toml"

    def deep_nesting(self, name: str = "deep.toml", depth: int = 5000) -> Path:
        p = self.files / name
        p.write_text('name = "deep"\nx = ' + "[" * depth + "]" * depth + "\n")
        return p

    def embedded_nul(self, name: str = "nul.toml") -> Path:
        p = self.files / name
        p.write_bytes(b'name = "a\x00b"\n')
        return p

    def file_repo(self, name: str = "r1", images: Sequence[str] = ("base", "img")) -> Path:
        """A registered file repository with small sparse images, so that a verb naming
        ``r1/base`` or ``r1/img`` gets past its lookups and only the hostile value is wrong."""
        d = self.sys / f"repo-{name}"
        d.mkdir()
        (d / ".skycache-repo").write_text("")
        for image in images:
            with (d / f"skycache-{image}.img").open("wb") as f:
                f.truncate(1 << 20)
        self.state.mkdir(mode=0o700, exist_ok=True)
        self.state.chmod(0o700)
        (self.state / "file-repos.json").write_text(json.dumps({name: str(d)}) + "\n")
        return d

    def text(self, name: str, content: str) -> Path:
        p = self.files / name
        p.write_text(content)
        return p


@contextlib.contextmanager
def world(*, repo: bool = False) -> Iterator[World]:
    """A fresh fake system; with ``repo``, holding the file repository ``r1`` (images base, img)."""
    with tempfile.TemporaryDirectory(prefix="skycache-hostile-") as d:
        w = World(Path(d))
        if repo:
            w.file_repo()
        try:
            yield w
        finally:
            _make_removable(w.sys)


def _make_removable(root: Path) -> None:
    """Undo chmods a test made (read-only directories) so the temporary directory can go."""
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            if not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.chmod(0o700)


# -- one in-process call --------------------------------------------------------------------------------


@dataclass
class Outcome:
    args: list[str]
    code: int | None
    stdout: str
    stderr: str
    changed_files: list[str]
    change_commands: list[str]
    hung: bool = False
    escaped: str | None = None  # an exception that got past run_app (a user would see a traceback)

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def problems(self, *, exit_code: int | None = BAD_INPUT, needle: str | None = None) -> list[str]:
        """What is wrong with this outcome as a clean refusal; empty when it is one.

        ``exit_code`` None accepts any non-zero code except an internal error's; ``needle`` is text
        the error line must hold (the bad value).
        """
        bad: list[str] = []
        if self.hung:
            bad.append("hung (deadline passed)")
        if self.escaped is not None:
            bad.append(f"exception escaped the CLI boundary: {self.escaped}")
        if "Traceback" in self.stderr or "Traceback" in self.stdout:
            bad.append("a traceback was printed")
        if self.code == 0:
            bad.append("accepted (exit 0)")
        elif exit_code is not None and self.code != exit_code:
            bad.append(f"exit {self.code}, expected {exit_code}")
        elif exit_code is None and self.code in (None, 70):
            bad.append(f"exit {self.code} (an internal error, not a refusal)")
        if len(self.lines) != 1 or not self.lines[0].startswith("skycache: error: "):
            bad.append(f"stderr is not one 'skycache: error:' line: {self.stderr[-600:]!r}")
        elif needle is not None and needle not in self.lines[0]:
            bad.append(f"the error line does not name {needle!r}: {self.lines[0]!r}")
        if self.changed_files:
            bad.append(f"files changed: {self.changed_files[:10]}")
        if self.change_commands:
            bad.append(f"commands that change the system: {self.change_commands[:5]}")
        return bad

    def explain(self, bad: list[str]) -> str:
        return f"skycache {self.args!r}:\n  " + "\n  ".join(bad) + f"\n  stdout: {self.stdout[-400:]!r}"


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise Hung(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _no_changes(attempts: list[str]) -> Iterator[None]:
    """Block SystemRunner's changing entry points; record what was asked."""

    def blocked(name: str) -> Callable[..., Any]:
        def guard(self: SystemRunner, argv: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}: {' '.join(str(a) for a in argv)}")
            raise ChangeAttempted(attempts[-1])

        return guard

    saved = {n: getattr(SystemRunner, n) for n in ("run", "stream", "replace_process")}
    for n in saved:
        setattr(SystemRunner, n, blocked(n))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(SystemRunner, n, f)


def invoke(w: World, args: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Outcome:
    """Run ``skycache ARGS`` in this process against the world ``w``; never raises for the CLI's sake."""
    _ensure_plugins()
    before = w.snapshot()
    out, err = io.StringIO(), io.StringIO()
    # What a real run logs at WARNING goes to stderr (cli/main.py's basicConfig); under pytest the root
    # logger already has handlers, so attach one that writes where this call's stderr goes.
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    attempts: list[str] = []
    code: int | None = None
    hung = False
    escaped: str | None = None
    cwd = Path.cwd()
    root.addHandler(handler)
    try:
        with (
            _environment(w.env()),
            _no_changes(attempts),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            contextlib.ExitStack() as stack,
        ):
            os.chdir(w.sys / "cwd")
            stack.callback(os.chdir, cwd)
            stdin = io.StringIO("")
            stack.callback(setattr, sys, "stdin", sys.stdin)
            sys.stdin = stdin
            try:
                with _deadline(timeout_s):
                    run_app(app, list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Hung:
                hung = True
            except ChangeAttempted:
                pass  # recorded in attempts
            except BaseException as exc:  # anything that gets past run_app is what we look for
                escaped = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                err.write("Traceback (escaped run_app)\n" + traceback.format_exc())
    finally:
        root.removeHandler(handler)
    after = w.snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    commands = attempts + [" ".join(map(str, r.get("argv", []))) for r in w.changes()]
    return Outcome(list(args), code, out.getvalue(), err.getvalue(), changed, commands, hung, escaped)


def refused(
    args: Sequence[str],
    *,
    exit_code: int | None = BAD_INPUT,
    needle: str | None = None,
    repo: bool = False,
    prepare: Callable[[World], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Assert that ``skycache ARGS`` in a fresh world is a clean refusal."""
    with world(repo=repo) as w:
        if prepare is not None:
            prepare(w)
        result = invoke(w, args, timeout_s=timeout_s)
    bad = result.problems(exit_code=exit_code, needle=needle)
    assert not bad, result.explain(bad)


# -- TOML text of mutated scenario data ---------------------------------------------------------------


def toml_value(v: Any) -> str:
    """An inline TOML value (tomllib reads back what it wrote, NaN and infinities included)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {v!r}")


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_document(data: dict[str, Any]) -> str:
    """One ``key = value`` line per top-level key, tables inline."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items())
