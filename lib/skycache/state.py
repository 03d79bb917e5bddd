"""Where skycache keeps the little it must remember itself, on the host it manages: CHAP secrets, the
saved target configuration, the registry of file repositories, the VM-disk notes.

Everything else is read from the system's own records (LVM tags, dm tables, configfs, iSCSI
sessions), so losing this directory loses secrets and file-repository names, nothing that teardown
needs to find owned kernel objects. The directory is on the runner's host: it is read through the
runner (:func:`read_json`) and written by ``skycache-agent write-file`` commands in plans
(:func:`write_command`): atomically, mode 0600, in directories made 0700.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from skycache.errors import InvalidInput
from skycache.plan import Command
from skycache.runner import AGENT, Runner, Secret

DEFAULT_STATE_DIR = "/etc/skycache"


def state_dir() -> PurePosixPath:
    """``$SKYCACHE_STATE_DIR`` or /etc/skycache (a path on the managed host)."""
    return PurePosixPath(os.environ.get("SKYCACHE_STATE_DIR", DEFAULT_STATE_DIR))


def secrets_dir() -> PurePosixPath:
    return state_dir() / "secrets"


def check_dir(runner: Runner) -> None:
    """Refuse a state directory that is not a directory or that others may write.

    The directory holds CHAP secrets and the registry that says which directories skycache may
    delete files in: a directory anyone can write lets anyone plant or swap those files. Checked for
    the local host in-process; on a remote host ``skycache-agent write-file`` makes the same check
    where it writes (no extra ssh round trip per read).
    """
    if not runner.target.local:
        return
    d = state_dir()
    try:
        info = Path(d).stat()
    except (FileNotFoundError, NotADirectoryError):
        return  # made 0700 on first write (skycache-agent write-file)
    except OSError as exc:
        raise InvalidInput(f"state directory {d}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"state directory {d} is not a directory (set SKYCACHE_STATE_DIR to another path)")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise InvalidInput(f"state directory {d} is writable by others (mode {mode:04o}): chmod 0700 {d}")


def read_json(runner: Runner, path: str | PurePosixPath, default: Any = None) -> Any:
    """A JSON file of the state directory; ``default`` when it does not exist.

    Corrupt content, a directory in the file's place or a state directory that is a file is a
    one-line error naming the path, never a traceback.
    """
    if PurePosixPath(path).is_relative_to(state_dir()):
        check_dir(runner)
    try:
        text = runner.read_text(path)
    except OSError as exc:  # a directory where the file should be, no permission
        raise InvalidInput(f"state file {path}: cannot be read ({exc.strerror or exc})") from None
    if text is None:
        return default
    if "\0" in text or "\ufffd" in text:
        raise InvalidInput(f"state file {path} is not valid JSON (binary content)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"state file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InvalidInput(f"state file {path} is not valid JSON (nested too deeply)") from None


def write_command(path: str | PurePosixPath, content: str | Secret) -> Command:
    """Write ``content`` to ``path`` on the runner's host: atomically, 0600, parents 0700.

    In the state directory the agent also makes the directories 0700 whatever the umask and refuses
    one that others may write (``--private-dir``), on a remote host as on this one.
    """
    argv: tuple[str, ...] = (AGENT, "write-file", str(path), "--mode", "0600")
    if PurePosixPath(path).is_relative_to(state_dir()):
        argv += ("--private-dir", str(state_dir()))
    return Command(argv, stdin=content)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
