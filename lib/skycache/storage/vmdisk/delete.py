"""``disk delete`` (with or without ``--sync``) and ``disk purge``.

Safety (docs/caches.md): a write-back cache is flushed (``--sync``) or deliberately discarded together
with the COW store (without it); shared parts (the image's read cache, the base's session and export)
are released only when no other VM disk of the node uses them, decided from the view before anything
runs.
"""

from __future__ import annotations

from skycache.errors import Busy, NotFound
from skycache.plan import Action, Plan
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import dm, iscsi, lio, lvm
from skycache.storage.repository import get_repo
from skycache.storage.view import View
from skycache.storage.vmdisk import layers
from skycache.storage.vmdisk.query import disk_holders, find_store, kernel_names, require_note
from skycache.storage.vmdisk.records import (
    STORE_TAG,
    SYNCED_TAG,
    VmNote,
    base_tag,
    check_vm_id,
    drop_note_action,
    rc_lv_names,
    save_note_action,
    store_name,
    vol_name,
    wb_lv_names,
)


def _logout(view: View, iqn: str, what: str, *, force: bool = True) -> list[Action]:
    return [
        Action(f"{a.description} ({what})", a.do)
        for a in iscsi.detach_actions(view.runner, view.sessions, iqn, force=force)
    ]


def release_shared_actions(view: View, note: VmNote, removed: set[str]) -> list[Action]:
    """Stop the image's read cache and log out of / unexport the base when, once the dm devices in
    ``removed`` are gone, nothing else on this node uses them. The read cache's LVs stay: a clean
    dm-cache removal writes its metadata, so the next clone of the image starts warm."""
    actions: list[Action] = []
    gone = set(removed)
    if note.read_cache and note.cache_vg:
        rc = layers.rc_name(note.cache_vg, note.repo, note.image)
        guard = layers.rc_guard_name(rc)
        if view.dm_exists(rc) and set(view.dm_holders(rc)) <= gone:
            actions.append(dm.remove_action(rc, "read cache (its LVs keep the cached blocks)"))
            gone.add(rc)
        if view.dm_exists(guard) and set(view.dm_holders(guard)) <= gone:
            actions.append(dm.remove_action(guard, "read-cache guard"))
            gone.add(guard)
    base_iqn = lio.target_iqn(note.repo, note.image)
    session = view.session(base_iqn)
    logged_out = session is None
    if session is not None and all(disk_holders(view, d) <= kernel_names(view, gone) for d in session.disks):
        actions += _logout(view, base_iqn, "base")
        logged_out = True
    if note.exported_base and logged_out and view.lio.find(base_iqn) is not None:
        repo = get_repo(view, note.repo)
        others = [
            lv
            for lv in view.lvs_of(repo.location)
            if STORE_TAG in lv.tags
            and base_tag(note.image) in lv.tags
            and SYNCED_TAG not in lv.tags
            and lv.name != store_name(note.vm_id)
        ]
        if not others:  # no other live VM of this base
            actions += lio.remove_actions(view.lio, set(view.dm_info), base_iqn)
    return actions


def plan_delete(view: View, vm_id: str, *, sync: bool = False) -> Plan:
    """Tear the VM's stack down. ``sync``: flush the write-back cache into the COW store first and
    keep the store (listed as synced); without it, the store and any cached writes are discarded."""
    note = require_note(view, vm_id)
    plan = Plan(f"delete VM disk {vm_id}" + (" (sync to the repository)" if sync else ""))
    if note.state == "synced" and note.kind == "clone":
        plan.add(drop_note_action(vm_id))
        plan.notes.append(f"VM disk {vm_id} is already synced: only its node note goes")
        return plan
    if note.kind != "clone":
        return _plan_delete_volume(view, note)
    repo = get_repo(view, note.repo)
    vg = repo.location
    store = store_name(vm_id)
    wb = layers.wb_name(vm_id)
    removed: set[str] = set()
    # The COW devices write their own metadata (exceptions, pool superblock) as they go away, into
    # the write-back cache below them: remove them before flushing it.
    tm, td, tp = layers.thin_names(vm_id)
    for name in (layers.vm_name(vm_id), tp, td, tm):
        if view.dm_exists(name):
            plan.add(dm.remove_action(name, "COW device" if name != layers.vm_name(vm_id) else "VM disk"))
            removed.add(name)
    if view.dm_exists(wb):
        if sync:
            steps = cachestatus.flush_steps(wb, view.dm_table(wb)[0].line(), timeout_s=3600)
            plan.add(Action(f"flush write-back cache {wb} to the COW store", steps))
            plan.add(dm.remove_action(wb, "write-back cache (clean)"))
        else:
            plan.add(dm.remove_action(wb, "write-back cache, discarding its unwritten blocks", force=True))
        removed.add(wb)
    if note.cache_vg:
        for lv in wb_lv_names(vm_id):
            if view.lv(note.cache_vg, lv) is not None:
                plan.add(lvm.lvremove_action(view, note.cache_vg, lv, what="write-cache LV"))
    store_iqn = lio.target_iqn(note.repo, store)
    plan.extend(_logout(view, store_iqn, "COW store"))
    if view.lio.find(store_iqn) is not None or view.dm_exists(lio.shim_name(note.repo, store)):
        plan.extend(lio.remove_actions(view.lio, set(view.dm_info), store_iqn))
    if sync:
        plan.add(lvm.tag_action(vg, store, add=[SYNCED_TAG]))
    elif view.lv(vg, store) is not None:
        plan.add(lvm.lvremove_action(view, vg, store, what="COW store"))
    plan.extend(release_shared_actions(view, note, removed))
    if sync:
        plan.add(save_note_action(VmNote(**{**note.as_dict(), "state": "synced"}), undo_to=note))
    else:
        plan.add(drop_note_action(vm_id))
    return plan


def _plan_delete_volume(view: View, note: VmNote) -> Plan:
    """ln, mkimage, mkswap: the dm-linear on top, the caches of an ln disk (its write-back cache is
    always flushed first: the image is persistent), then the LUN (ln) or the local LV."""
    vm_id = note.vm_id
    top = layers.vm_name(vm_id)
    plan = Plan(f"delete VM disk {vm_id} ({note.kind})")
    removed: set[str] = set()
    if view.dm_exists(top):
        plan.add(dm.remove_action(top, "VM disk"))
        removed.add(top)
    if note.kind != "ln":
        if view.lv(note.cache_vg, vol_name(vm_id)) is not None:
            plan.add(lvm.lvremove_action(view, note.cache_vg, vol_name(vm_id), what="local volume"))
        plan.add(drop_note_action(vm_id))
        return plan
    iqn = lio.target_iqn(note.repo, note.image)
    wb = layers.wb_name(vm_id)
    if view.dm_exists(wb):
        lun = str(iscsi.by_path(iscsi.parse_portal(note.portal), iqn)) if note.portal else None
        steps = cachestatus.flush_steps(wb, view.dm_table(wb)[0].line(), timeout_s=3600, durable_on=lun)
        plan.add(Action(f"flush write-back cache {wb} to the image", steps))
        plan.add(dm.remove_action(wb, "write-back cache (clean)"))
        removed.add(wb)
    if note.cache_vg:
        for lv in wb_lv_names(vm_id):
            if view.lv(note.cache_vg, lv) is not None:
                plan.add(lvm.lvremove_action(view, note.cache_vg, lv, what="write-cache LV"))
    if note.read_cache and note.cache_vg:
        rc = layers.rc_name(note.cache_vg, note.repo, note.image)
        if view.dm_exists(rc) and set(view.dm_holders(rc)) <= removed:
            plan.add(dm.remove_action(rc, "read cache (its LVs keep the cached blocks)"))
    plan.extend(_logout(view, iqn, note.kind))
    if note.exported_base and view.lio.find(iqn) is not None:
        plan.extend(lio.remove_actions(view.lio, set(view.dm_info), iqn))
    plan.add(drop_note_action(vm_id))
    return plan


def plan_drop_read_cache(view: View, cache_vg: str, repo: str, image: str) -> Plan:
    """Throw an image's read cache away (its LVs): the next VM disk of the image starts cold.

    Refused while the cache is up (a VM disk of the image uses it)."""
    rc = layers.rc_name(cache_vg, repo, image)
    if view.dm_exists(rc):
        raise Busy(f"the read cache {rc} of {repo}/{image} is in use: delete its VM disks first")
    plan = Plan(f"drop the read cache of {repo}/{image} in {cache_vg}")
    for lv in rc_lv_names(repo, image):
        if view.lv(cache_vg, lv) is not None:
            plan.add(lvm.lvremove_action(view, cache_vg, lv, what="read-cache LV"))
    return plan


def plan_purge(view: View, vm_id: str) -> Plan:
    """Remove a synced COW store from the repository (refused while the VM disk is live)."""
    check_vm_id(vm_id)
    store = find_store(view, vm_id)
    if store is None:
        raise NotFound(f"VM {vm_id!r} has no COW store in any repository")
    if SYNCED_TAG not in store.tags or view.dm_exists(layers.vm_name(vm_id)):
        raise Busy(f"VM disk {vm_id!r} is live: delete it (with or without --sync) before purging")
    plan = Plan(f"purge COW store of VM {vm_id}")
    plan.add(lvm.lvremove_action(view, store.vg, store.name, what="COW store"))
    plan.add(drop_note_action(vm_id))
    return plan
