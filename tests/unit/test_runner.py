"""The command runner: argv-only execution, timeouts, errors, secret masking, remote argv.

These run real (harmless) programs on the host: the runner's job is starting processes, so a fake
would test nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from skycache.runner import (
    MASK,
    CommandError,
    LocalTarget,
    MissingProgram,
    Retry,
    Secret,
    SshTarget,
    SystemRunner,
    render,
)


def test_runs_argv_and_captures_output() -> None:
    out = SystemRunner().run(["printf", "%s|%s", "a b", "$HOME"])
    # No shell: the space stays inside one argument and $HOME is not expanded.
    assert out.stdout == "a b|$HOME"
    assert out.returncode == 0


def test_refuses_a_shell_string() -> None:
    with pytest.raises(TypeError):
        SystemRunner().run("echo hi")  # type: ignore[arg-type]


def test_lc_all_is_c() -> None:
    out = SystemRunner().run(["sh", "-c", 'printf %s "$LC_ALL"'])
    assert out.stdout == "C"


def test_failure_raises_command_error_with_everything() -> None:
    with pytest.raises(CommandError) as info:
        SystemRunner().run(["sh", "-c", "echo out; echo 'bad thing' >&2; exit 3"])
    err = info.value
    assert err.returncode == 3
    assert err.argv == ["sh", "-c", "echo out; echo 'bad thing' >&2; exit 3"]
    assert err.stdout == "out\n"
    assert err.stderr == "bad thing\n"
    text = str(err)
    assert "exit code 3" in text and "bad thing" in text and "\n" not in text


def test_check_false_returns_the_code() -> None:
    assert SystemRunner().run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_timeout_kills_the_whole_process_group() -> None:
    started = time.monotonic()
    with pytest.raises(CommandError) as info:
        # The child shell starts a grandchild sleep; both must die at the timeout.
        SystemRunner().run(["sh", "-c", "sleep 30 & wait"], timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert info.value.timeout == 0.5
    assert "timed out after 0.5s" in str(info.value)


def test_missing_program_names_the_debian_package() -> None:
    with pytest.raises(MissingProgram) as info:
        SystemRunner(LocalTarget()).run(["/nonexistent/dir/iscsiadm", "-m", "session"])
    assert "open-iscsi" in str(info.value)


def test_secret_reaches_the_process_but_not_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret("s3cr3t-chap-value")
    caplog.set_level(logging.DEBUG, logger="skycache.runner")
    out = SystemRunner().run(["printf", "%s", secret])
    assert out.stdout == MASK  # even echoed back, the value is masked
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in " ".join(out.argv)
    with pytest.raises(CommandError) as info:
        SystemRunner().run(["sh", "-c", 'echo "pw=$1" >&2; exit 1', "sh", secret])
    assert "s3cr3t" not in str(info.value)
    assert "s3cr3t" not in info.value.stderr
    assert "s3cr3t" not in repr(secret)


def test_secret_in_environment_is_masked() -> None:
    with pytest.raises(CommandError) as info:
        SystemRunner().run(["sh", "-c", 'echo "$PW" >&2; exit 1'], env={"PW": Secret("hunter2-xyz")})
    assert "hunter2" not in str(info.value)
    assert MASK in info.value.stderr


def test_retry_only_on_transient_codes() -> None:
    sleeps: list[float] = []
    runner = SystemRunner(sleep=sleeps.append)
    with pytest.raises(CommandError):
        runner.run(["sh", "-c", "exit 6"], retry=Retry(frozenset({6}), attempts=3, first_delay_s=0.1))
    assert sleeps == [0.1, 0.2]  # three attempts, exponential backoff
    sleeps.clear()
    with pytest.raises(CommandError):
        runner.run(["sh", "-c", "exit 7"], retry=Retry(frozenset({6}), attempts=3))
    assert sleeps == []  # not transient: raised at once


def test_retry_succeeds_when_the_failure_goes_away(tmp_path: object) -> None:
    marker = f"/tmp/skycache-test-retry-{time.monotonic_ns()}"
    script = f"if [ -e {marker} ]; then rm {marker}; exit 0; else touch {marker}; exit 6; fi"
    out = SystemRunner(sleep=lambda _s: None).run(["sh", "-c", script], retry=Retry(frozenset({6})))
    assert out.returncode == 0


def test_stream_passes_lines_and_exit_code() -> None:
    lines: list[str] = []
    code = SystemRunner().stream(
        [sys.executable, "-c", "import sys; print('a'); print('b', file=sys.stderr); sys.exit(3)"],
        on_line=lines.append,
    )
    assert code == 3
    assert sorted(lines) == ["a", "b"]


def test_stream_on_start_gets_a_group_leader_pid() -> None:
    pids: list[int] = []
    lines: list[str] = []
    code = SystemRunner().stream(
        [sys.executable, "-c", "import os; print(os.getpid(), os.getpgid(0))"],
        on_line=lines.append,
        on_start=pids.append,
    )
    assert code == 0
    assert lines == [f"{pids[0]} {pids[0]}"]  # its own process group: killpg reaches its children


def test_stream_timeout() -> None:
    with pytest.raises(CommandError):
        SystemRunner().stream(["sleep", "30"], on_line=lambda _l: None, timeout_s=0.5)


def test_remote_target_argv() -> None:
    target = SshTarget("node1.example", user="root", port=2222, identity_file="/k")
    argv, env = target.wrap(["lvs", "--reportformat", "json", "vg name"], {"X": "1"})
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[5:11] == ["-p", "2222", "-i", "/k", "root@node1.example", "--"]
    # One remote command string whose words are exactly our argv, quoted.
    assert argv[11] == "env LC_ALL=C X=1 lvs --reportformat json 'vg name'"
    assert env["LC_ALL"] == "C"


@dataclass(frozen=True)
class _UnreachableTarget:
    """A remote target whose transport is ``false``: every command fails, as on a host that is down."""

    name: str = "h"
    local: bool = False

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        return ["false", *argv], dict(os.environ)

    def has_program(self, program: str) -> bool | None:
        return None


def test_remote_runner_names_the_target_and_masks(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="skycache.runner"), pytest.raises(CommandError) as err:
        SystemRunner(_UnreachableTarget()).run(["iscsiadm", Secret("pw-123")])
    assert err.value.target == "h" and " on h: " in str(err.value)
    assert err.value.argv == ["iscsiadm", MASK] and "pw-123" not in str(err.value)
    assert "iscsiadm" in caplog.text and "pw-123" not in caplog.text


def test_render_quotes_and_masks() -> None:
    assert render(["a b", Secret("zz"), "c"]) == f"'a b' '{MASK}' c"


def test_command_log_records_masked_argv_and_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_file = tmp_path / "commands.jsonl"
    monkeypatch.setenv("SKYCACHE_COMMAND_LOG", str(log_file))
    SystemRunner().run(["echo", Secret("hunter2")])
    SystemRunner().query(["sh", "-c", "exit 3"], check=False)
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [r["argv"] for r in records] == [["echo", "********"], ["sh", "-c", "exit 3"]]
    assert [r["rc"] for r in records] == [0, 3]
    assert all(r["s"] >= 0 for r in records)
    assert "hunter2" not in log_file.read_text()


@dataclass(frozen=True)
class _HereAsRemoteTarget:
    """A "remote" target whose transport runs the argv on this machine: the remote code paths
    (cat, test -e) with real commands and real files."""

    name: str = "here"
    local: bool = False

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        return list(argv), {**os.environ, **env}

    def has_program(self, program: str) -> bool | None:
        return None


def test_remote_read_text_tells_a_missing_file_from_an_unreadable_one(tmp_path: Path) -> None:
    runner = SystemRunner(_HereAsRemoteTarget())
    (tmp_path / "f").write_text("x\n")
    (tmp_path / "d").mkdir()
    assert runner.read_text(tmp_path / "f") == "x\n"
    assert runner.read_text(tmp_path / "nothere") is None
    # A directory in the file's place is not "missing" (a registry read as missing would be rewritten).
    with pytest.raises(OSError, match="Is a directory"):
        runner.read_text(tmp_path / "d")
