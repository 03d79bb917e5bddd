"""The lab's command channel, end to end on the host: the real command server (the code `lab up`
runs in the guest) listening on 127.0.0.1, the real client of `lab exec`, real commands.

Nothing here boots a VM; tests/labhost/ runs the same channel through qemu's port forward.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skycache.lab import command_server, exec_client, wire

TOKEN = "t0ken-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(*, warm: bool = False, lifetime_s: float = 60.0) -> tuple[int, int]:
    """Fork a command server on a free loopback port; (its pid, the port), once it listens."""
    port = _free_port()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's coverage is not collected)
        code = 1
        try:
            programs = frozenset(("skycache",)) if warm and command_server.preload_cli() else frozenset()
            config = command_server.ServerConfig(
                port=port,
                token=TOKEN,
                env={"SKYCACHE_LAB_TEST_ENV": "from-the-lab"},
                deadline=time.time() + lifetime_s,
                warm_programs=programs,
                started=time.time(),
                bind="127.0.0.1",
            )
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the child ends with os._exit)
            code = command_server.serve(config)
        finally:
            os._exit(code)
    for _ in range(200):
        try:
            exec_client.ping(port, TOKEN, timeout_s=1.0)
            return pid, port
        except exec_client.ChannelError:
            time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the command server did not start")


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    pid, port = _start_server()
    yield port
    _stop(pid)


def _run(
    port: int, argv: list[str], *, cwd: str = "/", env: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    out: list[bytes] = []
    err: list[bytes] = []
    code = exec_client.run(
        port, TOKEN, argv, cwd=cwd, env=env or {}, on_stdout=out.append, on_stderr=err.append
    )
    return code, b"".join(out), b"".join(err)


def test_exit_code_and_both_streams_come_back_apart(server: int) -> None:
    code, out, err = _run(server, ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"])
    assert (code, out, err) == (7, b"to-out\n", b"to-err\n")


def test_binary_output_and_large_output_arrive_whole(server: int) -> None:
    code, out, _err = _run(server, ["head", "-c", "3000000", "/dev/zero"])
    assert code == 0 and out == b"\0" * 3_000_000
    code, out, _err = _run(server, ["printf", "\\377\\000\\001"])
    assert out == b"\xff\x00\x01"


def test_command_gets_the_lab_env_the_request_env_and_cwd(server: int, tmp_path: Path) -> None:
    code, out, _err = _run(
        server,
        ["sh", "-c", 'echo "$SKYCACHE_LAB_TEST_ENV $EXTRA"; pwd'],
        cwd=str(tmp_path),
        env={"EXTRA": "x=1"},
    )
    assert code == 0
    assert out.decode().splitlines() == ["from-the-lab x=1", str(tmp_path)]


def test_killed_command_exits_128_plus_signal(server: int) -> None:
    code, _out, _err = _run(server, ["sh", "-c", "kill -9 $$"])
    assert code == 128 + signal.SIGKILL


def test_missing_directory_and_program_are_refused_in_one_line(server: int) -> None:
    with pytest.raises(exec_client.LabRefused, match="'/no/such/dir' does not exist in the lab"):
        _run(server, ["true"], cwd="/no/such/dir")
    with pytest.raises(exec_client.LabRefused, match="cannot run 'no-such-program-xyz'"):
        _run(server, ["no-such-program-xyz"])


def test_wrong_token_is_refused(server: int) -> None:
    with pytest.raises(exec_client.LabRefused, match="wrong token"):
        exec_client.ping(server, "not-the-token")
    out: list[bytes] = []
    with pytest.raises(exec_client.LabRefused, match="wrong token"):
        exec_client.run(
            server,
            "nope",
            ["touch", "/tmp/never"],
            cwd="/",
            env={},
            on_stdout=out.append,
            on_stderr=out.append,
        )
    assert out == []


def test_garbage_on_the_port_does_not_stop_the_server(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(100)
        except ConnectionResetError:  # closed with our bytes unread: a reset, also no answer
            answer = b""
        assert answer == b""
    assert exec_client.ping(server, TOKEN)["ok"] is True


def test_a_signal_from_the_client_reaches_the_command_group(server: int) -> None:
    port = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        wire.send_json(
            sock,
            wire.REQUEST,
            {
                "token": TOKEN,
                "op": "exec",
                "argv": ["sh", "-c", "echo started; exec sleep 30"],
                "cwd": "/",
                "env": {},
            },
        )
        assert wire.recv(sock) == (wire.STDOUT, b"started\n")
        began = time.time()
        wire.send_json(sock, wire.SIGNAL, {"signal": int(signal.SIGINT)})
        frame = wire.recv(sock)
        assert frame is not None and frame[0] == wire.EXIT
        assert wire.parse_json(frame[1])["code"] == 128 + signal.SIGINT
        assert time.time() - began < 10


def test_a_vanished_client_takes_its_command_with_it(server: int, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    with socket.create_connection(("127.0.0.1", server)) as sock:
        wire.send_json(
            sock,
            wire.REQUEST,
            {
                "token": TOKEN,
                "op": "exec",
                "argv": ["sh", "-c", f"echo $$ > {marker}; sleep 60"],
                "cwd": "/",
                "env": {},
            },
        )
        for _ in range(100):
            if marker.exists() and marker.read_text().strip():
                break
            time.sleep(0.05)
    pid = int(marker.read_text())
    for _ in range(200):  # SIGHUP at once (sh dies of it)
        if not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"command {pid} outlived its client")


def test_poweroff_stops_the_server_and_deadline_too() -> None:
    pid, port = _start_server()
    exec_client.request_poweroff(port, TOKEN)
    for _ in range(100):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        _stop(pid)
        raise AssertionError("the server did not stop on poweroff")
    with pytest.raises(exec_client.ChannelError):
        exec_client.ping(port, TOKEN, timeout_s=1.0)
    pid, port = _start_server(lifetime_s=1.5)
    for _ in range(100):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        _stop(pid)
        raise AssertionError("the server outlived its deadline")


def test_skycache_runs_warm_in_a_fork_with_its_own_exit_code() -> None:
    pid, port = _start_server(warm=True)
    try:
        code, out, _err = _run(port, ["skycache", "--version"])
        assert code == 0 and out.decode().startswith("skycache ")
        code, _out, err = _run(port, ["skycache", "repo", "frobnicate"])
        assert code == 2 and b"frobnicate" in err
        # Warm means no new process from PATH: with a PATH where no skycache is, a fork of the
        # server still runs it (a cold start would be refused as a program it cannot find).
        code, out, _err = _run(port, ["skycache", "--help"], env={"PATH": "/nonexistent"})
        assert code == 0 and b"lab" in out
    finally:
        _stop(pid)


def test_frames_refuse_what_is_not_the_protocol() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"Z\0\0\0\0")
        with pytest.raises(wire.WireError, match="unknown frame kind"):
            wire.recv(b)
        a.sendall(b"O\xff\xff\xff\xff")
        with pytest.raises(wire.WireError, match="over the"):
            wire.recv(b)
        wire.send(a, wire.STDOUT, b"abc")
        assert wire.recv(b) == (wire.STDOUT, b"abc")
        a.sendall(b"O\0\0\0\x05ab")
        a.close()
        with pytest.raises(wire.WireError, match="closed inside a frame"):
            wire.recv(b)
