"""``disk ln``, ``disk mkimage``, ``disk mkswap``: VM disks without a COW layer.

``ln`` attaches a persistent image itself (the VM disk is a dm-linear over its LUN); ``mkimage`` and
``mkswap`` make a new empty local disk (an LV in the node cache VG behind ``skycache-vm-<id>``).
"""

from __future__ import annotations

from skycache.errors import Busy, InvalidInput
from skycache.plan import Action, Plan
from skycache.storage import node
from skycache.storage.kernel import dm, iscsi, lvm
from skycache.storage.view import View
from skycache.storage.vmdisk import layers
from skycache.storage.vmdisk.clone import base_image, lun_actions
from skycache.storage.vmdisk.query import current_note
from skycache.storage.vmdisk.records import VOL_TAG, VmNote, check_vm_id, save_note_action, vm_tag, vol_name
from skycache.units import format_size


def _check_new(view: View, vm_id: str) -> None:
    if view.dm_exists(layers.vm_name(vm_id)) or current_note(view, vm_id) is not None:
        raise Busy(f"VM disk {vm_id!r} already exists on this node")


def plan_ln(view: View, vm_id: str, ref: str, portal_text: str) -> tuple[Plan, str]:
    """Attach a persistent image itself (no COW): the VM disk is a dm-linear over its LUN."""
    check_vm_id(vm_id)
    portal = iscsi.parse_portal(portal_text)
    img = base_image(view, ref)
    if img.read_only:
        raise InvalidInput(f"image {ref!r} is read-only (a base): clone it instead of linking it")
    _check_new(view, vm_id)
    lun = lun_actions(
        view, img.repo, img.name, img.path, img.size // 512, portal, read_only=False, what="image"
    )
    note = VmNote(
        vm_id, "ln", img.repo, img.name, portal=str(portal), exported_base=bool(lun.export), size=img.size
    )
    top = layers.vm_name(vm_id)
    plan = Plan(f"ln {ref} -> VM disk {vm_id}")
    plan.extend(lun.export)
    plan.add(save_note_action(note))
    plan.extend(lun.attach)
    plan.add(dm.create_action(top, [dm.linear(lun.device, img.size // 512)], "VM disk (linear over the LUN)"))
    return plan, dm.path(top)


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
