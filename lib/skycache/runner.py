"""The one place where skycache starts processes, and reads the files of the host it manages.

Every external command is an argv list (never a shell string), run with ``LC_ALL=C`` so that parsers
see untranslated output, a timeout, and captured stdout/stderr. Failures raise :class:`CommandError`,
which carries everything needed to understand them. Secrets are wrapped in :class:`Secret`; their
values are handed to the process but masked in logs, plans and error text.

:class:`Runner` is the protocol the whole library is written against; :class:`SystemRunner` is the
real one, on a target: the local host, or a remote host reached with the OpenSSH client in batch mode,
so the same library code drives a lab guest, a workstation or a testbed node. Reads of the target's
files, sysfs and device links (:meth:`Runner.read_text`, :meth:`Runner.exists`,
:meth:`Runner.list_dir`, :meth:`Runner.resolve`) go through the target too: in-process on the local
host, as ``cat``/``test``/``ls``/``readlink`` over ssh. Changes to files, sysfs and configfs are
commands of skycache's own target-side helper, ``skycache-agent`` (:mod:`skycache.agent`), which the
local target runs in this process (same argv in the command log, no interpreter start).

Nothing here decides what a dry run does: plans are data (:mod:`skycache.plan`) and a dry run only
prints them. :meth:`Runner.run` is for mutating commands (the ones a plan lists), :meth:`Runner.query`
for read-only ones.

Profiling: with ``SKYCACHE_COMMAND_LOG=FILE`` set, every finished command appends one JSON line to
FILE (start time, seconds, exit code, pid of the caller, ``run`` or ``query``, attempt, masked argv,
and for a remote target its name): where a slow verb spends its time, and what a real run executed
(and where), to hold against its dry run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Protocol

from skycache.errors import SkycacheError

log = logging.getLogger("skycache.runner")
COMMAND_LOG_ENV = "SKYCACHE_COMMAND_LOG"

MASK = "********"
DEFAULT_TIMEOUT_S = 600.0

# Which Debian package provides a program, for the "install it" hint of MissingProgram.
DEBIAN_PACKAGES: Mapping[str, str] = {
    "lvm": "lvm2",
    "lvcreate": "lvm2",
    "lvs": "lvm2",
    "vgs": "lvm2",
    "pvs": "lvm2",
    "vgcreate": "lvm2",
    "pvcreate": "lvm2",
    "lvremove": "lvm2",
    "vgremove": "lvm2",
    "lvchange": "lvm2",
    "vgchange": "lvm2",
    "pvremove": "lvm2",
    "dmsetup": "dmsetup",
    "iscsiadm": "open-iscsi",
    "iscsid": "open-iscsi",
    "fio": "fio",
    "thin_check": "thin-provisioning-tools",
    "cache_check": "thin-provisioning-tools",
    "tc": "iproute2",
    "ip": "iproute2",
    "iptables": "iptables",
    "nft": "nftables",
    "conntrack": "conntrack",
    "iperf3": "iperf3",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "losetup": "mount",
    "blockdev": "util-linux",
    "wipefs": "util-linux",
    "blkdiscard": "util-linux",
    "mkswap": "util-linux",
    "modprobe": "kmod",
    "depmod": "kmod",
    "udevadm": "udev",
    "ssh": "openssh-client",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "truncate": "coreutils",
    "dd": "coreutils",
    "sha256sum": "coreutils",
    "sync": "coreutils",
    "vng": "virtme-ng (pip)",
}


@dataclass(frozen=True)
class Secret:
    """A value that must reach the process but never a log, a plan or an error message."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"


Arg = str | Secret


def _plain(arg: Arg) -> str:
    return arg.value if isinstance(arg, Secret) else arg


def _secret_values(argv: Iterable[Arg], env: Mapping[str, Arg] | None) -> list[str]:
    values = [a.value for a in argv if isinstance(a, Secret)]
    if env:
        values += [v.value for v in env.values() if isinstance(v, Secret)]
    # Longest first so that a secret containing another is masked whole.
    return sorted({v for v in values if v}, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in ``text``."""
    for value in secrets:
        text = text.replace(value, MASK)
    return text


def render(argv: Sequence[Arg]) -> str:
    """A copy-pasteable, masked rendering of an argv list (for logs, plans and errors)."""
    return shlex.join(str(a) for a in argv)


class CommandError(SkycacheError):
    """A command exited non-zero (or timed out). Secrets are already masked in every field."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        *,
        timeout: float | None = None,
        target: str = "local",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timeout = timeout
        self.target = target
        super().__init__(self._format())

    def _format(self) -> str:
        cmd = shlex.join(self.argv)
        where = "" if self.target == "local" else f" on {self.target}"
        if self.timeout is not None:
            head = f"command timed out after {self.timeout:g}s{where}: {cmd}"
        else:
            head = f"command failed with exit code {self.returncode}{where}: {cmd}"
        detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
        # The last lines of stderr are where tools put the reason; keep the message short.
        return head if not detail else f"{head}: {' | '.join(detail[-3:])}"


class MissingProgram(SkycacheError):
    """The program of an argv is not installed on the target."""

    def __init__(self, program: str, target: str = "local") -> None:
        self.program = program
        package = DEBIAN_PACKAGES.get(PurePath(program).name)
        hint = f" (install the Debian package {package!r})" if package else ""
        where = "" if target == "local" else f" on {target}"
        super().__init__(f"program {program!r} not found{where}{hint}")


# ssh exits 255 when ssh itself failed (name not resolved, connection refused or timed out, key
# refused); otherwise with the remote command's status (ssh(1), EXIT STATUS).
SSH_FAILED = 255


class HostUnreachable(SkycacheError):
    """ssh could not run the command on the remote target at all."""

    def __init__(self, target: str, stderr: str) -> None:
        self.target = target
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else "no reason given"
        super().__init__(f"cannot reach host {target!r} over ssh (ssh exit {SSH_FAILED}): {why}")


@dataclass(frozen=True)
class Completed:
    """The result of a command that ran."""

    argv: tuple[str, ...]  # masked
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Retry:
    """Retry a command on known-transient exit codes (and only those), with exponential backoff.

    os-brick's lesson: iscsiadm exit 6 (database busy) and 15 (session exists, racing login), or
    lvremove racing udev, go away on their own; anything else is a real error and is raised at once.
    """

    exit_codes: frozenset[int]
    attempts: int = 5
    first_delay_s: float = 0.5
    stderr_contains: tuple[str, ...] = ()

    def applies(self, returncode: int | None, stderr: str) -> bool:
        if returncode in self.exit_codes:
            return True
        return any(s in stderr for s in self.stderr_contains)


class Target(Protocol):
    """Where commands run."""

    @property
    def name(self) -> str: ...

    @property
    def local(self) -> bool:
        """Whether this is the host skycache itself runs on (files are then read in-process)."""
        ...

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The local argv and environment that run ``argv`` with ``env`` on this target."""
        ...

    def has_program(self, program: str) -> bool | None:
        """Whether ``program`` exists there; ``None`` when that cannot be told cheaply."""
        ...


@dataclass(frozen=True)
class LocalTarget:
    name: str = "local"
    local: bool = True

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        full = dict(os.environ)
        full.update(env)
        full["LC_ALL"] = "C"
        return list(argv), full

    def has_program(self, program: str) -> bool | None:
        return shutil.which(program) is not None


@dataclass(frozen=True)
class SshTarget:
    """A remote host reached with ``ssh -o BatchMode=yes`` (keys only: never prompt for a password).

    ``config_file`` is ssh's ``-F``: that file instead of ``~/.ssh/config`` (host aliases, known hosts,
    connection sharing); the options given here come after it on the command line, so they win.
    """

    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    connect_timeout_s: int = 10
    # Prepended to PATH there: a non-interactive ssh login does not see a virtualenv's bin/, where
    # skycache-agent and the Python that has rtslib live.
    path_prefix: str | None = None
    config_file: str | None = None
    local: bool = False

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_argv(self) -> list[str]:
        argv = ["ssh"] + (["-F", self.config_file] if self.config_file is not None else [])
        argv += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.identity_file is not None:
            argv += ["-i", self.identity_file]
        argv += [self.name, "--"]
        return argv

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        # ssh hands the remote side one string for its login shell; shlex.join quotes each word so
        # the remote argv is exactly ours. `env` sets LC_ALL and the extra variables there.
        extra = dict(env)
        if self.path_prefix:
            extra["PATH"] = f"{self.path_prefix}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        remote = ["env", "LC_ALL=C", *(f"{k}={v}" for k, v in extra.items()), *argv]
        local_env = dict(os.environ)
        local_env["LC_ALL"] = "C"
        return [*self.ssh_argv(), shlex.join(remote)], local_env

    def has_program(self, program: str) -> bool | None:
        return None


LOCAL = LocalTarget()
AGENT = "skycache-agent"  # skycache's target-side helper (skycache.agent), run through the runner

LineSink = Callable[[str], None]


class Runner(Protocol):
    """What the library needs from a command runner (the real one is :class:`SystemRunner`)."""

    @property
    def target(self) -> Target: ...

    def run(
        self,
        argv: Sequence[Arg],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: Mapping[str, Arg] | None = None,
        retry: Retry | None = None,
    ) -> Completed:
        """Run a command that changes the system."""
        ...

    def query(
        self,
        argv: Sequence[Arg],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: Mapping[str, Arg] | None = None,
        retry: Retry | None = None,
    ) -> Completed:
        """Run a read-only command."""
        ...

    def read_text(self, path: str | PurePath) -> str | None:
        """The target's file (or sysfs attribute) as text; ``None`` when it does not exist."""
        ...

    def exists(self, path: str | PurePath) -> bool:
        """Whether the path exists on the target (a symlink counts when its target exists)."""
        ...

    def list_dir(self, path: str | PurePath) -> list[str] | None:
        """The names in a directory of the target, sorted; ``None`` when it is not a directory."""
        ...

    def resolve(self, path: str | PurePath) -> str | None:
        """The target's canonical path of ``path`` (symlinks followed); ``None`` when it does not exist."""
        ...


class SystemRunner:
    """Runs argv lists on one target. Inject a different target (remote) to change where."""

    def __init__(
        self,
        target: Target = LOCAL,
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._target = target
        self.default_timeout_s = default_timeout_s
        self._sleep = sleep

    @property
    def target(self) -> Target:
        return self._target

    # -- commands -------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[Arg],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: Mapping[str, Arg] | None = None,
        retry: Retry | None = None,
    ) -> Completed:
        """Run a command that changes the system."""
        return self._execute(argv, timeout_s, check, stdin, env, retry, kind="run")

    def query(
        self,
        argv: Sequence[Arg],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: Mapping[str, Arg] | None = None,
        retry: Retry | None = None,
    ) -> Completed:
        """Run a read-only command."""
        return self._execute(argv, timeout_s, check, stdin, env, retry, kind="query")

    def stream(
        self,
        argv: Sequence[Arg],
        *,
        on_line: LineSink,
        timeout_s: float | None = None,
        env: Mapping[str, Arg] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> int:
        """Run a long command, handing each output line (stdout and stderr merged) to ``on_line``.

        Returns the exit code instead of raising, because the caller (e.g. ``lab run``) passes it on.
        ``on_start`` gets the pid, which leads its own process group: a caller that runs several
        streams in threads uses it to signal them all on Ctrl-C.
        """
        secrets = _secret_values(argv, env)
        masked = [str(a) for a in argv]
        local_argv, local_env = self._wrap(argv, env)
        log.debug("stream: %s", render(argv))
        started = time.time()
        try:
            proc = subprocess.Popen(
                local_argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=local_env,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise MissingProgram(local_argv[0], self.target.name) from exc
        if on_start is not None:
            on_start(proc.pid)
        timed_out = threading.Event()
        limit = timeout_s if timeout_s is not None else self.default_timeout_s

        def kill_on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(limit, kill_on_timeout)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                on_line(mask(line.rstrip("\n"), secrets))
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc)  # Ctrl-C or a failing sink: leave no orphan (e.g. a qemu) behind
            raise
        finally:
            timer.cancel()
        _log_command(masked, started, returncode, "stream", 1, self.target)
        if timed_out.is_set():
            raise CommandError(masked, None, "", "", timeout=limit, target=self.target.name)
        return returncode

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a command that outlives this call, as the leader of its own process group, with
        exactly ``env`` and stdin from /dev/null; the caller waits for it (or leaves it running).

        For the lab's long-lived parts: ``lab up`` starts the VM (its output to a log file) and the
        lab's command server starts each ``lab exec`` command (its output to pipes it relays).
        """
        if not self.target.local:
            raise SkycacheError("start is only for a local runner")
        if not argv:
            raise ValueError("empty argv")
        log.debug("start: %s", render(argv))
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise MissingProgram(argv[0]) from exc
        _log_command([str(a) for a in argv], time.time(), None, "start", 1, self.target)
        return proc

    def replace_process(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Become ``argv`` (exec): used where the caller's exit code must be the command's own,
        e.g. the lab's guest entry point handing over to the user's command."""
        if not self.target.local:
            raise SkycacheError("replace_process is only for a local runner")
        log.debug("exec: %s", render(argv))
        full = dict(os.environ)
        full.update(env)
        full["LC_ALL"] = "C"
        try:
            os.execvpe(argv[0], list(argv), full)  # noqa: S606 (argv list, no shell)
        except FileNotFoundError as exc:
            raise MissingProgram(argv[0]) from exc

    # -- the target's files ---------------------------------------------------------------------------

    def read_text(self, path: str | PurePath) -> str | None:
        if self.target.local:
            try:
                return Path(path).read_text(errors="replace")
            except (FileNotFoundError, NotADirectoryError):
                return None
        done = self.query(["cat", "--", str(path)], check=False)
        if done.returncode == 0:
            return done.stdout
        if not self.exists(path):
            return None
        # There but unreadable (a directory in a file's place, no permission): the same OSError a
        # local read raises, so callers name the path instead of taking it for missing.
        reason = (done.stderr.strip().splitlines() or [f"cat exited {done.returncode}"])[-1]
        raise OSError(errno.EIO, reason, str(path))

    def exists(self, path: str | PurePath) -> bool:
        if self.target.local:
            return Path(path).exists()
        return self.query(["test", "-e", str(path)], check=False).returncode == 0

    def list_dir(self, path: str | PurePath) -> list[str] | None:
        if self.target.local:
            p = Path(path)
            return sorted(c.name for c in p.iterdir()) if p.is_dir() else None
        done = self.query(["ls", "-1A", "--", str(path)], check=False)
        if done.returncode != 0 or not self.exists(path):
            return None
        return sorted(line for line in done.stdout.splitlines() if line)

    def resolve(self, path: str | PurePath) -> str | None:
        if self.target.local:
            p = Path(path)
            return str(p.resolve()) if p.exists() else None
        done = self.query(["readlink", "-e", "--", str(path)], check=False)
        return done.stdout.strip() or None if done.returncode == 0 else None

    # -- internals ------------------------------------------------------------------------------------

    def _wrap(self, argv: Sequence[Arg], env: Mapping[str, Arg] | None) -> tuple[list[str], dict[str, str]]:
        if not argv:
            raise ValueError("empty argv")
        if isinstance(argv, str):  # a str is a Sequence too: refuse the shell-string mistake early
            raise TypeError("argv must be a list of arguments, not a string")
        plain_env = {k: _plain(v) for k, v in (env or {}).items()}
        return self.target.wrap([_plain(a) for a in argv], plain_env)

    def _execute(
        self,
        argv: Sequence[Arg],
        timeout_s: float | None,
        check: bool,
        stdin: str | None,
        env: Mapping[str, Arg] | None,
        retry: Retry | None,
        *,
        kind: str,
    ) -> Completed:
        secrets = _secret_values(argv, env)
        masked = [str(a) for a in argv]
        local_argv, local_env = self._wrap(argv, env)
        limit = timeout_s if timeout_s is not None else self.default_timeout_s
        attempts = retry.attempts if retry else 1
        delay = retry.first_delay_s if retry else 0.0
        where = "" if self.target.local else f" on {self.target.name}"
        for attempt in range(1, attempts + 1):
            log.debug("%s%s: %s", kind, where, render(argv))
            started = time.time()
            if self.target.local and argv and _plain(argv[0]) == AGENT:
                # skycache's own helper: the same code in this process, no interpreter start.
                from skycache import agent

                proc = agent.run_inprocess([_plain(a) for a in argv[1:]], stdin)
            else:
                try:
                    proc = _run_in_group(local_argv, stdin, local_env, limit)
                except FileNotFoundError as exc:
                    raise MissingProgram(local_argv[0], self.target.name) from exc
                except subprocess.TimeoutExpired as exc:
                    out = _text(exc.stdout)
                    err = _text(exc.stderr)
                    _log_command(masked, started, None, kind, attempt, self.target)
                    raise CommandError(
                        masked,
                        None,
                        mask(out, secrets),
                        mask(err, secrets),
                        timeout=limit,
                        target=self.target.name,
                    ) from exc
            _log_command(masked, started, proc.returncode, kind, attempt, self.target)
            stdout = mask(proc.stdout, secrets)
            stderr = mask(proc.stderr, secrets)
            if proc.returncode == SSH_FAILED and isinstance(self.target, SshTarget):
                # Never a result, even with check=False: `test -e` failing this way does not mean
                # "missing", it means nothing was asked.
                raise HostUnreachable(self.target.name, stderr)
            if proc.returncode == 0:
                return Completed(tuple(masked), proc.returncode, stdout, stderr)
            if retry and attempt < attempts and retry.applies(proc.returncode, proc.stderr):
                log.info(
                    "transient failure (exit %d), retry %d/%d in %.1fs: %s",
                    proc.returncode,
                    attempt,
                    attempts - 1,
                    delay,
                    render(argv),
                )
                self._sleep(delay)
                delay *= 2
                continue
            if not check:
                return Completed(tuple(masked), proc.returncode, stdout, stderr)
            raise CommandError(masked, proc.returncode, stdout, stderr, target=self.target.name)
        raise AssertionError("unreachable")  # pragma: no cover


def _log_command(
    masked_argv: list[str], started: float, returncode: int | None, kind: str, attempt: int, target: Target
) -> None:
    """Append one finished command to $SKYCACHE_COMMAND_LOG, when set (see the module docstring)."""
    path = os.environ.get(COMMAND_LOG_ENV)
    if not path:
        return
    record = {
        "t": round(started, 3),
        "s": round(time.time() - started, 3),
        "rc": returncode,
        "pid": os.getpid(),
        "kind": kind,
        "attempt": attempt,
        "argv": masked_argv,
    }
    if not target.local:
        record["target"] = target.name  # which host ran it (the argv is the command there, not ssh's)
    with contextlib.suppress(OSError), Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the process and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _run_in_group(
    argv: list[str], stdin: str | None, env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """subprocess.run, except that a timeout kills the whole process group, not just the child:
    a command such as vng starts qemu, which would otherwise outlive the timeout."""
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout_s, output=out, stderr=err) from exc
        except BaseException:
            _kill_group(proc)
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
