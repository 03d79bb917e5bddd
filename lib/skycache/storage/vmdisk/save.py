"""``disk save``: materialise base + COW store as a new image on the repository.

On the repository a read-only dm device joins the base LV and the store LV (dm-snapshot with the
store as persistent COW, or a thin pool over a copy of the store's metadata with the base as external
origin); it is copied into a new LV. A live VM disk is suspended and its write-back cache flushed for
the copy, then the cache gets its mode back and the disk is resumed.
"""

from __future__ import annotations

from skycache.errors import Busy, InvalidInput, NotFound
from skycache.plan import Action, Command, Plan, Step
from skycache.storage import image
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import dm, lvm
from skycache.storage.repository import get_repo
from skycache.storage.view import View
from skycache.storage.vmdisk import layers
from skycache.storage.vmdisk.query import find_store
from skycache.storage.vmdisk.records import COPY, check_vm_id, tag_value


def plan_save(view: View, vm_id: str, new_ref: str) -> Plan:
    check_vm_id(vm_id)
    store = find_store(view, vm_id)
    if store is None:
        raise NotFound(f"VM {vm_id!r} has no COW store (only clones can be saved)")
    base_name = tag_value(store.tags, "skycache-base.")
    cow = tag_value(store.tags, "skycache-cow.")
    repo_name, new = image.split_ref(new_ref)
    if get_repo(view, repo_name).location != store.vg:
        raise InvalidInput(f"{new_ref!r} must be in the repository of VM {vm_id!r} (VG {store.vg!r})")
    if view.lv(store.vg, new) is not None:
        raise Busy(f"image {new_ref!r} already exists")
    base_lv = lvm.require_owned_lv_in(view, store.vg, base_name)
    live = view.dm_exists(layers.vm_name(vm_id))
    sectors = base_lv.size // 512
    vg = store.vg
    mat = f"skycache-mat-{vm_id}"
    td, tp = (f"skycache-mat{x}-{vm_id}" for x in ("td", "tp"))
    base_dev, store_dev = f"/dev/{vg}/{base_name}", f"/dev/{vg}/{store.name}"
    # thin: the pool is loaded over a copy of the store's metadata area, so the store is only read.
    # (A pool over the store's own metadata would write its superblock; and the "read_only" pool
    # feature is refused on a pool's first load: "only available after the thin-pool has been
    # created and first used in full read/write mode", thin-provisioning.rst.)
    meta_copy = f"{new}.matmeta"
    meta, data = layers.thin_split(store.size // 512) if cow == "thin" else (0, 0)
    plan = Plan(f"save VM disk {vm_id} as {new_ref}")
    # Every LVM command runs before the VM disk is suspended or after it is resumed: an LVM scan
    # reads every block device, and a read of a suspended dm device waits until it is resumed (seen
    # in the lab: a `vgs` after an `lvcreate` hung there; lvm.conf ignore_suspended_devices says so).
    plan.add(lvm.lvcreate_action(view, vg, new, base_lv.size, what="image LV"))
    if cow == "thin":
        plan.add(
            lvm.lvcreate_action(
                view, vg, meta_copy, meta * 512, what="LV for a copy of the store's thin-pool metadata"
            )
        )
    tops: list[str] = []
    wb = layers.wb_name(vm_id)
    wb_table = view.dm_table(wb)[0].line() if live and view.dm_exists(wb) else ""
    if live:
        top = layers.vm_name(vm_id)
        tops = [top, layers.thin_names(vm_id)[2]] if cow == "thin" else [top]
        # suspend flushes the COW metadata (exceptions / pool commit) down into the write-back cache;
        # the flush leaves the cache writing back everything and caching nothing (dm-cache cleaner
        # policy, dm-writecache cleaner mode): it gets its table back after the copy.
        steps: list[Step] = [dm.suspend_command(n) for n in tops if view.dm_exists(n)]
        if wb_table:
            steps += cachestatus.flush_steps(wb, wb_table, timeout_s=3600)
        thaw = [
            *(cachestatus.resume_caching_commands(wb, wb_table) if wb_table else ()),
            *(dm.resume_command(n) for n in reversed(tops)),
        ]
        plan.add(Action(f"suspend {top} and flush its write-back cache", tuple(steps), tuple(thaw)))
    if cow == "snapshot":
        plan.add(
            dm.create_action(
                mat,
                [dm.snapshot(base_dev, store_dev, sectors)],
                "read-only join of base and store",
                readonly=True,
            )
        )
    else:
        count = -(-meta * 512 // (4 << 20))
        plan.add(
            Action.command(
                f"copy the store's thin-pool metadata into {vg}/{meta_copy}",
                [*COPY, f"if={store_dev}", f"of=/dev/{vg}/{meta_copy}", f"count={count}"],
            )
        )
        plan.add(dm.create_action(td, [dm.linear(store_dev, data, offset=meta)], "thin-pool data view"))
        plan.add(
            dm.create_action(
                tp, layers.thin_pool_line(f"/dev/{vg}/{meta_copy}", dm.path(td), data), "thin pool"
            )
        )
        plan.add(
            dm.create_action(
                mat,
                [dm.thin(dm.path(tp), 0, sectors, external_origin=base_dev)],
                "read-only join of base and store",
                readonly=True,
            )
        )
    plan.add(
        Action.command(
            f"copy {mat} into {vg}/{new}",
            [*COPY, f"if={dm.path(mat)}", f"of=/dev/{vg}/{new}"],
            timeout_s=3600,
        )
    )
    for name in (mat, tp, td) if cow == "thin" else (mat,):
        plan.add(dm.remove_action(name))
    if live:
        resume = [
            *(cachestatus.resume_caching_commands(wb, wb_table) if wb_table else ()),
            *(dm.resume_command(n) for n in reversed(tops)),
        ]
        plan.add(
            Action(f"restore the write-back cache's mode and resume {layers.vm_name(vm_id)}", tuple(resume))
        )
    if cow == "thin":
        plan.add(
            Action(
                f"remove {vg}/{meta_copy}",
                (Command(tuple(lvm.lvremove_argv(vg, meta_copy)), retry=lvm.UDEV_RETRY),),
            )
        )
    return plan
