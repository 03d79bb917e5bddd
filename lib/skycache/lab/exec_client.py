"""The host's end of the lab's command channel: ping, poweroff, and running a command in the lab."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

from skycache.errors import SkycacheError
from skycache.lab import wire

Sink = Callable[[bytes], None]


class ChannelError(SkycacheError):
    """The lab's command server could not be reached or broke off."""


class LabRefused(SkycacheError):
    """The lab's command server refused the request (bad directory, missing program, token)."""


def _connect(port: int, timeout_s: float) -> socket.socket:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    except OSError as exc:
        raise ChannelError(f"the lab's command server on 127.0.0.1:{port} does not answer ({exc})") from exc


def _ask(port: int, token: str, op: str, timeout_s: float) -> dict[str, Any]:
    with _connect(port, timeout_s) as sock:
        try:
            wire.send_json(sock, wire.REQUEST, {"token": token, "op": op})
            frame = wire.recv(sock)
        except (OSError, wire.WireError) as exc:
            raise ChannelError(f"the lab's command server broke off ({exc})") from exc
    if frame is None:
        # qemu accepts the forwarded connection before the guest listens, then closes it.
        raise ChannelError("the lab's command server is not listening yet")
    kind, payload = frame
    if kind == wire.FAILURE:
        raise LabRefused(str(wire.parse_json(payload).get("error")))
    if kind != wire.REPLY:
        raise ChannelError(f"unexpected {kind!r} frame from the lab's command server")
    return wire.parse_json(payload)


def ping(port: int, token: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    return _ask(port, token, "ping", timeout_s)


def request_poweroff(port: int, token: str) -> None:
    _ask(port, token, "poweroff", 10.0)


def run(
    port: int,
    token: str,
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    on_stdout: Sink,
    on_stderr: Sink,
) -> int:
    """Run ``argv`` in the lab, hand its output to the sinks as it comes; returns its exit code.

    Ctrl-C (SIGINT), SIGTERM and SIGHUP are passed on to the command's process group in the lab,
    and the output keeps flowing until the command exits, so what it prints on the way out is seen.
    """
    sock = _connect(port, 10.0)
    sock.settimeout(None)
    previous: dict[signal.Signals, Any] = {}

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            wire.send_json(sock, wire.SIGNAL, {"signal": signum})

    with sock:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError):  # not the main thread: no forwarding
                    previous[sig] = signal.signal(sig, forward)
            wire.send_json(
                sock,
                wire.REQUEST,
                {"token": token, "op": "exec", "argv": list(argv), "cwd": cwd, "env": dict(env)},
            )
            return _relay(sock, on_stdout, on_stderr)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _relay(sock: socket.socket, on_stdout: Sink, on_stderr: Sink) -> int:
    while True:
        try:
            frame = wire.recv(sock)  # a signal's handler runs in between; the read goes on (PEP 475)
        except (OSError, wire.WireError) as exc:
            raise ChannelError(f"the lab's command server broke off ({exc})") from exc
        if frame is None:
            raise ChannelError(
                "the lab closed the connection before the command's exit code (did it power off?)"
            )
        kind, payload = frame
        if kind == wire.STDOUT:
            on_stdout(payload)
        elif kind == wire.STDERR:
            on_stderr(payload)
        elif kind == wire.EXIT:
            code = wire.parse_json(payload).get("code")
            return code if isinstance(code, int) else 1
        elif kind == wire.FAILURE:
            raise LabRefused(str(wire.parse_json(payload).get("error")))
