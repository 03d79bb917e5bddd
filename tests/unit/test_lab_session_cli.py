"""`lab up/exec/status/down` as the CLI runs them, against a real command server on the host's
loopback standing in for a booted lab (the session record points at it); no VM is booted here."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from boundary import assert_one_error, skycache
from test_lab_channel import TOKEN, _start_server, _stop

from skycache.lab import session


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKYCACHE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def lab(cache: Path) -> Iterator[session.Session]:
    """A session record for a command server started on the host, as `lab up` leaves one."""
    pid, port = _start_server()
    node = session.NodeRun(
        name="lab", address=None, role="worker", pid=pid, pid_start=session._proc_start(pid), host_port=port
    )
    record = session.Session(
        token=TOKEN,
        started=time.time() - 5,
        deadline=time.time() + 3600,
        kernel="6.1.0-57-amd64",
        accel="tcg",
        memory="3G",
        cpus=2,
        disk_sizes=(1024**3,),
        disk_files=(),
        rwdirs=("/work",),
        cwd="/",
        nodes=(node,),
    )
    session.share_dir("lab").mkdir(parents=True)
    (session.session_dir() / session.SESSION_FILE).write_text(json.dumps(asdict(record)))
    yield record
    _stop(pid)


def test_no_lab_up(capsys: pytest.CaptureFixture[str], cache: Path) -> None:
    result = skycache(capsys, "lab", "status")
    assert (result.code, result.out) == (1, "lab: down\n")
    assert json.loads(skycache(capsys, "lab", "status", "--json").out) == {"state": "down"}
    assert_one_error(skycache(capsys, "lab", "exec", "--", "true"), "no lab is up", "skycache lab up", code=1)
    result = skycache(capsys, "lab", "down")
    assert (result.code, result.out) == (0, "lab: no lab is up\n")


def test_a_record_whose_vm_is_gone_is_not_a_lab(
    capsys: pytest.CaptureFixture[str], lab: session.Session
) -> None:
    _stop(lab.pid)
    assert skycache(capsys, "lab", "status").out == "lab: down\n"
    assert_one_error(skycache(capsys, "lab", "exec", "--", "true"), "no lab is up", code=1)


def test_a_reused_pid_is_not_the_lab(capsys: pytest.CaptureFixture[str], lab: session.Session) -> None:
    # a running process, but not the one `lab up` started
    fake = asdict(lab) | {"nodes": [asdict(lab.nodes[0]) | {"pid": os.getpid()}]}
    (session.session_dir() / session.SESSION_FILE).write_text(json.dumps(fake))
    assert skycache(capsys, "lab", "status").out == "lab: down\n"


def test_exec_streams_and_passes_the_exit_code_on(
    capsys: pytest.CaptureFixture[str], lab: session.Session
) -> None:
    result = skycache(
        capsys, "lab", "exec", "--env", "A=b c", "--", "sh", "-c", 'echo "out $A"; echo err >&2; exit 3'
    )
    assert (result.code, result.out, result.err) == (3, "out b c\n", "err\n")
    result = skycache(capsys, "lab", "exec", "--cwd", "/tmp", "--", "pwd")
    assert (result.code, result.out) == (0, "/tmp\n")


def test_exec_refusals_are_one_line(capsys: pytest.CaptureFixture[str], lab: session.Session) -> None:
    assert_one_error(skycache(capsys, "lab", "exec"), "no command given", code=2)
    assert_one_error(skycache(capsys, "lab", "exec", "--env", "NOEQUALS", "--", "true"), "'NOEQUALS'", code=2)
    assert_one_error(
        skycache(capsys, "lab", "exec", "--cwd", "/no/such", "--", "true"),
        "'/no/such' does not exist",
        code=1,
    )
    assert_one_error(
        skycache(capsys, "lab", "exec", "--", "no-such-prog-q"), "cannot run 'no-such-prog-q'", code=1
    )


def test_status_shows_the_lab_without_its_token(
    capsys: pytest.CaptureFixture[str], lab: session.Session
) -> None:
    result = skycache(capsys, "lab", "status", "--json")
    assert result.code == 0
    record = json.loads(result.out)
    assert record["state"] == "up" and record["nodes"][0]["pid"] == lab.pid
    assert record["server"]["lab"]["ok"] is True
    assert TOKEN not in result.out
    text = skycache(capsys, "lab", "status")
    assert text.code == 0 and text.out.startswith("lab: up (up ") and "1024M" in text.out
    assert f"node lab (worker): pid {lab.pid}, answers in " in text.out
    assert TOKEN not in text.out


def test_down_powers_the_lab_off_and_forgets_it(
    capsys: pytest.CaptureFixture[str], lab: session.Session
) -> None:
    result = skycache(capsys, "lab", "down")
    assert result.code == 0 and result.out.startswith("lab: down after ")
    assert not session.session_dir().exists()
    for _ in range(100):
        if session._proc_start(lab.pid) is None:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the command server still runs after `lab down`")


def test_up_refuses_a_second_lab_and_bad_options_before_booting(
    capsys: pytest.CaptureFixture[str], lab: session.Session
) -> None:
    assert_one_error(skycache(capsys, "lab", "up", "--nodes", "9"), "--nodes", "9", code=2)
    assert_one_error(skycache(capsys, "lab", "exec", "--node", "w7", "--", "true"), "'w7'", "(lab)", code=2)
    assert_one_error(skycache(capsys, "lab", "up", "--timeout", "-1"), "--timeout", code=2)
    assert_one_error(skycache(capsys, "lab", "up", "--disk", "lots"), "--disk", "'lots'", code=2)
    assert_one_error(skycache(capsys, "lab", "up"), f"a lab is already up (pid {lab.pid}", "lab down", code=1)
