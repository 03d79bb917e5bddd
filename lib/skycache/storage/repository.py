"""Image repositories: a tagged LVM volume group, or a marked directory of raw sparse files.

LVM repositories are found from the system's own records (VGs tagged ``skycache`` and
``skycache-repo``; the VG is named like the repository). File repositories are directories holding a
``.skycache-repo`` marker; their names are kept in a small registry in the state directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, NotOwned
from skycache.ownership import LVM_TAG, check_name
from skycache.plan import Plan, legacy_action
from skycache.runner import Runner, render
from skycache.storage.kernel import lvm
from skycache.units import format_size

REPO_TAG = "skycache-repo"
MARKER = ".skycache-repo"
REGISTRY = "file-repos.json"
DEFAULT_LOOP_DIR = "/var/lib/skycache"


@dataclass(frozen=True)
class Repository:
    name: str
    backend: str  # "lvm" | "file"
    location: str  # VG name or directory
    size: int
    free: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "location": self.location,
            "size": self.size,
            "free": self.free,
        }


def check_repo_name(name: str) -> str:
    check_name(name, what="repository name")
    if "." in name:
        # Exports are named <repo>.<image>; a '.' in the repository would make that ambiguous.
        raise InvalidInput(f"repository name {name!r} is invalid: it must not contain '.'")
    if name.startswith("skycache"):
        raise InvalidInput(f"repository name {name!r} is invalid: 'skycache' names are reserved")
    return name


def loop_dir() -> Path:
    return Path(os.environ.get("SKYCACHE_LOOP_DIR", DEFAULT_LOOP_DIR))


def _registry() -> dict[str, str]:
    data = state.read_json(state.state_dir() / REGISTRY, {})
    return {str(k): str(v) for k, v in data.items()}


def _save_registry(reg: dict[str, str]) -> None:
    state.write_json_private(state.state_dir() / REGISTRY, reg)


# -- init --------------------------------------------------------------------------------------------


def plan_init_lvm(
    runner: Runner,
    name: str,
    *,
    devices: list[str] | None = None,
    loop_size: int | None = None,
    directory: Path | None = None,
) -> Plan:
    check_repo_name(name)
    if bool(devices) == (loop_size is not None):
        raise InvalidInput("give either --device DEV... or --loop SIZE")
    if lvm.find_vg(runner, name) is not None:
        raise Busy(f"volume group {name!r} already exists")
    if name in _registry():
        raise Busy(f"repository {name!r} already exists (file backend)")
    tags = [REPO_TAG]
    plan = Plan(f"create LVM repository {name}")
    if devices:
        in_use = {pv.name for pv in lvm.list_pvs(runner)}
        for dev in devices:
            if not Path(dev).exists():
                raise InvalidInput(f"device {dev!r} does not exist")
            if dev in in_use:
                raise Busy(f"device {dev!r} is already an LVM physical volume")
        plan.add(
            legacy_action(
                f"create tagged volume group {name} on {', '.join(devices)}",
                lambda r: lvm.create_vg(r, name, devices, tags=tags),
                lambda r: lvm.remove_vg(r, name),
                (render(lvm.pvcreate_argv(devices)), render(lvm.vgcreate_argv(name, devices, tags=tags))),
            )
        )
    else:
        assert loop_size is not None
        where = directory or loop_dir()
        backing = lvm.loop_backing_file(where, name)
        if backing.exists():
            raise Busy(f"backing file {str(backing)!r} already exists")
        if not where.is_dir():
            raise InvalidInput(f"loop directory {str(where)!r} does not exist")
        plan.add(
            legacy_action(
                f"create tagged volume group {name} on a loop device over sparse {backing} "
                f"({format_size(loop_size)})",
                lambda r: lvm.create_loop_vg(r, name, loop_size, where, tags=tags),
                lambda r: lvm.remove_vg(r, name),
                (
                    f"truncate -s {loop_size} {backing}",
                    f"losetup --find --show {backing}",
                    render(lvm.pvcreate_argv(["LOOP"])),
                    render(lvm.vgcreate_argv(name, ["LOOP"], tags=tags)),
                ),
            )
        )
    return plan


def plan_init_file(runner: Runner, name: str, directory: Path) -> Plan:
    check_repo_name(name)
    if name in _registry() or lvm.find_vg(runner, name) is not None:
        raise Busy(f"repository {name!r} already exists")
    d = directory.resolve()
    if d.exists() and not d.is_dir():
        raise InvalidInput(f"{str(directory)!r} is not a directory")
    if d.is_dir() and any(p.name != MARKER for p in d.iterdir()):
        raise InvalidInput(f"directory {str(directory)!r} is not empty")

    def do(r: Runner) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / MARKER).write_text(json.dumps({"name": name, "backend": "file"}) + "\n")
        reg = _registry()
        reg[name] = str(d)
        _save_registry(reg)

    def undo(r: Runner) -> None:
        (d / MARKER).unlink(missing_ok=True)
        reg = _registry()
        reg.pop(name, None)
        _save_registry(reg)

    return Plan(f"create file repository {name}").add(
        legacy_action(f"mark directory {d} as repository {name} and register it", do, undo)
    )


# -- lookup ------------------------------------------------------------------------------------------


def list_repos(runner: Runner) -> list[Repository]:
    repos = [
        Repository(vg.name, "lvm", vg.name, vg.size, vg.free)
        for vg in lvm.list_vgs(runner)
        if vg.owned and REPO_TAG in vg.tags
    ]
    for name, directory in sorted(_registry().items()):
        d = Path(directory)
        if not (d / MARKER).is_file():
            continue  # directory gone or unmarked: not a repository any more
        usage = shutil.disk_usage(d)
        repos.append(Repository(name, "file", directory, usage.total, usage.free))
    return sorted(repos, key=lambda r: r.name)


def get_repo(runner: Runner, name: str) -> Repository:
    for repo in list_repos(runner):
        if repo.name == name:
            return repo
    vg = lvm.find_vg(runner, name)
    if vg is not None:
        # A VG of that name exists but is not ours (or is another skycache VG, e.g. a node cache VG).
        if LVM_TAG not in vg.tags:
            raise NotOwned(f"volume group {name!r} was not created by skycache (no LVM tag {LVM_TAG!r})")
        raise NotOwned(f"volume group {name!r} is not a skycache repository (no LVM tag {REPO_TAG!r})")
    raise NotFound(f"repository {name!r} does not exist")


def file_repos() -> dict[str, Path]:
    """Registered file repositories that still carry their marker."""
    return {n: Path(d) for n, d in _registry().items() if (Path(d) / MARKER).is_file()}


def forget_file_repo(name: str) -> None:
    """Unregister a file repository and remove its marker (teardown; image files go first)."""
    reg = _registry()
    directory = reg.pop(name, None)
    if directory:
        (Path(directory) / MARKER).unlink(missing_ok=True)
    _save_registry(reg)
