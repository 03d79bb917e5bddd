"""What the node's records say about its VM disks: which exist, in which state, what uses what."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from skycache.errors import NotFound, SkycacheError
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import lvm
from skycache.storage.view import View
from skycache.storage.vmdisk import layers
from skycache.storage.vmdisk.records import (
    STORE_TAG,
    SYNCED_TAG,
    VmNote,
    all_notes,
    check_vm_id,
    load_note,
    tag_value,
    vm_tag,
    vol_name,
)


def find_store(view: View, vm_id: str) -> lvm.LV | None:
    """The VM's COW store LV in any repository (tagged ``skycache-vmstore`` and ``skycache-vm.<id>``)."""
    return next(
        (lv for lv in view.lvs if lv.owned and STORE_TAG in lv.tags and vm_tag(vm_id) in lv.tags), None
    )


def current_note(view: View, vm_id: str) -> VmNote | None:
    """The VM's note if the system still has something of it: a note whose device, store and volume
    are all gone (left behind by a teardown) does not count; the system's records win."""
    note = load_note(view.runner, vm_id)
    if note is None:
        return None
    if view.dm_exists(layers.vm_name(vm_id)) or find_store(view, vm_id) is not None:
        return note
    if note.cache_vg and view.lv(note.cache_vg, vol_name(vm_id)) is not None:
        return note
    return None


def require_note(view: View, vm_id: str) -> VmNote:
    check_vm_id(vm_id)
    note = current_note(view, vm_id)
    if note is None:
        raise NotFound(f"VM disk {vm_id!r} is not known on this node")
    return note


def kernel_names(view: View, dm_names: set[str]) -> set[str]:
    """``dm-N`` kernel names of dm devices (how sysfs lists holders)."""
    return {f"dm-{view.dm_info[n].minor}" for n in dm_names if n in view.dm_info}


def disk_holders(view: View, disk: str) -> set[str]:
    """Kernel names of what sits on a block device (``sdb``), from the host's sysfs."""
    return set(view.runner.list_dir(f"/sys/block/{disk}/holders") or [])


@dataclass(frozen=True)
class DiskInfo:
    vm_id: str
    kind: str
    state: str  # live | synced | stale (a store or device without the other half)
    image: str
    cow: str
    read_cache: int
    write_cache: int
    write_engine: str
    path: str
    dirty: int | None = None
    devices: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["devices"] = list(self.devices)
        return d


def list_disks(view: View) -> list[DiskInfo]:
    """VM disks from the system's records (dm devices, store LVs), with the node notes' details."""
    names = set(view.dm_info)
    notes = {n.vm_id: n for n in all_notes(view.runner) if current_note(view, n.vm_id) is not None}
    stores = {tag_value(lv.tags, "skycache-vm."): lv for lv in view.lvs if lv.owned and STORE_TAG in lv.tags}
    ids = set(stores) | {n[len("skycache-vm-") :] for n in names if n.startswith("skycache-vm-")} | set(notes)
    out: list[DiskInfo] = []
    for vm_id in sorted(ids):
        note = notes.get(vm_id)
        store = stores.get(vm_id)
        devices = tuple(n for n in layers.all_vm_devices(vm_id) if n in names)
        live = layers.vm_name(vm_id) in names
        if live:
            st = "live"
        elif store is not None and SYNCED_TAG in store.tags:
            st = "synced"
        else:
            st = "stale"
        dirty = None
        wb = layers.wb_name(vm_id)
        if view.dm_status.get(wb):
            try:
                dirty = cachestatus.parse_status(view.dm_status[wb][0].line()).unwritten
            except SkycacheError:
                dirty = None
        image_ref = f"{note.repo}/{note.image}" if note and note.repo else ""
        if not image_ref and store is not None:
            image_ref = f"{store.vg}/{tag_value(store.tags, 'skycache-base.')}"
        out.append(
            DiskInfo(
                vm_id,
                note.kind if note else "clone",
                st,
                image_ref,
                note.cow if note else (tag_value(store.tags, "skycache-cow.") if store else ""),
                note.read_cache if note else 0,
                note.write_cache if note else 0,
                note.write_engine if note else "",
                layers.vm_path(vm_id) if live else "",
                dirty,
                devices,
            )
        )
    return out
