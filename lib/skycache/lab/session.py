"""A lab that stays up: ``lab up`` boots it in the background, ``status`` and ``down`` find it again.

The session lives in ``~/.cache/skycache/lab/up/`` (private to its owner): ``session.json`` (the
VM's process group, the forwarded port, the channel's token, what was booted), ``share/`` (the
directory shared with the guest: its spec, the scratch disks, the host's load for provenance) and
``console.log`` (everything the VM printed). One lab is up at a time per user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skycache.errors import SkycacheError
from skycache.lab import hostinfo, paths
from skycache.lab.command_server import GUEST_PORT
from skycache.lab.exec_client import ChannelError, ping, request_poweroff
from skycache.lab.kernel import LabKernel
from skycache.lab.vm import Channel, LabBootError, LabSpec, check_spec, ensure_vng, vng_argv, write_share
from skycache.runner import SystemRunner

SESSION_FILE = "session.json"
BOOT_TIMEOUT_S = 600.0  # a TCG boot is about 30 s, plus up to a minute preloading the CLI
DOWN_WAIT_S = 60.0
POLL_S = 1.0
Progress = Callable[[str], None]


class LabAlreadyUp(SkycacheError):
    pass


class NoLabUp(SkycacheError):
    pass


@dataclass(frozen=True)
class Session:
    pid: int  # vng's pid, the leader of the VM's process group
    pid_start: int | None  # its start time, so that a reused pid is not taken for the lab
    host_port: int
    token: str
    started: float
    deadline: float
    kernel: str
    accel: str
    memory: str
    cpus: int
    disk_sizes: tuple[int, ...]
    rwdirs: tuple[str, ...]
    cwd: str

    def public(self) -> dict[str, Any]:
        """What status prints: everything but the token."""
        record = asdict(self)
        record.pop("token")
        return record


SESSION_DIR_ENV = "SKYCACHE_LAB_SESSION"


def session_dir() -> Path:
    """``$SKYCACHE_LAB_SESSION``, else ``~/.cache/skycache/lab/up`` (a test's lab beside a user's)."""
    explicit = os.environ.get(SESSION_DIR_ENV)
    return Path(explicit) if explicit else paths.lab_dir() / "up"


def share_dir() -> Path:
    return session_dir() / "share"


def console_log() -> Path:
    return session_dir() / "console.log"


def load() -> Session | None:
    path = session_dir() / SESSION_FILE
    try:
        record = json.loads(path.read_text())
        record["disk_sizes"] = tuple(record["disk_sizes"])
        record["rwdirs"] = tuple(record["rwdirs"])
        return Session(**record)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise SkycacheError(f"{path} is not a lab session record ({exc}); remove it") from exc


def _proc_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if gone or
    a zombie: with the pid, it names one process even after the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(session: Session) -> bool:
    """Whether the VM's process still runs (not a zombie, not a reused pid of someone else)."""
    return _proc_start(session.pid) == session.pid_start


def require() -> Session:
    session = load()
    if session is None or not alive(session):
        raise NoLabUp("no lab is up: start one with `skycache lab up`")
    return session


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = console_log().read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
    return ""


def refuse_second_lab() -> None:
    old = load()
    if old is not None and alive(old):
        raise LabAlreadyUp(
            f"a lab is already up (pid {old.pid}, since {_clock(old.started)}); "
            "stop it with `skycache lab down`"
        )


def up(
    runner: SystemRunner,
    kernel: LabKernel,
    spec: LabSpec,
    *,
    lifetime_s: float,
    progress: Progress,
) -> Session:
    """Boot the lab in the background and wait until its command server answers."""
    check_spec(spec)
    refuse_second_lab()
    ensure_vng(runner)
    base = session_dir()
    shutil.rmtree(base, ignore_errors=True)  # the previous session's leftovers (its VM is gone)
    share = share_dir()
    share.mkdir(parents=True, mode=0o700)
    base.chmod(0o700)
    token = secrets.token_hex(16)
    channel = Channel(host_port=_free_port(), guest_port=GUEST_PORT)
    serve = {"token": token, "mac": channel.mac, "lifetime_s": lifetime_s}
    disks, guest_spec = write_share(share, spec, {"serve": serve})
    facts = {**hostinfo.host_facts(runner), "accel": spec.accel, "lab_kernel": kernel.version}
    hostinfo.HostShare(runner, share, facts)._write_load()  # facts now; each `lab exec` refreshes the load
    argv = vng_argv(
        kernel, spec, guest_spec_path=guest_spec, share_dir=share, disk_paths=disks, channel=channel
    )
    started = time.time()
    with console_log().open("wb") as log_file:
        proc = runner.start(argv, env=dict(os.environ), stdout=log_file, stderr=log_file)
    session = Session(
        pid=proc.pid,
        pid_start=_proc_start(proc.pid),
        host_port=channel.host_port,
        token=token,
        started=started,
        deadline=started + lifetime_s,
        kernel=kernel.version,
        accel=spec.accel,
        memory=spec.memory,
        cpus=spec.cpus,
        disk_sizes=spec.disk_sizes,
        rwdirs=tuple(str(r) for r in spec.rwdirs),
        cwd=str(spec.cwd),
    )
    record = session_dir() / SESSION_FILE
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(session), f)
    try:
        _wait_until_serving(session, proc.poll, progress)
    except BaseException:
        _kill(session)
        raise
    return session


def _wait_until_serving(session: Session, exited: Callable[[], int | None], progress: Progress) -> None:
    next_note = 10.0
    while True:
        elapsed = time.time() - session.started
        code = exited()
        if code is not None:
            raise LabBootError(
                f"the lab VM exited (code {code}) before its command server started; "
                f"the end of {console_log()}:\n{_log_tail()}"
            )
        if elapsed > BOOT_TIMEOUT_S:
            raise LabBootError(f"the lab did not answer within {BOOT_TIMEOUT_S:.0f} s; see {console_log()}")
        try:
            ping(session.host_port, session.token, timeout_s=5.0)
            return
        except ChannelError:
            pass
        if elapsed >= next_note:
            progress(f"lab: booting ... {elapsed:.0f} s ({_phase()})")
            next_note += 10.0
        time.sleep(POLL_S)


def _phase() -> str:
    """What the console last said that tells how far the boot got."""
    tail = _log_tail(40)
    if "command server ready" in tail:
        return "command server starting"
    if "lab: guest ready" in tail:
        return "guest ready, preloading the skycache CLI"
    return "kernel booting, guest preparing"


def status() -> tuple[Session | None, bool, dict[str, Any] | None]:
    """(the session record, whether its VM runs, the command server's answer or None)."""
    session = load()
    if session is None:
        return None, False, None
    running = alive(session)
    answer = None
    if running:
        with contextlib.suppress(ChannelError):
            started = time.time()
            answer = ping(session.host_port, session.token, timeout_s=5.0)
            answer["ping_ms"] = round((time.time() - started) * 1000, 1)
    return session, running, answer


def down(progress: Progress) -> Session | None:
    """Power the lab off (asking its server first, then killing its process group); None if none."""
    session = load()
    if session is None:
        return None
    if alive(session):
        with contextlib.suppress(ChannelError):
            request_poweroff(session.host_port, session.token)
        waited = 0.0
        while alive(session) and waited < DOWN_WAIT_S:
            time.sleep(0.5)
            waited += 0.5
        if alive(session):
            progress(f"lab: no clean poweroff after {DOWN_WAIT_S:.0f} s; killing the VM")
    _kill(session)
    shutil.rmtree(session_dir(), ignore_errors=True)
    return session


def _kill(session: Session) -> None:
    """Kill what is left of the VM's process group (it leads its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session.pid, sig)
        for _ in range(20):
            if not alive(session):
                break
            time.sleep(0.25)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(session.pid, os.WNOHANG)
