"""``disk ln``, ``disk mkimage``, ``disk mkswap``: VM disks without a COW layer.

``ln`` attaches a persistent image itself (the VM disk is a dm-linear over its LUN); ``mkimage`` and
``mkswap`` make a new empty local disk (an LV in the node cache VG behind ``skycache-vm-<id>``).
"""

from __future__ import annotations

from skycache.errors import Busy, InvalidInput
from skycache.plan import Action, Plan
from skycache.storage import image, node
from skycache.storage.kernel import blockqueue, dm, iscsi, lio, lvm
from skycache.storage.view import View
from skycache.storage.vmdisk import layers
from skycache.storage.vmdisk.clone import (
    MIN_CACHE,
    layer_actions,
    lun_actions,
    read_cache_actions,
    write_cache_actions,
)
from skycache.storage.vmdisk.query import current_note
from skycache.storage.vmdisk.records import VOL_TAG, VmNote, check_vm_id, save_note_action, vm_tag, vol_name
from skycache.units import format_size


def _check_new(view: View, vm_id: str) -> None:
    if view.dm_exists(layers.vm_name(vm_id)) or current_note(view, vm_id) is not None:
        raise Busy(f"VM disk {vm_id!r} already exists on this node")


def plan_ln(
    view: View,
    vm_id: str,
    ref: str,
    portal_text: str,
    *,
    read_cache: int = 0,
    write_cache: int = 0,
    write_engine: str = "writecache",
    cache_vg: str = "",
    delay_ms: int = 0,
) -> tuple[Plan, str]:
    """Attach a persistent image itself (no COW): the VM disk is a dm-linear over its LUN, over the
    node's caches when asked for (a read cache of the image, a write-back cache of the VM disk).

    ``delay_ms``: when this plan exports the image, the repository-side shim adds that latency
    (dm-delay), as the bench does to give repository disks seek-like latency."""
    check_vm_id(vm_id)
    portal = iscsi.parse_portal(portal_text)
    img = image.get_image(view, ref)
    if img.read_only:
        raise InvalidInput(f"image {ref!r} is read-only (a base): clone it instead of linking it")
    if write_engine not in layers.WRITE_ENGINES:
        raise InvalidInput(f"--write-engine {write_engine!r} is invalid: use writecache or dmcache")
    for what, size in (("--read-cache", read_cache), ("--write-cache", write_cache)):
        if size and size < MIN_CACHE:
            raise InvalidInput(f"{what} {format_size(size)} is too small (at least 8M)")
    _check_new(view, vm_id)
    session = view.session(lio.target_iqn(img.repo, img.name))
    if session is not None and session.disks:
        raise Busy(
            f"image {ref!r} is attached on this node already (/dev/{session.disks[0]}): one VM disk per image"
        )
    vg = ""
    if read_cache or write_cache:
        vg = cache_vg or node.default_cache_vg(view)
        node.require_cache_vg(view, vg)
    kind = "block" if img.backend == "lvm" else "fileio"
    sectors = img.size // 512
    lun = lun_actions(
        view,
        img.repo,
        img.name,
        img.path,
        sectors,
        portal,
        read_only=False,
        what="image",
        kind=kind,
        delay_ms=delay_ms,
    )
    note = VmNote(
        vm_id,
        "ln",
        img.repo,
        img.name,
        portal=str(portal),
        cache_vg=vg,
        read_cache=read_cache,
        write_cache=write_cache,
        write_engine=write_engine if write_cache else "",
        exported_base=bool(lun.export),
        size=img.size,
    )
    plan = Plan(f"ln {ref} -> VM disk {vm_id}")
    plan.extend(lun.export)
    plan.add(save_note_action(note))
    plan.extend(lun.attach)
    rc = wc = None
    if read_cache:
        # The uuid tag keeps an older image of the same name from reading this one's cached blocks;
        # a file image has no uuid: its path stands in (a new file of that name starts a new cache).
        lv = view.lv(img.repo, img.name) if img.backend == "lvm" else None
        uuid = lv.uuid if lv is not None else img.path.replace("/", "_")
        rc, actions = read_cache_actions(view, vg, img.repo, img.name, read_cache, uuid, guard=False)
        plan.extend(actions)
    if write_cache:
        wc, actions = write_cache_actions(view, vg, vm_id, write_cache, write_engine)
        plan.extend(actions)
        plan.add(
            Action(
                f"mark the image's LUN write through ({lun.device})",
                (blockqueue.set_write_cache_command(lun.device, "write through"),),
            )
        )
    spec = layers.StackSpec(vm_id, "none", lun.device, sectors, "", 0, rc, wc)
    plan.extend(layer_actions(view, spec, fresh=True))
    return plan, dm.path(layers.vm_name(vm_id))


def plan_mkimage(
    view: View, vm_id: str, size: int, *, cache_vg: str = "", swap: bool = False
) -> tuple[Plan, str]:
    """A new empty local disk; ``swap`` formats it as swap."""
    check_vm_id(vm_id)
    if size <= 0:
        raise InvalidInput(f"size {size} is not positive")
    vg = cache_vg or node.default_cache_vg(view)
    cvg = node.require_cache_vg(view, vg)
    size = node.round_extent(size)
    if size > cvg.free:
        raise InvalidInput(
            f"size {format_size(size)} is larger than the free space of {vg!r} ({format_size(cvg.free)})"
        )
    _check_new(view, vm_id)
    lv = vol_name(vm_id)
    kind = "mkswap" if swap else "mkimage"
    top = layers.vm_name(vm_id)
    plan = Plan(f"{kind} VM disk {vm_id} ({format_size(size)})")
    plan.add(lvm.lvcreate_action(view, vg, lv, size, tags=[VOL_TAG, vm_tag(vm_id)], what="local volume"))
    plan.add(dm.create_action(top, [dm.linear(f"/dev/{vg}/{lv}", size // 512)], "VM disk"))
    if swap:
        plan.add(Action.command(f"format {top} as swap", ["mkswap", dm.path(top)]))
    plan.add(save_note_action(VmNote(vm_id, kind, cache_vg=vg, size=size)))
    return plan, dm.path(top)
