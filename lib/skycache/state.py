"""Where skycache keeps the little it must remember itself: CHAP secrets, the saved target config,
the registry of file repositories, and lock files.

Everything else is read from the system's own records (LVM tags, dm tables, configfs, iSCSI
sessions), so losing this directory loses secrets and file-repository names, nothing that teardown
needs to find owned kernel objects.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/etc/skycache"
DEFAULT_RUN_DIR = "/run/skycache"


def state_dir() -> Path:
    """``$SKYCACHE_STATE_DIR`` or /etc/skycache."""
    return Path(os.environ.get("SKYCACHE_STATE_DIR", DEFAULT_STATE_DIR))


def secrets_dir() -> Path:
    return state_dir() / "secrets"


def run_dir() -> Path:
    """Lock files (``$SKYCACHE_RUN_DIR`` or /run/skycache): gone at reboot, like the locks."""
    return Path(os.environ.get("SKYCACHE_RUN_DIR", DEFAULT_RUN_DIR))


def write_private(path: Path, data: str) -> None:
    """Write ``data`` atomically (temp file + rename) with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_private(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive advisory lock (fcntl.flock) on ``run_dir()/NAME.lock``; released on exit or death."""
    d = run_dir()
    d.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in name)
    with (d / f"{safe}.lock").open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
