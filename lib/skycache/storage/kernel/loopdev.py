"""Loop devices over sparse backing files (repositories and caches for experiments).

Owned loop devices are recognised by their backing file, whose name starts with ``skycache-``: the
kernel records that path (``losetup --list``), so a crash leaves enough to find and detach them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath

from skycache.errors import Busy, InvalidInput
from skycache.ownership import NAME_PREFIX, require_marked_name
from skycache.plan import Action, Command
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
        return PurePosixPath(self.backing_file.removesuffix(" (deleted)")).name.startswith(NAME_PREFIX)


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


def find(runner: Runner, backing_file: str | PurePath) -> list[str]:
    """Loop devices attached to ``backing_file``."""
    target = str(PurePosixPath(backing_file))
    return [lp.device for lp in list_loops(runner) if lp.backing_file.removesuffix(" (deleted)") == target]


def check_backing_name(backing_file: str | PurePath) -> PurePosixPath:
    p = PurePosixPath(backing_file)
    require_marked_name(p.name, what="loop backing file")
    return p


def create_sparse(runner: Runner, backing_file: str | PurePath, size: int) -> PurePosixPath:
    """Make a sparse file of ``size`` bytes (named ``skycache-*``); refuses to overwrite a file."""
    p = check_backing_name(backing_file)
    if size <= 0:
        raise InvalidInput(f"loop size {size} must be positive")
    if runner.exists(p):
        raise InvalidInput(f"backing file {str(p)!r} already exists")
    if runner.list_dir(p.parent) is None:
        raise InvalidInput(f"directory {str(p.parent)!r} does not exist")
    runner.run(["truncate", "-s", str(size), str(p)])
    return p


def attach(runner: Runner, backing_file: str | PurePath, *, read_only: bool = False) -> str:
    """Attach ``backing_file`` to a free loop device; returns ``/dev/loopN``."""
    p = check_backing_name(backing_file)
    argv = ["losetup", "--find", "--show", *(["--read-only"] if read_only else []), str(p)]
    return runner.run(argv, retry=ATTACH_RETRY).stdout.strip()


def detach(runner: Runner, device: str) -> None:
    """Detach an owned loop device (refuses loop devices over files skycache did not make)."""
    loops = {lp.device: lp for lp in list_loops(runner)}
    lp = loops.get(device)
    if lp is None:
        return
    require_marked_name(
        PurePosixPath(lp.backing_file.removesuffix(" (deleted)")).name, what="loop backing file"
    )
    runner.run(["losetup", "--detach", device], retry=DETACH_RETRY)


# -- actions for plans --------------------------------------------------------------------------------


def free_device(runner: Runner) -> str:
    """The loop device a new attachment will take (``losetup --find``: the first free one).

    Chosen when planning, so the plan names the device its later commands (pvcreate, dm tables) use.
    A race with another losetup makes the attach fail ("busy"): the plan then rolls back.
    """
    device = runner.query(["losetup", "--find"]).stdout.strip()
    if not device.startswith("/dev/loop"):
        raise Busy(f"no free loop device (losetup --find printed {device!r})")
    return device


def sparse_file_action(runner: Runner, backing_file: str | PurePath, size: int) -> Action:
    """Create the sparse backing file; the undo deletes it."""
    p = check_backing_name(backing_file)
    if size <= 0:
        raise InvalidInput(f"loop size {size} must be positive")
    if runner.exists(p):
        raise Busy(f"backing file {str(p)!r} already exists")
    return Action(
        f"create sparse file {p} ({size} bytes)",
        (Command(("truncate", "-s", str(size), str(p))),),
        (Command(("rm", "-f", "--", str(p))),),
    )


def attach_action(device: str, backing_file: str | PurePath) -> Action:
    """Attach ``backing_file`` to the loop device ``device`` (from :func:`free_device`)."""
    p = check_backing_name(backing_file)
    return Action(
        f"attach {p} to {device}",
        (Command(("losetup", device, str(p))),),
        (detach_command(device),),
    )


def detach_command(device: str) -> Command:
    return Command(("losetup", "--detach", device), retry=DETACH_RETRY)
