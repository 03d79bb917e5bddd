"""The worker node's cache volume group: where read-cache and write-back-cache LVs live.

A node cache VG is an ordinary skycache VG (tag ``skycache``) with the extra tag ``skycache-node``, so
it is never taken for an image repository (those carry ``skycache-repo``). ``--loop SIZE`` backs it
with a sparse file on a loop device (for experiments), like ``repo init --loop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from skycache.errors import Busy, InvalidInput, NotFound, NotOwned
from skycache.ownership import check_name
from skycache.plan import Plan
from skycache.storage import devices as devices_mod
from skycache.storage import repository
from skycache.storage.kernel import lvm
from skycache.storage.view import View
from skycache.units import format_size

NODE_TAG = "skycache-node"
EXTENT = 4 * 1024**2


@dataclass(frozen=True)
class CacheVG:
    name: str
    size: int
    free: int
    lv_count: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "free": self.free, "lvs": self.lv_count}


def round_extent(nbytes: int) -> int:
    """LVM allocates whole extents (4 MiB by default): round a size up to one."""
    return -(-nbytes // EXTENT) * EXTENT


def plan_init(
    view: View,
    name: str,
    *,
    devices: list[str] | None = None,
    loop_size: int | None = None,
    directory: str | PurePosixPath | None = None,
    force: bool = False,
) -> Plan:
    """Plan ``node init``: a tagged VG on ``devices`` or on a loop device of ``loop_size`` bytes."""
    check_name(name, what="cache VG name")
    if bool(devices) == (loop_size is not None):
        raise InvalidInput("give either --device DEV... or --loop SIZE")
    if view.vg(name) is not None:
        raise Busy(f"volume group {name!r} already exists")
    plan = Plan(f"node init: cache VG {name}")
    if devices:
        # A disk in use (filesystem, partition table, mount, holder, swap...) is refused by name;
        # ``force`` takes it anyway and the plan's notes say so.
        plan.notes += devices_mod.check_free(view, devices, force=force)
        plan.extend(lvm.vg_create_actions(view, name, devices, tags=[NODE_TAG], what="cache VG"))
    else:
        assert loop_size is not None
        if loop_size < 2 * EXTENT:
            raise InvalidInput(f"--loop {format_size(loop_size)} is too small (at least 8M)")
        where = directory if directory is not None else repository.loop_dir()
        plan.extend(
            lvm.loop_vg_actions(view, view.runner, name, loop_size, where, tags=[NODE_TAG], what="cache VG")
        )
    return plan


def list_cache_vgs(view: View) -> list[CacheVG]:
    return [
        CacheVG(vg.name, vg.size, vg.free, vg.lv_count) for vg in view.vgs if vg.owned and NODE_TAG in vg.tags
    ]


def require_cache_vg(view: View, name: str) -> CacheVG:
    """The node cache VG ``name``; refuses VGs that are not skycache node cache VGs."""
    check_name(name, what="cache VG name")
    vg = view.vg(name)
    if vg is None:
        raise NotFound(f"cache VG {name!r} does not exist (create it with skycache node init)")
    if not vg.owned or NODE_TAG not in vg.tags:
        raise NotOwned(f"volume group {name!r} is not a skycache node cache VG (no tag {NODE_TAG!r})")
    return CacheVG(vg.name, vg.size, vg.free, vg.lv_count)


def default_cache_vg(view: View) -> str:
    """The only cache VG on this node (an error when there are none or several)."""
    vgs = list_cache_vgs(view)
    if len(vgs) != 1:
        what = "no" if not vgs else f"{len(vgs)}"
        raise InvalidInput(f"{what} node cache VGs on this host: name one with --cache-vg")
    return vgs[0].name


def plan_delete(view: View, name: str) -> Plan:
    """Delete a node cache VG with its cache LVs; refused while a cache on it is up."""
    require_cache_vg(view, name)
    # dmsetup deps names the devices under each dm device; an LV's own dm device is VG-LV.
    lv_devices = {PurePosixPath(lv.dm_path).name for lv in view.lvs_of(name) if lv.dm_path}
    for dm_name, below in sorted(view.dm_deps.items()):
        if lv_devices & set(below):
            raise Busy(f"cache VG {name!r} is in use by dm device {dm_name} (delete its VM disks first)")
    return Plan(f"delete cache VG {name}", lvm.vg_remove_actions(view, name, what="cache VG"))
