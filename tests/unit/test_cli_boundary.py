"""The last line of defence (issue 18, items 2 and 4): ``run_app`` turns usage errors, stray
OSErrors and bugs into one line with distinct exit codes; a bug's traceback goes to a private file
(printed too with -v); Ctrl-C, also during a blocking read, ends with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import typer
from boundary import Outcome, assert_one_error, deadline, skycache

from skycache.bench import scenario as bench_scenario
from skycache.cli import common
from skycache.errors import InvalidInput

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.mark.parametrize(
    ("args", "fragment", "verb"),
    [
        (["bench", "run", "--bogus", "x"], "No such option: --bogus", "skycache bench run"),
        (
            ["net", "nat-bench", "--repetitions", "abc"],
            "Invalid value for '--repetitions'",
            "skycache net nat-bench",
        ),
        (["sim", "run"], "Missing argument 'SCENARIO'", "skycache sim run"),
        (["nosuch"], "No such command 'nosuch'", "skycache"),
        (["repo", "list", "--json", "--nope"], "No such option: --nope", "skycache repo list"),
        (["--nope"], "No such option: --nope", "skycache"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str, verb: str
) -> None:
    line = assert_one_error(skycache(capsys, *args), fragment, code=2)
    assert line.endswith(f"(see {verb} --help)")


def test_a_group_without_a_verb_still_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    result = skycache(capsys, "bench")
    assert result.code == 2 and "Usage: skycache bench" in result.out + result.err


def test_a_skycache_error_with_a_newline_stays_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad(path: object, **kwargs: object) -> None:
        raise InvalidInput("first\nsecond")

    monkeypatch.setattr(bench_scenario, "load", bad)
    assert (
        assert_one_error(skycache(capsys, "suite", "show", "x.toml"), code=2)
        == "skycache: error: first second"
    )


# -- stray OSErrors --------------------------------------------------------------------------------


def _oserror_app(path_of: str) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def touch(target: Path) -> None:
        """Write into TARGET (or into a path of skycache's own, for path_of == 'internal')."""
        where = target / "sub" / "f" if path_of == "user" else Path("/proc/skycache-internal/f")
        where.write_text("x")

    @app.command()
    def other() -> None:
        pass

    return app


def _run(app: typer.Typer, capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    capsys.readouterr()
    with deadline(30), pytest.raises(SystemExit) as done:
        common.run_app(app, list(args))
    captured = capsys.readouterr()
    assert isinstance(done.value.code, int)
    return Outcome(done.value.code, captured.out, captured.err)


def test_an_oserror_on_the_users_path_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    result = _run(_oserror_app("user"), capsys, "touch", str(tmp_path / "file"))
    assert_one_error(result, f"{tmp_path / 'file' / 'sub' / 'f'}: Not a directory", code=2)


def test_an_oserror_on_another_path_is_a_failed_operation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = _run(_oserror_app("internal"), capsys, "touch", str(tmp_path))
    assert_one_error(result, "/proc/skycache-internal/f: No such file or directory", code=1)


# -- bugs ------------------------------------------------------------------------------------------


def _a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(path: object, **kwargs: object) -> None:
        return {}["no such key"]  # type: ignore[no-any-return]

    monkeypatch.setattr(bench_scenario, "load", bug)


def _crash_file(line: str) -> Path:
    head = line.split("traceback in ", 1)[1]
    return Path(head.split("; ", 1)[0])


def test_a_bug_is_one_line_with_its_traceback_in_a_private_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, private_state: Path
) -> None:
    _a_bug(monkeypatch)
    result = skycache(capsys, "suite", "show", "x.toml")
    line = assert_one_error(
        result, "this is a bug in skycache (KeyError: 'no such key')", code=common.EXIT_BUG
    )
    assert common.EXIT_BUG == 70 and "please report it" in line
    crash = _crash_file(line)
    assert crash.parent == Path(os.environ["SKYCACHE_STATE_DIR"]) / "crashes"
    assert crash.stat().st_mode & 0o777 == 0o600 and crash.parent.stat().st_mode & 0o777 == 0o700
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'no such key'" in text
    assert "command: skycache suite show x.toml" in text


def test_with_v_the_traceback_is_printed_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _a_bug(monkeypatch)
    result = skycache(capsys, "-v", "suite", "show", "x.toml")
    assert result.code == 70
    assert "Traceback (most recent call last)" in result.err and "KeyError: 'no such key'" in result.err
    last = result.lines[-1]
    assert last.startswith("skycache: error: this is a bug in skycache") and _crash_file(last).is_file()


def test_without_v_an_option_value_named_v_does_not_print_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _a_bug(monkeypatch)
    result = skycache(capsys, "suite", "show", "--", "-v")  # a path "-v" after the verb: not the option
    assert result.code == 70 and "Traceback" not in result.err and len(result.lines) == 1


def test_a_bug_falls_back_to_the_temp_directory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _a_bug(monkeypatch)
    unusable = tmp_path / "state-is-a-file"
    unusable.write_text("")
    monkeypatch.setenv("SKYCACHE_STATE_DIR", str(unusable))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    line = assert_one_error(skycache(capsys, "suite", "show", "x.toml"), code=70)
    crash = _crash_file(line)
    assert crash.parent == tmp_path / "tmp" and "KeyError" in crash.read_text()
    assert unusable.read_text() == ""


# -- Ctrl-C ----------------------------------------------------------------------------------------

BLOCKING_READ = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import typer
    from skycache.cli.common import run_app

    app = typer.Typer()

    @app.command()
    def read(fifo: Path) -> None:
        print("reading", flush=True)
        fifo.read_text()  # a FIFO with no writer: the open blocks until a signal

    @app.command()
    def other() -> None:
        pass

    run_app(app, ["read", sys.argv[1]])
    """
)


def test_ctrl_c_on_a_blocking_read_ends_with_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with subprocess.Popen(
        [sys.executable, "-c", BLOCKING_READ, str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "reading\n"
        time.sleep(0.5)  # into the open(2) of the FIFO
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == "skycache: interrupted\n"


def test_the_real_reader_never_blocks_on_a_fifo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert_one_error(skycache(capsys, "suite", "show", fifo), "is a FIFO", code=2)
