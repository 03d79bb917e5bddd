"""Loop devices over sparse backing files (repositories and caches for experiments).

Owned loop devices are recognised by their backing file, whose name starts with ``skycache-``: the
kernel records that path (``losetup --list``), so a crash leaves enough to find and detach them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from skycache.errors import InvalidInput
from skycache.ownership import NAME_PREFIX, require_marked_name
from skycache.runner import Retry, Runner

# losetup --find races with another losetup taking the same free device ("device or resource busy").
ATTACH_RETRY = Retry(exit_codes=frozenset(), attempts=4, first_delay_s=0.3, stderr_contains=("busy",))
DETACH_RETRY = Retry(exit_codes=frozenset(), attempts=5, first_delay_s=0.3, stderr_contains=("busy",))


@dataclass(frozen=True)
class Loop:
    device: str  # /dev/loopN
    backing_file: str  # as the kernel recorded it; "(deleted)" suffix when the file was unlinked
    read_only: bool = False

    @property
    def owned(self) -> bool:
        return Path(self.backing_file.removesuffix(" (deleted)")).name.startswith(NAME_PREFIX)


LIST_ARGV = ["losetup", "--list", "--json", "-O", "NAME,BACK-FILE,RO"]


def parse_list(text: str) -> list[Loop]:
    """``losetup --list --json -O NAME,BACK-FILE,RO`` (empty output when no loop is set up)."""
    if not text.strip():
        return []
    loops = []
    for entry in json.loads(text).get("loopdevices", []):
        ro = entry.get("ro")
        loops.append(
            Loop(
                device=str(entry["name"]),
                backing_file=str(entry.get("back-file") or ""),
                read_only=ro in (True, 1, "1"),
            )
        )
    return loops


def list_loops(runner: Runner) -> list[Loop]:
    return parse_list(runner.query(LIST_ARGV).stdout)


def owned_loops(runner: Runner) -> list[Loop]:
    return [lp for lp in list_loops(runner) if lp.owned]


def find(runner: Runner, backing_file: str | Path) -> list[str]:
    """Loop devices attached to ``backing_file``."""
    target = str(Path(backing_file).resolve())
    return [lp.device for lp in list_loops(runner) if lp.backing_file.removesuffix(" (deleted)") == target]


def check_backing_name(backing_file: str | Path) -> Path:
    p = Path(backing_file)
    require_marked_name(p.name, what="loop backing file")
    return p


def create_sparse(runner: Runner, backing_file: str | Path, size: int) -> Path:
    """Make a sparse file of ``size`` bytes (named ``skycache-*``); refuses to overwrite a file."""
    p = check_backing_name(backing_file)
    if size <= 0:
        raise InvalidInput(f"loop size {size} must be positive")
    if p.exists():
        raise InvalidInput(f"backing file {str(p)!r} already exists")
    if not p.parent.is_dir():
        raise InvalidInput(f"directory {str(p.parent)!r} does not exist")
    runner.run(["truncate", "-s", str(size), str(p)])
    return p


def attach(runner: Runner, backing_file: str | Path, *, read_only: bool = False) -> str:
    """Attach ``backing_file`` to a free loop device; returns ``/dev/loopN``."""
    p = check_backing_name(backing_file)
    argv = ["losetup", "--find", "--show", *(["--read-only"] if read_only else []), str(p.resolve())]
    done = runner.run(argv, retry=ATTACH_RETRY)
    return done.stdout.strip() if not done.planned_only else "/dev/loop-PLANNED"


def detach(runner: Runner, device: str) -> None:
    """Detach an owned loop device (refuses loop devices over files skycache did not make)."""
    loops = {lp.device: lp for lp in list_loops(runner)}
    lp = loops.get(device)
    if lp is None:
        return
    require_marked_name(Path(lp.backing_file.removesuffix(" (deleted)")).name, what="loop backing file")
    runner.run(["losetup", "--detach", device], retry=DETACH_RETRY)
