"""``disk clone``: plan a VM disk over two iSCSI LUNs of the repository, with its caches.

The repository side: the base made read-only and exported read-only, the VM's COW store (an LV
``<id>.cow`` in the base's repository) created and exported. The node side: both LUNs attached (the
layers above use their udev by-path links, known before the login), the read cache's LVs (reused,
which keeps the cache warm) and the write-back cache's LVs in the node cache VG, then the dm layers of
:mod:`.layers` bottom up. Every step is one action of the plan with its undo; nothing is decided
while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from skycache.errors import Busy, InvalidInput, NotFound
from skycache.plan import Action, Command, Plan
from skycache.runner import Secret
from skycache.storage import image, node
from skycache.storage.caches import dmcache
from skycache.storage.kernel import blockqueue, dm, iscsi, lio, lvm
from skycache.storage.repository import get_repo
from skycache.storage.view import View
from skycache.storage.vmdisk import layers
from skycache.storage.vmdisk.query import current_note
from skycache.storage.vmdisk.records import (
    RC_TAG,
    STORE_TAG,
    SYNCED_TAG,
    WB_TAG,
    ZERO_4K,
    VmNote,
    base_tag,
    check_vm_id,
    cow_tag,
    image_tag,
    rc_lv_names,
    save_note_action,
    store_name,
    vm_tag,
    wb_lv_names,
)
from skycache.units import format_size

GUARD_COW = 4 * 1024**2
MIN_CACHE = 8 * 1024**2


@dataclass(frozen=True)
class CloneRequest:
    vm_id: str
    base_ref: str
    portal: str
    cow: str = "snapshot"
    read_cache: int = 0
    write_cache: int = 0
    write_engine: str = "writecache"
    cache_vg: str = ""
    store_size: int = 0  # 0: sized from the base


def default_store_size(base_size: int, cow: str) -> int:
    """Room for the whole base to be rewritten: snapshot exceptions cost 1/256 extra (4 KiB chunks,
    16-byte entries), thin adds its metadata area."""
    extra = base_size // 128 + 4 * 1024**2
    if cow == "thin":
        extra += layers.THIN_META + 2 * 1024**2
    return node.round_extent(base_size + extra)


def base_image(view: View, ref: str) -> image.Image:
    img = image.get_image(view, ref)
    if img.backend != "lvm":
        raise InvalidInput(f"image {ref!r} is a file image: VM disks need an LVM repository")
    return img


@dataclass(frozen=True)
class Lun:
    """A LUN of the repository as the node will see it."""

    iqn: str
    device: str  # the udev by-path link (exists once logged in)
    export: tuple[Action, ...]  # unless exported already
    attach: tuple[Action, ...]  # unless attached already


def lun_actions(
    view: View,
    repo: str,
    image_name: str,
    lv_path: str,
    sectors: int,
    portal: iscsi.Portal,
    *,
    read_only: bool,
    what: str,
) -> Lun:
    """Export (unless exported) and attach (unless attached) one LV of the repository."""
    iqn = lio.target_iqn(repo, image_name)
    export: list[Action] = []
    attach: list[Action] = []
    chap: lio.Chap | None
    if view.lio.find(iqn) is None:
        spec = lio.ExportSpec(
            repo=repo,
            image=image_name,
            device=lv_path,
            kind="block",
            initiators=(view.initiator_name,),
            read_only=read_only,
            listen=(portal.address, portal.port),
        )
        chap = lio.new_chap()
        export += lio.add_actions(view.lio, spec, sectors, chap)
    else:
        chap = lio.load_chap(view.runner, iqn)
    device = str(iscsi.by_path(portal, iqn))
    session = view.session(iqn)
    if session is None or not session.disks:
        secret = (chap.userid, Secret(chap.password)) if chap else None
        for a in iscsi.attach_actions(view.node_records, iqn, portal, chap=secret):
            attach.append(Action(f"{a.description} ({what})", a.do, a.undo))
    return Lun(iqn, device, tuple(export), tuple(attach))


def _cache_lv(
    view: View, vg: str, name: str, size: int, tags: list[str], what: str
) -> tuple[str, Action | None]:
    """An LV of the node cache VG: reused when it exists (and is owned), else created."""
    path = f"/dev/{vg}/{name}"
    if view.lv(vg, name) is not None:
        lvm.require_owned_lv_in(view, vg, name)
        return path, None
    return path, lvm.lvcreate_action(view, vg, name, node.round_extent(size), tags=tags, what=what)


def read_cache_actions(
    view: View, cache_vg: str, repo: str, base: str, size: int, base_uuid: str
) -> tuple[layers.ReadCacheDevs, list[Action]]:
    """The image's read-cache LVs: reused when they exist (that keeps the cache warm), else created.

    The LVs carry the base LV's uuid in a tag; a cache left from an older image of the same name is
    emptied (metadata zeroed) instead of serving stale blocks.
    """
    meta_name, data_name, guard_name = rc_lv_names(repo, base)
    uuid_tag = f"skycache-uuid.{base_uuid}"
    tags = [RC_TAG, image_tag(repo, base), uuid_tag]
    actions: list[Action] = []
    existing = view.lv(cache_vg, meta_name)
    meta, a1 = _cache_lv(
        view,
        cache_vg,
        meta_name,
        dmcache.metadata_bytes(size, layers.RC_BLOCK),
        tags,
        "read-cache metadata LV",
    )
    data, a2 = _cache_lv(view, cache_vg, data_name, size, tags, "read-cache data LV")
    guard, a3 = _cache_lv(view, cache_vg, guard_name, GUARD_COW, tags, "read-cache guard LV")
    actions += [a for a in (a1, a2, a3) if a is not None]
    if existing is not None and uuid_tag not in existing.tags:
        stale = [t for t in existing.tags if t.startswith("skycache-uuid.")]
        actions.append(
            Action(f"empty the read cache of an older {repo}/{base}", (Command((*ZERO_4K, f"of={meta}")),))
        )
        actions.append(lvm.tag_action(cache_vg, meta_name, add=[uuid_tag], remove=stale))
    return layers.ReadCacheDevs(layers.rc_name(cache_vg, repo, base), meta, data, guard), actions


def write_cache_actions(
    view: View, cache_vg: str, vm_id: str, size: int, engine: str
) -> tuple[layers.WriteCacheDevs, list[Action]]:
    """The VM's write-back cache LVs, started empty (a write-back cache is transient)."""
    data_name, meta_name = wb_lv_names(vm_id)
    tags = [WB_TAG, vm_tag(vm_id)]
    actions: list[Action] = []
    data, a1 = _cache_lv(view, cache_vg, data_name, size, tags, "write-cache data LV")
    meta = ""
    a2 = None
    if engine == "dmcache":
        meta, a2 = _cache_lv(
            view,
            cache_vg,
            meta_name,
            dmcache.metadata_bytes(size, layers.WB_BLOCK),
            tags,
            "write-cache metadata LV",
        )
    actions += [a for a in (a1, a2) if a is not None]
    # dm-writecache's superblock / dm-cache's metadata: zero, so the target formats a new cache.
    actions.append(
        Action(f"start the write-back cache of {vm_id} empty", (Command((*ZERO_4K, f"of={meta or data}")),))
    )
    return layers.WriteCacheDevs(engine, data, meta), actions


def layer_actions(view: View, spec: layers.StackSpec, *, fresh: bool) -> list[Action]:
    """The dm devices bottom up; a shared layer (the image's read cache) that exists is reused."""
    actions: list[Action] = []
    for layer in layers.build_order(spec):
        if layer.shared and view.dm_exists(layer.name):
            continue  # the read cache of this image is already up (another VM uses it)
        if fresh and layer.role == "vm" and spec.cow == "snapshot":
            # A zero header makes dm-snapshot initialise a new persistent exception store.
            top = layers.store_top(spec)
            actions.append(Action(f"zero the snapshot header on {top}", (Command((*ZERO_4K, f"of={top}")),)))
        actions.append(dm.create_action(layer.name, layer.table, layers.ROLE_NAMES[layer.role]))
        if fresh and layer.role == "tm":
            actions.append(
                Action(
                    f"zero the thin-pool metadata {layer.name}",
                    (Command((*ZERO_4K, f"of={dm.path(layer.name)}")),),
                )
            )
        if fresh and layer.role == "tp":
            actions.append(
                Action(
                    f"create thin volume 0 in {layer.name}",
                    (dm.message_command(layer.name, 0, "create_thin", "0"),),
                )
            )
    return actions


def plan_clone(view: View, req: CloneRequest, *, rebuild: bool = False) -> tuple[Plan, str]:
    """Plan the whole clone: repository side (store LV, exports), attach, caches, COW device.

    ``rebuild`` builds the stack again over an existing (synced) store: ``disk mv``.
    Returns the plan and the VM disk path.
    """
    vm_id = check_vm_id(req.vm_id)
    if req.cow not in layers.COW_ENGINES:
        raise InvalidInput(f"--cow {req.cow!r} is invalid: use {' or '.join(layers.COW_ENGINES)}")
    if req.write_engine not in layers.WRITE_ENGINES:
        raise InvalidInput(f"--write-engine {req.write_engine!r} is invalid: use writecache or dmcache")
    portal = iscsi.parse_portal(req.portal)
    base = base_image(view, req.base_ref)
    repo = get_repo(view, base.repo)
    vg = repo.location
    store = store_name(vm_id)
    if view.dm_exists(layers.vm_name(vm_id)) or (not rebuild and current_note(view, vm_id) is not None):
        raise Busy(f"VM disk {vm_id!r} already exists on this node")
    existing = view.lv(vg, store)
    if existing is not None and not rebuild:
        raise Busy(f"VM {vm_id!r} already has a COW store {vg}/{store} (disk purge {vm_id} removes it)")
    if existing is None and rebuild:
        raise NotFound(f"VM {vm_id!r} has no COW store in {repo.name!r}")
    cache_vg = ""
    if req.read_cache or req.write_cache:
        cache_vg = req.cache_vg or node.default_cache_vg(view)
        node.require_cache_vg(view, cache_vg)
    for what, size in (("--read-cache", req.read_cache), ("--write-cache", req.write_cache)):
        if size and size < MIN_CACHE:
            raise InvalidInput(f"{what} {format_size(size)} is too small (at least 8M)")
    store_size = (
        existing.size
        if existing
        else node.round_extent(req.store_size or default_store_size(base.size, req.cow))
    )
    if existing is None and store_size > repo.free:
        raise InvalidInput(
            f"COW store of {format_size(store_size)} does not fit in {repo.name!r} "
            f"({format_size(repo.free)} free)"
        )
    base_lv = lvm.require_owned_lv_in(view, vg, base.name)
    note = VmNote(
        vm_id,
        "clone",
        base.repo,
        base.name,
        req.cow,
        str(portal),
        cache_vg,
        req.read_cache,
        req.write_cache,
        req.write_engine if req.write_cache else "",
        view.lio.find(lio.target_iqn(base.repo, base.name)) is None,
        base.size,
    )
    plan = Plan(f"clone {req.base_ref} -> VM disk {vm_id} ({req.cow})")

    # Repository side.
    ro = image.read_only_action(view, base)
    if ro:
        plan.add(ro)
    if existing is None:
        tags = [STORE_TAG, vm_tag(vm_id), base_tag(base.name), cow_tag(req.cow)]
        plan.add(lvm.lvcreate_action(view, vg, store, store_size, tags=tags, what="COW store"))
    else:
        plan.add(lvm.tag_action(vg, store, remove=[SYNCED_TAG]))
    base_lun = lun_actions(
        view, base.repo, base.name, base.path, base.size // 512, portal, read_only=True, what="base"
    )
    store_lun = lun_actions(
        view,
        base.repo,
        store,
        f"/dev/{vg}/{store}",
        store_size // 512,
        portal,
        read_only=False,
        what="COW store",
    )
    # The exports first, then the note, then the logins (the repository's side before the node's).
    plan.extend([*base_lun.export, *store_lun.export])
    plan.add(save_note_action(note))
    plan.extend([*base_lun.attach, *store_lun.attach])

    # Node side: caches and the dm layers.
    rc = wc = None
    if req.read_cache:
        rc, actions = read_cache_actions(view, cache_vg, base.repo, base.name, req.read_cache, base_lv.uuid)
        plan.extend(actions)
    if req.write_cache:
        wc, actions = write_cache_actions(view, cache_vg, vm_id, req.write_cache, req.write_engine)
        plan.extend(actions)
        # The VM's flushes end at the write-back cache instead of waiting for the repository (a
        # repository outage would stall them): kernel.blockqueue's docstring says why and what it costs.
        plan.add(
            Action(
                f"mark the COW store's LUN write through ({store_lun.device})",
                (blockqueue.set_write_cache_command(store_lun.device, "write through"),),
            )
        )
    spec = layers.StackSpec(
        vm_id, req.cow, base_lun.device, base.size // 512, store_lun.device, store_size // 512, rc, wc
    )
    plan.extend(layer_actions(view, spec, fresh=existing is None))
    return plan, layers.vm_path(vm_id)
