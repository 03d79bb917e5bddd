"""``where = "hosts"``: fio's client/server mode (pure helpers: host entries, runners, fio's argv).

Each listed host runs ``fio --server`` (started by its owner or config management; skycache never
starts daemons on remote machines). skycache builds the stack on every host through a runner for that
host (the local runner for localhost, ssh otherwise: :class:`SshSettings` say how), then runs fio
once, locally, as the client of all of them:
``fio --output-format=json+ --output=OUT --client=H1 JOB1 --client=H2 JOB2``. Each host gets its own
job file because the device path fio opens is the one built on that host.

fio writes the bw/iops/lat logs of a client run on the client, at the path the job file names, with
the server's address appended (``..._iops.1.log.<addr>``); :func:`restore_log_names` takes the suffix
off again so fio-plot reads the directory as is.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skycache.bench import fioopts
from skycache.errors import InvalidInput
from skycache.numbers import parse_port
from skycache.runner import Runner, SshTarget, SystemRunner

DEFAULT_PORT = 8765  # fio's default server port
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Host:
    """One fio server: ``name`` (a hostname or an IP address) and its port."""

    name: str
    port: int = DEFAULT_PORT

    @property
    def ipv6(self) -> bool:
        return ":" in self.name

    @property
    def is_local(self) -> bool:
        return self.name in LOCAL_NAMES

    @property
    def fio_address(self) -> str:
        """The ``--client=`` string: fio's ``[ip6:]host,port`` form (fio splits host and port at ',')."""
        return f"ip6:{self.name},{self.port}" if self.ipv6 else f"{self.name},{self.port}"

    @property
    def label(self) -> str:
        """How the host is shown (tidy column ``host``, manifest): ``name:port`` / ``[v6]:port``."""
        return f"[{self.name}]:{self.port}" if self.ipv6 else f"{self.name}:{self.port}"

    @property
    def safe(self) -> str:
        """The host as a file or directory name."""
        return _SAFE.sub("_", self.label).strip("_")


def parse_host(entry: str) -> Host:
    """``name``, ``name:port``, ``ip:port``, an IPv6 address, or ``[ipv6]:port``; ValueError (one
    line, the problem only: the caller names the file and key) on anything else."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError("empty host")
    if entry != entry.strip() or any(c.isspace() for c in entry):
        raise ValueError("whitespace in a host entry")
    name, port = entry, DEFAULT_PORT
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0 or entry[close + 1 : close + 2] != ":":
            raise ValueError("use [ipv6]:port for an IPv6 address with a port")
        name, port = entry[1:close], _port(entry[close + 2 :])
        _ipv6(name)
    elif entry.count(":") > 1:
        _ipv6(entry)
    elif ":" in entry:
        name, _, raw_port = entry.partition(":")
        port = _port(raw_port)
    if ":" not in name:
        _hostname(name)
    return Host(name, port)


def _port(raw: str) -> int:
    try:  # "²".isdigit() is True and int() of 5,000 digits raises: the one grammar decides
        return parse_port(raw, what="port")
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


def _ipv6(name: str) -> None:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        raise ValueError(f"{name!r} is not an IPv6 address (a name takes one ':port')") from None


def _hostname(name: str) -> None:
    if not name:
        raise ValueError("empty host name")
    if len(name) > 253 or not all(_LABEL.fullmatch(part) for part in name.split(".")):
        raise ValueError(f"{name!r} is not a host name or IP address (name, name:port or ip:port)")


def check_hosts(entries: Sequence[str]) -> list[tuple[int, str, str]]:
    """The problems of a scenario's ``hosts`` list as (index, entry, problem); empty when fine."""
    problems: list[tuple[int, str, str]] = []
    seen: dict[Host, int] = {}
    for i, entry in enumerate(entries):
        try:
            host = parse_host(entry)
        except ValueError as exc:
            problems.append((i, entry, str(exc)))
            continue
        if host in seen:
            problems.append((i, entry, f"the same fio server as hosts[{seen[host]}]"))
        seen.setdefault(host, i)
    return problems


@dataclass(frozen=True)
class SshSettings:
    """How ssh reaches a fio server's machine to build its stacks (``None``: ssh's own default, which
    a ``config_file`` can set). The ssh destination is the host's name from ``hosts``; a different
    address or alias belongs in the config file (``Host``/``HostName``)."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    config_file: str | None = None  # ssh -F
    path_prefix: str | None = None  # put before PATH there: where skycache-agent (and rtslib) live
    connect_timeout_s: int = 10

    def target(self, name: str) -> SshTarget:
        # Every field here is an SshTarget field of the same name: a new one passes through unchanged.
        return SshTarget(name, **asdict(self))


@dataclass(frozen=True)
class SshHosts:
    """A scenario's ssh settings: ``default`` for every host, ``per_host`` by host name (no port)."""

    default: SshSettings = SshSettings()
    per_host: Mapping[str, SshSettings] = field(default_factory=dict)

    def settings(self, name: str) -> SshSettings:
        return self.per_host.get(name, self.default)


def runner_for(host: Host, local: Runner, ssh: SshSettings | None = None) -> Runner:
    """Where the stack for ``host`` is built: the local runner for this machine, ssh otherwise."""
    if host.is_local:
        return local
    return SystemRunner((ssh or SshSettings()).target(host.name))


def reached(runner: Runner) -> str:
    """How a site's runner reaches its host, for the manifest: ``local`` or ``ssh [-p N] user@host``
    (the destination only: no key or config file path, nothing secret)."""
    target = runner.target
    if not isinstance(target, SshTarget):
        return "local" if target.local else target.name
    port = f"-p {target.port} " if target.port is not None else ""
    return f"ssh {port}{target.name}"


def client_argv(pairs: Sequence[tuple[Host, Path]], json_path: Path) -> list[str]:
    """fio as the client of every host, each with its own job file (one fio process for all)."""
    argv = ["fio", f"--output-format={fioopts.OUTPUT_FORMAT}", f"--output={json_path}"]
    for host, job in pairs:
        argv += [f"--client={host.fio_address}", str(job)]
    return argv


def restore_log_names(log_dir: Path) -> list[Path]:
    """Rename ``X.log.<server>`` (what a fio client writes) to ``X.log`` (what fio-plot reads)."""
    renamed = []
    for p in sorted(log_dir.glob("*.log.*")):
        target = p.with_name(p.name[: p.name.index(".log.") + len(".log")])
        if not target.exists():
            p.rename(target)
            renamed.append(target)
    return renamed
