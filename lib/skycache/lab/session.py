"""A lab that stays up: ``lab up`` boots it in the background, ``status`` and ``down`` find it again.

The session lives in ``~/.cache/skycache/lab/up/`` (private to its owner; ``$SKYCACHE_LAB_SESSION``
moves it): ``session.json`` (each node's VM process group and forwarded port, the channel's token,
what was booted), ``share/NODE/`` (the directory shared with that node: its spec, its scratch disks,
the host's load for provenance), ``share/common/`` (a multi-node lab's SSH keys and config) and
``console-NODE.log`` (everything that VM printed). One lab is up at a time per session directory.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from skycache.errors import InvalidInput, SkycacheError
from skycache.lab import hostinfo, nodes, paths
from skycache.lab.command_server import GUEST_PORT
from skycache.lab.exec_client import ChannelError, ping, request_poweroff
from skycache.lab.kernel import LabKernel
from skycache.lab.vm import (
    Channel,
    LabBootError,
    LabSpec,
    check_spec,
    ensure_vng,
    kept_disks,
    vng_argv,
    write_share,
)
from skycache.runner import SystemRunner

SESSION_FILE = "session.json"
SESSION_DIR_ENV = "SKYCACHE_LAB_SESSION"
BOOT_TIMEOUT_S = 900.0  # a TCG boot is 30-80 s, plus up to a minute preloading the CLI, per node
DOWN_WAIT_S = 60.0
POLL_S = 1.0
GUEST_KEY_PATH = "/run/skycache-lab/" + nodes.KEY_NAME  # where each node keeps its copy (0600)
Progress = Callable[[str], None]


class LabAlreadyUp(SkycacheError):
    pass


class NoLabUp(SkycacheError):
    pass


@dataclass(frozen=True)
class NodeRun:
    name: str
    address: str | None  # on the segment; None in a lab of one node (no segment)
    role: str
    pid: int  # vng's pid, the leader of the VM's process group
    pid_start: int | None  # its start time, so that a reused pid is not taken for the lab
    host_port: int


@dataclass(frozen=True)
class Session:
    token: str
    started: float
    deadline: float
    kernel: str
    accel: str
    memory: str
    cpus: int
    disk_sizes: tuple[int, ...]
    disk_files: tuple[str, ...]
    rwdirs: tuple[str, ...]
    cwd: str
    nodes: tuple[NodeRun, ...]

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    def node(self, name: str | None) -> NodeRun:
        """The node called ``name``; by default the first worker (the only node of a one-node lab)."""
        if name is None:
            return next((n for n in self.nodes if n.role == "worker"), self.nodes[0])
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise InvalidInput(f"--node {name!r} is not a node of this lab ({known})")

    def public(self) -> dict[str, Any]:
        """What status prints: everything but the token."""
        record = asdict(self)
        record.pop("token")
        return record


def session_dir() -> Path:
    """``$SKYCACHE_LAB_SESSION``, else ``~/.cache/skycache/lab/up`` (a test's lab beside a user's)."""
    explicit = os.environ.get(SESSION_DIR_ENV)
    return Path(explicit) if explicit else paths.lab_dir() / "up"


def share_dir(node: str) -> Path:
    return session_dir() / "share" / node


def common_dir() -> Path:
    return session_dir() / "share" / "common"


def console_log(node: str) -> Path:
    return session_dir() / f"console-{node}.log"


def load() -> Session | None:
    path = session_dir() / SESSION_FILE
    try:
        record = json.loads(path.read_text())
        record["disk_sizes"] = tuple(record["disk_sizes"])
        record["disk_files"] = tuple(record["disk_files"])
        record["rwdirs"] = tuple(record["rwdirs"])
        record["nodes"] = tuple(NodeRun(**n) for n in record["nodes"])
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


def node_alive(node: NodeRun) -> bool:
    """Whether the node's VM process still runs (not a zombie, not a reused pid of someone else)."""
    return _proc_start(node.pid) == node.pid_start


def alive(session: Session) -> bool:
    """Whether any node of the lab still runs."""
    return any(node_alive(n) for n in session.nodes)


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


def _log_tail(node: str, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = console_log(node).read_text(errors="replace").splitlines()
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
    node_count: int = 1,
    lifetime_s: float,
    progress: Progress,
) -> Session:
    """Boot the lab's nodes in the background and wait until each one's command server answers."""
    check_spec(spec)
    refuse_second_lab()
    ensure_vng(runner)
    base = session_dir()
    shutil.rmtree(base, ignore_errors=True)  # the previous session's leftovers (its VMs are gone)
    base.mkdir(parents=True, mode=0o700)
    base.chmod(0o700)
    token = secrets.token_hex(16)
    planned = nodes.plan(node_count) if node_count > 1 else []
    segment = nodes.new_segment() if planned else None
    lab_record: dict[str, Any] = {}
    if planned:
        common = common_dir()
        common.mkdir(parents=True, mode=0o700)
        nodes.make_keys(runner, common)
        nodes.ssh_files(common, planned, GUEST_KEY_PATH)
        lab_record = {"nodes": {n.name: n.address for n in planned}, "common": str(common)}
    facts = {**hostinfo.host_facts(runner), "accel": spec.accel, "lab_kernel": kernel.version}
    started = time.time()
    runs: list[NodeRun] = []
    procs: dict[str, Callable[[], int | None]] = {}
    one_node: list[nodes.Node | None] = [None]
    for node in planned or one_node:
        name = node.name if node else "lab"
        share = share_dir(name)
        share.mkdir(parents=True, mode=0o700)
        channel = Channel(host_port=_free_port(), guest_port=GUEST_PORT)
        what: dict[str, object] = {"serve": {"token": token, "mac": channel.mac, "lifetime_s": lifetime_s}}
        node_spec = spec
        if node is not None:
            what |= {"node": {"name": node.name, "address": node.address, "mac": node.mac}, "lab": lab_record}
            # Each node may also read the lab's keys (its own share holds only its disks and spec).
            node_spec = replace(spec, rwdirs=(*spec.rwdirs, common_dir()))
        kept = kept_disks(spec, name)
        disks, guest_spec = write_share(share, node_spec, what, kept)
        hostinfo.HostShare(runner, share, facts).write_load()  # each `lab exec` refreshes the load
        argv = vng_argv(
            kernel,
            node_spec,
            guest_spec_path=guest_spec,
            share_dir=share,
            disk_paths=disks,
            kept_paths=kept,
            channel=channel,
            segment=(segment, node) if segment is not None and node is not None else None,
        )
        with console_log(name).open("wb") as log_file:
            proc = runner.start(argv, env=dict(os.environ), stdout=log_file, stderr=log_file)
        procs[name] = proc.poll
        runs.append(
            NodeRun(
                name=name,
                address=node.address if node else None,
                role=node.role if node else "worker",
                pid=proc.pid,
                pid_start=_proc_start(proc.pid),
                host_port=channel.host_port,
            )
        )
    session = Session(
        token=token,
        started=started,
        deadline=started + lifetime_s,
        kernel=kernel.version,
        accel=spec.accel,
        memory=spec.memory,
        cpus=spec.cpus,
        disk_sizes=spec.disk_sizes,
        disk_files=tuple(d.path for d in spec.disk_files),
        rwdirs=tuple(str(r) for r in spec.rwdirs),
        cwd=str(spec.cwd),
        nodes=tuple(runs),
    )
    record = base / SESSION_FILE
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(session), f)
    try:
        _wait_until_serving(session, procs, progress)
    except BaseException:
        _kill(session)
        raise
    return session


def _wait_until_serving(
    session: Session, exited: dict[str, Callable[[], int | None]], progress: Progress
) -> None:
    waiting = {n.name: n for n in session.nodes}
    next_note = 10.0
    while waiting:
        elapsed = time.time() - session.started
        for name, node in list(waiting.items()):
            code = exited[name]()
            if code is not None:
                raise LabBootError(
                    f"lab node {name}'s VM exited (code {code}) before its command server started; "
                    f"the end of {console_log(name)}:\n{_log_tail(name)}"
                )
            try:
                ping(node.host_port, session.token, timeout_s=5.0)
            except ChannelError:
                continue
            del waiting[name]
            if len(session.nodes) > 1:
                progress(f"lab: node {name} ({node.address}) up after {elapsed:.0f} s")
        if not waiting:
            return
        if elapsed > BOOT_TIMEOUT_S:
            names = ", ".join(waiting)
            raise LabBootError(f"lab node(s) {names} did not answer within {BOOT_TIMEOUT_S:.0f} s")
        if elapsed >= next_note:
            phases = ", ".join(f"{name}: {_phase(name)}" for name in waiting)
            progress(f"lab: booting ... {elapsed:.0f} s ({phases})")
            next_note = elapsed + 10.0
        time.sleep(POLL_S)


def _phase(node: str) -> str:
    """What the console last said that tells how far the boot got."""
    tail = _log_tail(node, 40)
    if "command server ready" in tail:
        return "command server starting"
    if "lab: guest ready" in tail:
        return "guest ready, preloading the skycache CLI"
    return "kernel booting, guest preparing"


def status() -> tuple[Session | None, dict[str, dict[str, Any] | None]]:
    """The session record (None without one) and each running node's server answer (None if it
    does not answer; nodes whose VM is gone are left out)."""
    session = load()
    answers: dict[str, dict[str, Any] | None] = {}
    if session is None:
        return None, answers
    for node in session.nodes:
        if not node_alive(node):
            continue
        answers[node.name] = None
        with contextlib.suppress(ChannelError):
            started = time.time()
            answer = ping(node.host_port, session.token, timeout_s=5.0)
            answer["ping_ms"] = round((time.time() - started) * 1000, 1)
            answers[node.name] = answer
    return session, answers


def down(progress: Progress) -> Session | None:
    """Power the lab off (asking each node's server first, then killing the process groups left);
    None if there is no lab."""
    session = load()
    if session is None:
        return None
    for node in session.nodes:
        if node_alive(node):
            with contextlib.suppress(ChannelError):
                request_poweroff(node.host_port, session.token)
    waited = 0.0
    while alive(session) and waited < DOWN_WAIT_S:
        time.sleep(0.5)
        waited += 0.5
    if alive(session):
        progress(f"lab: no clean poweroff after {DOWN_WAIT_S:.0f} s; killing the VMs")
    _kill(session)
    shutil.rmtree(session_dir(), ignore_errors=True)
    return session


def _kill(session: Session) -> None:
    """Kill what is left of each node's VM process group (each leads its own)."""
    for node in session.nodes:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not node_alive(node):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.pid, sig)
            for _ in range(20):
                if not node_alive(node):
                    break
                time.sleep(0.25)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(node.pid, os.WNOHANG)
