"""Where the CLI's storage, node and net verbs run: this host, or another one over SSH.

``skycache --host NAME [--ssh-config FILE] VERB ...`` (defaults ``$SKYCACHE_HOST``,
``$SKYCACHE_SSH_CONFIG``) makes every command of the verb run on NAME through
:class:`skycache.runner.SshTarget`: the library reads and changes a host only through its runner, so
choosing the runner's target is all it takes. The root callback (cli/main.py) selects the target once
per command line; the verbs get their runner from :func:`skycache.cli.common.cli_runner`.

Only the verbs in :data:`REMOTE_VERBS` take a target. The lab verbs (and validate, bench, sim) run on
this machine whatever ``$SKYCACHE_HOST`` says, and refuse an explicit ``--host``: silently running
them here when the user named another host would be worse than an error.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from skycache.errors import InvalidInput
from skycache.runner import LOCAL, SshTarget, Target

HOST_ENV = "SKYCACHE_HOST"
SSH_CONFIG_ENV = "SKYCACHE_SSH_CONFIG"

# Top-level verb -> the sub-verbs that take --host (None: all of them). net's own sub-verbs drive tc,
# ip and iptables through the runner; the bench portion's `net nat-bench` builds namespaces and runs
# iperf3 here, so it stays local.
REMOTE_VERBS: Mapping[str, frozenset[str] | None] = {
    "repo": None,
    "image": None,
    "export": None,
    "attach": None,
    "detach": None,
    "inventory": None,
    "teardown": None,
    "node": None,
    "cache": None,
    "disk": None,
    "net": frozenset({"shape", "unshape", "status", "isolate", "unisolate"}),
}

# What ssh takes as a destination: [USER@]HOST, HOST a name, a ssh_config alias or an IPv4 address,
# or an IPv6 address. A leading '-' would be read as an option (-oProxyCommand=...): never allowed.
_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?"
_IPV6 = r"[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"
_HOST_RE = re.compile(rf"(?:(?P<user>{_USER})@)?(?P<host>{_NAME}|{_IPV6})")

# The remote side needs skycache-agent (and the Python with rtslib) from the same installation; a
# non-interactive ssh login does not have the virtualenv's bin/ on its PATH. The lab's nodes share
# this machine's root filesystem, and a testbed installs skycache at the same path on every node.
AGENT_BIN_DIR = str(Path(sys.prefix) / "bin")

# Root options (cli/main.py) that take a value: their value is not the verb.
ROOT_VALUE_OPTIONS = ("--host", "--ssh-config")


@dataclass(frozen=True)
class Selection:
    """The target of this command line (``host`` None: this host)."""

    host: str | None = None
    user: str | None = None
    config_file: str | None = None

    def target(self) -> Target:
        if self.host is None:
            return LOCAL
        return SshTarget(self.host, user=self.user, config_file=self.config_file, path_prefix=AGENT_BIN_DIR)


def other(text: str) -> Target:
    """Another host of this command line (``attach --chap-from HOST``), reached with the same
    ``--ssh-config``: the worker attaches here and reads the repository's secret there."""
    user, name = parse_host(text)
    return Selection(name, user, _selected.config_file).target()


_selected = Selection()
_argv: tuple[str, ...] = ()


def current() -> Selection:
    return _selected


def reset(argv: Sequence[str] = ()) -> None:
    """A new command line (``argv``, what follows ``skycache``) starts on this host.

    run_app calls this first: the root callback, which selects the target, sees only its own options,
    not the verb words that say whether a target applies.
    """
    global _selected, _argv
    _selected = Selection()
    _argv = tuple(argv)


def command_line() -> tuple[str, ...]:
    return _argv


def parse_host(text: str) -> tuple[str | None, str]:
    """``[USER@]HOST`` -> (user, host); a one-line error naming the bad value otherwise."""
    m = _HOST_RE.fullmatch(text)
    if m is None:
        raise InvalidInput(
            f"--host {text!r} is not a host name, ssh_config alias or address ([USER@]HOST, "
            "letters, digits, '.', '-', '_'; not starting with '-')"
        )
    return m.group("user"), m.group("host")


def check_config(text: str) -> str:
    """The absolute path of a readable regular file (what ``ssh -F`` takes), or a one-line error."""
    if not text:
        raise InvalidInput("--ssh-config: empty path")
    path = Path(text).absolute()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidInput(f"--ssh-config {text}: no such file") from None
    except OSError as exc:
        raise InvalidInput(f"--ssh-config {text}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"--ssh-config {text}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"--ssh-config {text}: not readable")
    return str(path)


def verb_words(argv: Sequence[str]) -> list[str]:
    """The words of a command line from its verb on (the root options and their values skipped)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ROOT_VALUE_OPTIONS:
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            return [w for w in argv[i:] if not w.startswith("-")]
    return []


def takes_host(argv: Sequence[str]) -> bool:
    """Whether the verb of the command line ``argv`` runs on a target."""
    names = verb_words(argv)
    if not names or names[0] not in REMOTE_VERBS:
        return False
    subs = REMOTE_VERBS[names[0]]
    return subs is None or (len(names) > 1 and names[1] in subs)


def select(
    host: str | None, config: str | None, argv: Sequence[str], *, given: frozenset[str] = frozenset()
) -> None:
    """Choose the target of the command line ``argv`` (what follows ``skycache``).

    ``given``: which of "host" and "ssh_config" were on the command line (not only in the
    environment). ``$SKYCACHE_HOST`` applies to the verbs that take a target and is ignored by the
    others; ``--host`` on the command line is refused for a verb that would run here anyway.
    """
    global _selected
    _selected = Selection()
    words = verb_words(argv)
    if not takes_host(argv):
        if "host" in given and words:
            raise InvalidInput(
                f"--host does not apply to `{' '.join(words[:2])}`: it runs on this machine "
                "(they apply to repo, image, export, attach, detach, inventory, teardown, node, cache, disk "
                "and net shape/unshape/status/isolate/unisolate)"
            )
        return
    if "host" in given and not host:
        raise InvalidInput("--host: empty host name")
    # The file serves every host the command line names: --host, and `attach --chap-from HOST`.
    config_file = check_config(config) if config else None
    if not host:
        _selected = Selection(config_file=config_file)
        return
    user, name = parse_host(host)
    _selected = Selection(name, user, config_file)
