"""Plumbing shared by the lib CLI modules: option aliases, plan runs and list output.

Kept in one place so every verb prints tables, JSON and dry-run plans the same way.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer

from skycache import agent, files, state
from skycache.cli import helpfmt, hosts
from skycache.errors import SkycacheError
from skycache.plan import Action, Plan
from skycache.runner import Runner, SystemRunner

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]


def cli_runner(host: str | None = None) -> SystemRunner:
    """The runner of every storage, node and net verb: on the host ``--host`` names (over SSH), else
    this one; with ``host`` (``attach --chap-from``), on that host with the same ``--ssh-config``.
    The lab verbs build their own local runners and never call this (cli/hosts.py)."""
    return SystemRunner(hosts.current().target() if host is None else hosts.other(host))


class Listed(Protocol):
    """What list verbs print: records that give their --json form."""

    def as_dict(self) -> dict[str, Any]: ...


ItemT = TypeVar("ItemT", bound=Listed)


def progress(text: str) -> None:
    """Progress of a long step (a flush, a wait for a device), on stderr: stdout stays the result."""
    typer.echo(text, err=True)


def run_plan(plan: Plan, dry_run: bool, runner: Runner | None = None, *, steps: str | None = None) -> bool:
    """Print the plan (dry run) or apply it; True when it was applied.

    The dry run prints the plan's own data: the same actions and commands the real run executes.
    With ``steps`` (a word such as "teardown"), each action is announced on stderr as it starts, with
    its count and the time since the first: a long plan in a log is never silent for minutes.
    """
    runner = runner if runner is not None else cli_runner()
    if dry_run:
        lines = plan.describe()
        if not runner.target.local:
            # The `$` lines are the commands there: say where, right under the title.
            lines.insert(1, f"  on host {runner.target.name} (over ssh)")
        typer.echo("\n".join(lines))
        return False
    started = time.monotonic()

    def announce(i: int, action: Action) -> None:
        elapsed = time.monotonic() - started
        progress(f"{steps}: ({i} of {len(plan.actions)}) {action.description} ... {elapsed:.1f} s")

    plan.apply(runner, progress, announce if steps else None)
    return True


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Left-aligned columns as wide as their widest cell; no trailing blanks (diff-friendly)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def print_json(data: Any) -> None:
    """The --json output of every list-like verb."""
    typer.echo(json.dumps(data, indent=2))


def print_list(
    items: Sequence[ItemT], as_json: bool, header: list[str], row: Callable[[ItemT], list[str]]
) -> None:
    """A list verb's output: the items' as_dict() with --json, else a table of one row per item."""
    if as_json:
        print_json([i.as_dict() for i in items])
        return
    print_table([row(i) for i in items], header)


# Exit codes (docs/errors.md): 0 done; 1 an operation failed; 2 bad input (a value, a file, a usage
# error); 3 the bench regression gate; 70 a bug in skycache (EX_SOFTWARE of sysexits.h); 130 Ctrl-C.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
REPORT_HINT = "please report it with that file (docs/errors.md says how)"


def _one_line(text: str) -> str:
    """Messages of click, OSError or a bug collapsed to one line (a newline would start a second)."""
    return " ".join(str(text).split())


def _verbose(args: Sequence[str]) -> bool:
    """Whether the root options (before the verb) ask for -v: the traceback of a bug is printed then."""
    for a in args:
        if not a.startswith("-"):
            return False
        if a == "--verbose" or re.fullmatch(r"-v+", a):
            return True
    return False


def _is_users_path(name: str, args: Sequence[str]) -> bool:
    """Whether ``name`` (an OSError's file) is a path of the command line, or under one."""
    target = Path(name).absolute()
    for a in args:
        value = a.partition("=")[2] if a.startswith("--") else a
        if not value or value.startswith("-") or "\0" in value:
            continue
        if target.is_relative_to(Path(value).absolute()):
            return True
    return False


def _os_error(exc: OSError, args: Sequence[str]) -> tuple[str, int]:
    """The one line of an OSError nothing below the CLI turned into a SkycacheError, and its exit
    code: 2 when it is about a path the user gave (or a path under it), else 1."""
    why = exc.strerror or _one_line(str(exc)) or type(exc).__name__
    names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if isinstance(n, str | bytes)]
    if not names:
        return why, EXIT_FAILED
    line = f"{files.shown(names[0])}: {why}" + (f" (and {files.shown(names[1])})" if len(names) > 1 else "")
    return line, EXIT_BAD_INPUT if any(_is_users_path(n, args) for n in names) else EXIT_FAILED


def _crash_dirs() -> list[Path]:
    """Where the traceback of a bug goes: the state directory of this host, then the temp directory."""
    return [Path(state.state_dir()) / "crashes", Path(tempfile.gettempdir())]


def write_traceback(exc: BaseException, args: Sequence[str]) -> Path | None:
    """Write the traceback of a bug (with the command line and versions) to a new private file."""
    try:
        sky = version("skycache")
    except PackageNotFoundError:
        sky = "unknown"
    text = (
        f"skycache {sky}, Python {sys.version.split()[0]}, {platform.platform()}\n"
        f"command: skycache {shlex.join(args)}\n"
        f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for directory in _crash_dirs():
        try:
            if directory.name == "crashes":
                agent.private_dirs(directory.parent, directory)  # 0700; refused if others may write
            fd, name = tempfile.mkstemp(prefix=f"skycache-crash-{stamp}-", suffix=".txt", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return Path(name)
        except (OSError, agent.AgentError):
            continue  # a read-only or foreign state directory: the next place
    return None


def _report_bug(exc: BaseException, args: Sequence[str]) -> NoReturn:
    where = write_traceback(exc, args)
    what = _one_line(f"{type(exc).__name__}: {exc}")
    if _verbose(args) or where is None:
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    kept = f"traceback in {where}" if where is not None else "the traceback above could not be saved"
    typer.echo(f"skycache: error: this is a bug in skycache ({what}); {kept}; {REPORT_HINT}", err=True)
    sys.exit(EXIT_BUG)


def _named(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is of click's class ``name``: typer >= 0.29 bundles its own copy of click
    (``typer._click``), older ones raise click's, so the class is matched by name."""
    return any(c.__name__ == name for c in type(exc).__mro__)


def _cli_error(exc: Exception) -> NoReturn:
    """A usage error (bad option value, unknown option or verb, missing argument) is one line naming
    the verb's --help instead of click's usage block; other click errors are their one line."""
    if _named(exc, "NoArgsIsHelpError"):  # `skycache bench`: the help is the answer
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        sys.exit(EXIT_BAD_INPUT)
    fmt = getattr(exc, "format_message", None)
    message = _one_line(fmt() if callable(fmt) else str(exc))
    if _named(exc, "UsageError"):
        ctx = getattr(exc, "ctx", None)
        where = getattr(ctx, "command_path", None) or "skycache"
        typer.echo(f"skycache: error: {message} (see {where} --help)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    typer.echo(f"skycache: error: {message}", err=True)
    # FileError: a typer.FileText argument the user named cannot be opened
    sys.exit(EXIT_BAD_INPUT if _named(exc, "FileError") else int(getattr(exc, "exit_code", EXIT_FAILED)))


class CliCommand(Protocol):
    """What run_app needs of the click command typer builds (typer vendors its own click)."""

    def main(self, args: list[str], prog_name: str, *, standalone_mode: bool) -> Any: ...


def run_app(
    app: typer.Typer, args: Sequence[str] | None = None, *, command: CliCommand | None = None
) -> NoReturn:
    """Run ``app`` as the ``skycache`` command: every failure is one line on stderr, never a traceback.

    The last line of defence: a SkycacheError is its own message and exit code; a usage error is one
    line (exit 2); an OSError nothing below caught names its path (exit 2 when the path is the
    user's, 1 otherwise); anything else is a bug: its traceback is written to a file (printed too
    with -v) and the exit code is 70, distinct from bad input and from a failed operation.
    """
    argv = list(sys.argv[1:] if args is None else args)
    hosts.reset(argv)  # a new command line starts on this host (an earlier in-process one may not have)
    cli: CliCommand = command if command is not None else typer.main.get_command(app)
    helpfmt.readable(cli)  # metavars and help texts as docs/errors.md quotes them (once per tree)
    interrupted = False
    previous = None

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        # typer turns KeyboardInterrupt into a silent exit 130; the flag lets us say why we stopped
        nonlocal interrupted
        interrupted = True
        signal.default_int_handler(signum, frame)

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        code = cli.main(args=argv, prog_name="skycache", standalone_mode=False)
    except SkycacheError as exc:
        typer.echo(f"skycache: error: {_one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("skycache: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        typer.echo("skycache: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:
        line, status = _os_error(exc, argv)
        typer.echo(f"skycache: error: {line}", err=True)
        sys.exit(status)
    except Exception as exc:
        # click's errors by name: typer >= 0.29 raises those of its own copy of click (see _named)
        if isinstance(exc, typer.TyperException) or _named(exc, "ClickException"):
            _cli_error(exc)
        _report_bug(exc, argv)  # the last line of defence: a bug, reported as one
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        typer.echo("skycache: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
