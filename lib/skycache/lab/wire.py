"""The frames of the lab's command channel (``lab exec``/``status``/``down`` to the lab's guest).

One TCP connection per command, over qemu's user-mode network: qemu forwards a loopback port of the
host to the guest, so the channel needs no network privileges on the host and the guest has no
other network (``restrict=on``). A frame is a kind byte, a 4-byte big-endian length and the payload.
The client opens with one request; the guest answers with output frames and one closing frame.

Kinds:

- ``Q`` request (JSON: ``{"token", "op", ...}``, op ``ping``, ``exec`` or ``poweroff``)
- ``O``/``E`` a chunk of the command's stdout/stderr (bytes, as written)
- ``S`` a signal for the command's process group, client to guest (JSON ``{"signal": N}``)
- ``X`` the command's exit code (JSON ``{"code": N}``), ``R`` the reply to ping/poweroff (JSON),
  ``F`` a refusal or failure before the command ran (JSON ``{"error": "..."}``)
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

REQUEST = b"Q"
STDOUT = b"O"
STDERR = b"E"
SIGNAL = b"S"
EXIT = b"X"
REPLY = b"R"
FAILURE = b"F"
KINDS = frozenset((REQUEST, STDOUT, STDERR, SIGNAL, EXIT, REPLY, FAILURE))

_HEADER = struct.Struct("!cI")
# Output is sent in pipe-sized chunks and requests are small; anything larger is not our peer.
MAX_PAYLOAD = 16 * 1024 * 1024


class WireError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def send(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    sock.sendall(_HEADER.pack(kind, len(payload)) + payload)


def send_json(sock: socket.socket, kind: bytes, obj: dict[str, Any]) -> None:
    send(sock, kind, json.dumps(obj).encode())


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Exactly n bytes, or None if the peer closed before the first byte; WireError if mid-way."""
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            if got == 0:
                return None
            raise WireError(f"connection closed inside a frame ({got} of {n} bytes)")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame as (kind, payload), or None when the peer closed the connection cleanly."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    kind, length = _HEADER.unpack(header)
    if kind not in KINDS:
        raise WireError(f"unknown frame kind {kind!r}")
    if length > MAX_PAYLOAD:
        raise WireError(f"frame of {length} bytes is over the {MAX_PAYLOAD}-byte limit")
    payload = _recv_exact(sock, length) if length else b""
    if payload is None:
        raise WireError("connection closed between a frame's header and its payload")
    return kind, payload


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise WireError("frame is JSON but not an object")
    return obj
