"""The lab's command server: runs ``lab exec`` commands inside a lab that stays up (``lab up``).

It runs in the guest as root, in place of the single command of ``lab run``, after the same
preparation (modules, configfs, iscsid). It listens on the port qemu forwards from the host's
loopback, forks a handler per connection and, for each authenticated ``exec`` request, runs the
command as the leader of its own process group with the project's environment, relaying its stdout
and stderr as frames (:mod:`skycache.lab.wire`) until it exits.

``skycache`` itself is run warm: the server imports the CLI once, before it accepts connections, and
a ``skycache`` command runs in a fork of that process instead of a new interpreter. A new Python
that imports the CLI costs about 10 s under TCG, nearly all of it reading modules over the guest's
shared root filesystem; a fork costs milliseconds. Every other command is started through the
runner as usual.

A request carries the token from the lab's private share; a connection without it is closed. The
server exits (and the guest powers off) on a ``poweroff`` request, on SIGTERM, or at its deadline.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skycache.lab import wire
from skycache.runner import MissingProgram, SystemRunner

# The guest side of qemu's port forward; any port works, the guest has no other network.
GUEST_PORT = 7077
# How long a handler waits for the request after the connection opens.
REQUEST_TIMEOUT_S = 30.0
CHUNK = 65536
# After the client goes away (Ctrl-C twice, a killed `lab exec`), the command gets SIGHUP, then
# SIGKILL after this long: nothing the lab runs outlives the session that started it.
HANGUP_GRACE_S = 5.0


@dataclass(frozen=True)
class ServerConfig:
    port: int
    token: str
    env: Mapping[str, str]  # the project's lab environment, the base of every command's env
    deadline: float  # time.time() at which the server stops and the lab powers off
    warm_programs: frozenset[str]  # argv[0] values run as a fork of the warm skycache CLI
    started: float
    # The guest listens on all its addresses (its only NIC is qemu's forward); a test on the host
    # gives 127.0.0.1.
    bind: str = "0.0.0.0"  # noqa: S104


# Imported ahead too, so that forks find them loaded: typer's parameter coercion (it imports pydantic
# when it parses any command line) and rich's tables; and what each plugin's CLI module names in its
# LAB_WARM_IMPORTS (its scenario schemas). Not numpy or pandas: OpenBLAS starts threads at import,
# and a fork of a process with threads may hang in its child.
WARM_MODULES = ("typer._adapters", "rich.console", "rich.table")
WARM_ATTRIBUTE = "LAB_WARM_IMPORTS"


def preload_cli() -> bool:
    """Import the whole CLI (every plugin's verbs registered) so that forks start warm."""
    import importlib

    saved = sys.argv
    sys.argv = ["skycache"]  # no verb: the CLI registers every plugin's verbs at import
    try:
        import skycache.cli.main

        skycache.cli.main.prebuild()
    except Exception as exc:
        print(f"lab: skycache runs cold in this lab (its CLI did not import: {exc})", file=sys.stderr)
        return False
    finally:
        sys.argv = saved
    plugin_warm = [
        name
        for module in list(sys.modules.values())
        if module is not None and module.__name__.startswith("skycache.")
        for name in getattr(module, WARM_ATTRIBUTE, ())
    ]
    for name in (*WARM_MODULES, *plugin_warm):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a leaner install: that part just starts cold
            print(f"lab: {name} not preloaded ({exc})", file=sys.stderr)
    return True


def serve(config: ServerConfig) -> int:
    """Accept connections until poweroff, SIGTERM or the deadline; returns the guest's exit code."""
    stop = {"flag": False}

    def on_term(_signum: int, _frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((config.bind, config.port))
    listener.listen(16)
    listener.settimeout(1.0)
    print(f"lab: command server ready on port {config.port}", flush=True)
    handlers: set[int] = set()
    while not stop["flag"] and time.time() < config.deadline:
        _reap(handlers)
        try:
            conn, _addr = listener.accept()
        except TimeoutError:
            continue
        pid = os.fork()
        if pid == 0:  # the handler
            listener.close()
            code = 0
            try:
                _handle(conn, config)
            except Exception as exc:
                print(f"lab: command server: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                code = 1
            finally:
                os._exit(code)
        conn.close()
        handlers.add(pid)
    reason = "poweroff requested" if stop["flag"] else "its --timeout was reached"
    print(f"lab: command server stopping ({reason})", flush=True)
    listener.close()
    for pid in handlers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    _reap(handlers)
    return 0


def _reap(handlers: set[int]) -> None:
    for pid in list(handlers):
        with contextlib.suppress(ChildProcessError):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
        handlers.discard(pid)


def _handle(conn: socket.socket, config: ServerConfig) -> None:
    conn.settimeout(REQUEST_TIMEOUT_S)
    frame = wire.recv(conn)
    if frame is None or frame[0] != wire.REQUEST:
        return
    request = wire.parse_json(frame[1])
    token = request.get("token")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), config.token.encode()):
        wire.send_json(conn, wire.FAILURE, {"error": "the lab refused the request: wrong token"})
        return
    conn.settimeout(None)
    op = request.get("op")
    if op == "ping":
        wire.send_json(conn, wire.REPLY, _status(config))
    elif op == "poweroff":
        wire.send_json(conn, wire.REPLY, {"ok": True})
        os.kill(os.getppid(), signal.SIGTERM)
    elif op == "exec":
        _exec(conn, request, config)
    else:
        wire.send_json(conn, wire.FAILURE, {"error": f"unknown request {op!r}"})


def _status(config: ServerConfig) -> dict[str, Any]:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "ok": True,
        "uptime_s": round(time.time() - config.started, 1),
        "deadline": config.deadline,
        "guest_load": [float(x) for x in load],
        "warm": bool(config.warm_programs),
    }


def _exec(conn: socket.socket, request: dict[str, Any], config: ServerConfig) -> None:
    argv = request.get("argv")
    cwd = request.get("cwd")
    extra_env = request.get("env") or {}
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        wire.send_json(conn, wire.FAILURE, {"error": "no command given to run in the lab"})
        return
    if not isinstance(cwd, str) or not Path(cwd).is_dir():
        wire.send_json(
            conn,
            wire.FAILURE,
            {"error": f"directory {cwd!r} does not exist in the lab (use --cwd; see docs/lab.md)"},
        )
        return
    if not isinstance(extra_env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra_env.items()
    ):
        wire.send_json(conn, wire.FAILURE, {"error": "the request's env is not a map of strings"})
        return
    env = {**os.environ, **config.env, **extra_env}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        if argv[0] in config.warm_programs:
            pid = _fork_warm(argv, cwd, env, out_w, err_w)

            def wait() -> int:
                return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        else:
            try:
                proc = SystemRunner().start(argv, env=env, cwd=cwd, stdout=out_w, stderr=err_w)
            except (MissingProgram, PermissionError) as exc:
                wire.send_json(conn, wire.FAILURE, {"error": f"cannot run {argv[0]!r} in the lab: {exc}"})
                return
            # Waited for through its Popen: a dropped Popen reaps its child itself when collected.
            pid, wait = proc.pid, proc.wait
    finally:
        os.close(out_w)
        os.close(err_w)
    _relay(conn, pid, out_r, err_r)
    code = wait()
    wire.send_json(conn, wire.EXIT, {"code": 128 - code if code < 0 else code})


def _fork_warm(argv: list[str], cwd: str, env: dict[str, str], out_w: int, err_w: int) -> int:
    """Run ``skycache ARGS`` in a fork of this (preloaded) process; returns the child's pid."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
        sys.argv = ["skycache", *argv[1:]]
        from skycache.cli.main import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            print(f"skycache: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _relay(conn: socket.socket, pid: int, out_r: int, err_r: int) -> None:
    """Send the command's output as it comes and pass signals from the client on, until both of its
    output pipes are closed."""
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, wire.STDOUT)
    sel.register(err_r, selectors.EVENT_READ, wire.STDERR)
    sel.register(conn, selectors.EVENT_READ, None)
    open_pipes = 2
    client_gone_at: float | None = None
    while open_pipes:
        timeout = None if client_gone_at is None else 0.5
        for key, _mask in sel.select(timeout):
            if key.data is None:
                frame = _read_client(conn)
                if frame is None:
                    sel.unregister(conn)
                    client_gone_at = time.time()
                    _signal_group(pid, signal.SIGHUP)
                elif frame[0] == wire.SIGNAL:
                    signum = wire.parse_json(frame[1]).get("signal")
                    if isinstance(signum, int) and signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                        _signal_group(pid, signum)
                continue
            fd = key.fd
            data = os.read(fd, CHUNK)
            if not data:
                sel.unregister(fd)
                os.close(fd)
                open_pipes -= 1
                continue
            if client_gone_at is None:
                try:
                    wire.send(conn, key.data, data)
                except OSError:
                    client_gone_at = time.time()
                    _signal_group(pid, signal.SIGHUP)
        if client_gone_at is not None and time.time() - client_gone_at > HANGUP_GRACE_S:
            _signal_group(pid, signal.SIGKILL)


def _read_client(conn: socket.socket) -> tuple[bytes, bytes] | None:
    try:
        return wire.recv(conn)
    except (OSError, wire.WireError):
        return None


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
