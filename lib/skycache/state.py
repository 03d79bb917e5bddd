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
from pathlib import PurePosixPath
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


def read_json(runner: Runner, path: str | PurePosixPath, default: Any = None) -> Any:
    """A JSON file of the state directory; ``default`` when it does not exist.

    Corrupt content is a one-line error naming the file, never a traceback.
    """
    text = runner.read_text(path)
    if text is None:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"state file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def write_command(path: str | PurePosixPath, content: str | Secret) -> Command:
    """Write ``content`` to ``path`` on the runner's host: atomically, 0600, parents 0700."""
    return Command((AGENT, "write-file", str(path), "--mode", "0600"), stdin=content)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
