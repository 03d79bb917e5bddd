"""Image repositories: a tagged LVM volume group, or a marked directory of raw sparse files.

LVM repositories are found from the system's own records (VGs tagged ``skycache`` and
``skycache-repo``; the VG is named like the repository). File repositories are directories holding a
``.skycache-repo`` marker; their names are kept in a small registry in the state directory. Both live
on the runner's host: every read and write goes through the runner.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, NotOwned
from skycache.ownership import LVM_TAG, check_name
from skycache.plan import Action, Command, Plan
from skycache.runner import Runner
from skycache.storage import devices as devices_mod
from skycache.storage.kernel import lvm
from skycache.storage.kernel.directory import existing_entries
from skycache.storage.view import View

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


def loop_dir() -> PurePosixPath:
    """Where loop-backed VGs keep their sparse files (``$SKYCACHE_LOOP_DIR``; made on first use)."""
    return PurePosixPath(os.environ.get("SKYCACHE_LOOP_DIR", DEFAULT_LOOP_DIR))


def registry_path() -> PurePosixPath:
    return state.state_dir() / REGISTRY


def registry(runner: Runner) -> dict[str, str]:
    data = state.read_json(runner, registry_path(), {})
    if not isinstance(data, dict):
        raise InvalidInput(f"state file {registry_path()} is not a JSON object of repository names")
    return {str(k): str(v) for k, v in data.items()}


def registry_command(reg: dict[str, str]) -> Command:
    return state.write_command(registry_path(), state.json_text(dict(sorted(reg.items()))))


# -- init --------------------------------------------------------------------------------------------


def plan_init_lvm(
    view: View,
    name: str,
    *,
    devices: list[str] | None = None,
    loop_size: int | None = None,
    directory: str | PurePosixPath | None = None,
    force: bool = False,
) -> Plan:
    check_repo_name(name)
    runner = view.runner
    if bool(devices) == (loop_size is not None):
        raise InvalidInput("give either --device DEV... or --loop SIZE")
    if view.vg(name) is not None:
        raise Busy(f"volume group {name!r} already exists")
    if name in registry(runner):
        raise Busy(f"repository {name!r} already exists (file backend)")
    plan = Plan(f"create LVM repository {name}")
    if devices:
        # A disk in use (filesystem, partition table, mount, holder, swap...) is refused by name;
        # ``force`` takes it anyway and the plan's notes say so.
        plan.notes += devices_mod.check_free(view, devices, force=force)
        plan.extend(lvm.vg_create_actions(view, name, devices, tags=[REPO_TAG], what="repository VG"))
    else:
        assert loop_size is not None
        where = directory if directory is not None else loop_dir()
        plan.extend(
            lvm.loop_vg_actions(view, runner, name, loop_size, where, tags=[REPO_TAG], what="repository VG")
        )
    return plan


def plan_init_file(view: View, name: str, directory: str | PurePosixPath) -> Plan:
    check_repo_name(name)
    runner = view.runner
    reg = registry(runner)
    if name in reg or view.vg(name) is not None:
        raise Busy(f"repository {name!r} already exists")
    d = PurePosixPath(directory)
    entries = existing_entries(runner, d, what="repository directory")
    if entries and any(e != MARKER for e in entries):
        raise InvalidInput(f"directory {str(directory)!r} is not empty")
    plan = Plan(f"create file repository {name}")
    if entries is None:
        plan.add(Action(f"create directory {d}", (Command(("mkdir", "-p", "--", str(d))),)))
    marker = d / MARKER
    plan.add(
        Action(
            f"mark {d} as repository {name}",
            (state.write_command(marker, json.dumps({"name": name, "backend": "file"}) + "\n"),),
            (Command(("rm", "-f", "--", str(marker))),),
        )
    )
    plan.add(
        Action(
            f"register file repository {name}",
            (registry_command({**reg, name: str(d)}),),
            (registry_command(reg),),
        )
    )
    return plan


# -- lookup ------------------------------------------------------------------------------------------


def _disk_usage(runner: Runner, directory: str) -> tuple[int, int]:
    """(size, available) bytes of the filesystem holding ``directory`` on the runner's host."""
    done = runner.query(["df", "-B1", "--output=size,avail", "--", directory], check=False)
    rows = [line.split() for line in done.stdout.splitlines()[1:] if line.strip()]
    if done.returncode != 0 or not rows or len(rows[0]) != 2:
        return 0, 0
    return int(rows[0][0]), int(rows[0][1])


def file_repos(runner: Runner) -> dict[str, str]:
    """Registered file repositories that still carry their marker."""
    return {n: d for n, d in registry(runner).items() if runner.exists(PurePosixPath(d) / MARKER)}


def list_repos(view: View) -> list[Repository]:
    repos = [
        Repository(vg.name, "lvm", vg.name, vg.size, vg.free)
        for vg in view.vgs
        if vg.owned and REPO_TAG in vg.tags
    ]
    for name, directory in sorted(file_repos(view.runner).items()):
        size, free = _disk_usage(view.runner, directory)
        repos.append(Repository(name, "file", directory, size, free))
    return sorted(repos, key=lambda r: r.name)


def get_repo(view: View, name: str) -> Repository:
    check_repo_name(name)  # a bad name is bad input (exit 2), not a repository that is not there
    for repo in list_repos(view):
        if repo.name == name:
            return repo
    vg = view.vg(name)
    if vg is not None:
        # A VG of that name exists but is not ours (or is another skycache VG, e.g. a node cache VG).
        if LVM_TAG not in vg.tags:
            raise NotOwned(f"volume group {name!r} was not created by skycache (no LVM tag {LVM_TAG!r})")
        raise NotOwned(f"volume group {name!r} is not a skycache repository (no LVM tag {REPO_TAG!r})")
    raise NotFound(f"repository {name!r} does not exist")


def forget_file_repos_actions(runner: Runner, names: list[str]) -> list[Action]:
    """Unregister file repositories and remove their markers (teardown; image files go first)."""
    reg = registry(runner)
    actions = []
    for name in names:
        directory = reg.pop(name, None)
        if directory:
            marker = str(PurePosixPath(directory) / MARKER)
            actions.append(Action(f"remove the marker {marker}", (Command(("rm", "-f", "--", marker)),)))
    if names:
        actions.append(Action(f"unregister file repositories {', '.join(names)}", (registry_command(reg),)))
    return actions


def plan_delete(view: View, name: str, *, force: bool = False) -> Plan:
    """Delete a repository with its images. Refused while an image is exported (``force``: the
    exports go first) or in use on this host (attached, or open: never forced)."""
    from skycache.storage import image  # image builds on this module: import late
    from skycache.storage.kernel import lio

    repo = get_repo(view, name)
    images = image.list_images(view, name)
    plan = Plan(f"delete {repo.backend} repository {name} with {len(images)} image(s)")
    for img in images:
        iqn = lio.target_iqn(name, img.name)
        session = view.session(iqn)
        if session is not None:
            raise Busy(f"image {img.ref} is attached on this host ({session.portal}); detach it first")
        if img.opened and not img.exported:
            raise Busy(f"image {img.ref} is open (in use on this host)")
        if img.exported:
            if not force:
                raise Busy(f"image {img.ref} is exported; remove the export first or use --force")
            plan.extend(lio.remove_actions(view.lio, set(view.dm_info), iqn))
    if repo.backend == "lvm":
        plan.extend(lvm.vg_remove_actions(view, name, what="repository VG"))
        return plan
    for img in images:
        d = PurePosixPath(img.path).parent
        plan.add(
            Action.command(
                f"remove {img.path}", ["rm", "-f", "--", img.path, str(image.sidecar(d, img.name))]
            )
        )
    plan.extend(forget_file_repos_actions(view.runner, [name]))
    return plan
