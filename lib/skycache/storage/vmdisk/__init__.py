"""VM disks on a worker node and their lifecycle: clone, ln, mkimage, mkswap, mv, delete, purge, save.

A ``clone`` builds the stack of :mod:`.layers` over two iSCSI LUNs of the repository: the base
image (exported read-only) and the VM's COW store, an LV ``<id>.cow`` in the base's repository. Its
records are the system's own: the store LV's tags (``skycache-vmstore``, ``skycache-vm.<id>``,
``skycache-base.<base>``, ``skycache-cow.<engine>``, ``skycache-synced`` once synchronised), the
dm names (``skycache-vm-<id>``, ``skycache-wb-<id>``, ...), the cache LVs' tags in the node cache VG,
and the iSCSI sessions. A small JSON note per VM in the state directory adds what only the node knows
(portal, cache sizes and engines); nothing needed for teardown lives only there.

Safety: a write-back cache is flushed (``delete --sync``) or deliberately discarded together with
the COW store (``delete`` without ``--sync``); teardown refuses or flushes dirty caches.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, SkycacheError
from skycache.ownership import check_name
from skycache.plan import Action, Plan, legacy_action
from skycache.runner import Runner, render
from skycache.storage import image, node
from skycache.storage.caches import cachestatus, dmcache
from skycache.storage.kernel import blockqueue, dm, iscsi, lio, lvm
from skycache.storage.repository import get_repo
from skycache.storage.vmdisk import layers
from skycache.units import format_size

STORE_TAG = "skycache-vmstore"
SYNCED_TAG = "skycache-synced"
RC_TAG = "skycache-rc"
WB_TAG = "skycache-wb"
VOL_TAG = "skycache-vol"
ZERO_4K = ("dd", "if=/dev/zero", "bs=4096", "count=1", "oflag=direct", "conv=fsync", "status=none")
COPY = ("dd", "bs=4M", "iflag=direct", "oflag=direct", "conv=fsync", "status=none")
KINDS = ("clone", "ln", "mkimage", "mkswap")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# -- names and the node-local note -------------------------------------------------------------------


def check_vm_id(vm_id: str) -> str:
    check_name(vm_id, what="VM id")
    if len(vm_id) > 30:
        raise InvalidInput(f"VM id {vm_id!r} is invalid: at most 30 characters")
    return vm_id


def store_name(vm_id: str) -> str:
    return f"{vm_id}.cow"


def vm_tag(vm_id: str) -> str:
    return f"skycache-vm.{vm_id}"


def base_tag(base: str) -> str:
    return f"skycache-base.{base}"


def cow_tag(cow: str) -> str:
    return f"skycache-cow.{cow}"


def image_tag(repo: str, base: str) -> str:
    return f"skycache-image.{repo}.{base}"


@dataclass(frozen=True)
class VmNote:
    """What only this node knows about a VM disk (the rest is in tags and dm tables)."""

    vm_id: str
    kind: str
    repo: str = ""
    image: str = ""  # the base (clone) or the image itself (ln)
    cow: str = ""
    portal: str = ""
    cache_vg: str = ""
    read_cache: int = 0
    write_cache: int = 0
    write_engine: str = ""
    exported_base: bool = False
    size: int = 0
    state: str = "live"  # live | synced

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def note_path(vm_id: str) -> Path:
    return state.state_dir() / "vmdisks" / f"{vm_id}.json"


def load_note(vm_id: str) -> VmNote | None:
    data = state.read_json(note_path(vm_id), None)
    if not isinstance(data, dict):
        return None
    known = set(VmNote.__dataclass_fields__)
    return VmNote(**{k: v for k, v in data.items() if k in known})


def save_note(note: VmNote) -> None:
    state.write_json_private(note_path(note.vm_id), note.as_dict())


def drop_note(vm_id: str) -> None:
    note_path(vm_id).unlink(missing_ok=True)


def all_notes() -> list[VmNote]:
    d = state.state_dir() / "vmdisks"
    notes = [load_note(p.stem) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
    return [n for n in notes if n is not None]


# -- small steps ----------------------------------------------------------------------------------


def _fn(
    description: str,
    do: Callable[[Runner], object],
    undo: Callable[[Runner], object] | None = None,
    shown: tuple[str, ...] = (),
) -> Action:
    return legacy_action(description, do, undo, shown)


def _ensure_lv(runner: Runner, vg: str, name: str, size: int, tags: list[str]) -> str:
    lv = lvm.find_lv(runner, vg, name)
    if lv is None:
        extra = [w for t in tags for w in ("--addtag", t)]
        lvm.create_lv(runner, vg, name, node.round_extent(size), extra=extra)
        return f"/dev/{vg}/{name}"
    lvm.require_owned_lv(runner, vg, name)
    return lv.device


def _base_image(runner: Runner, ref: str) -> image.Image:
    img = image.get_image(runner, ref)
    if img.backend != "lvm":
        raise InvalidInput(f"image {ref!r} is a file image: VM disks need an LVM repository")
    return img


def _node_initiator() -> str:
    return iscsi.initiator_name()


def _exported(repo: str, name: str) -> bool:
    return lio.find_export(lio.target_iqn(repo, name)) is not None


def _attached_device(runner: Runner, repo: str, name: str) -> str | None:
    iqn = lio.target_iqn(repo, name)
    for s in iscsi.sessions(runner):
        if s.iqn == iqn and s.disks:
            return f"/dev/{s.disks[0]}"
    return None


def _attach(runner: Runner, repo: str, name: str, portal: iscsi.Portal) -> str:
    return _attached_device(runner, repo, name) or image.attach(runner, f"{repo}/{name}", portal)


def _session_users(disk: str) -> list[str]:
    return sorted(p.name for p in Path("/sys/block", Path(disk).name, "holders").glob("*"))


# -- the read cache (persistent, shared) ----------------------------------------------------------


@dataclass(frozen=True)
class RcLvs:
    meta: str
    data: str
    guard: str


GUARD_COW = 4 * 1024**2


def rc_lv_names(repo: str, base: str) -> tuple[str, str]:
    stem = f"rc.{repo}.{base}"
    return f"{stem}.m", f"{stem}.d"


def rc_guard_lv_name(repo: str, base: str) -> str:
    return f"rc.{repo}.{base}.g"


def ensure_rc_lvs(runner: Runner, vg: str, repo: str, base: str, size: int, base_uuid: str) -> RcLvs:
    """The read cache's LVs: reused when they exist (that keeps the cache warm), else created.

    The LVs carry the base LV's uuid in a tag; a cache left from an older image of the same name is
    emptied (metadata zeroed) instead of serving stale blocks.
    """
    meta_name, data_name = rc_lv_names(repo, base)
    uuid_tag = f"skycache-uuid.{base_uuid}"
    tags = [RC_TAG, image_tag(repo, base), uuid_tag]
    meta_size = dmcache.metadata_bytes(size, layers.RC_BLOCK)
    existing = lvm.find_lv(runner, vg, meta_name)
    meta = _ensure_lv(runner, vg, meta_name, meta_size, tags)
    data = _ensure_lv(runner, vg, data_name, size, tags)
    guard = _ensure_lv(runner, vg, rc_guard_lv_name(repo, base), GUARD_COW, tags)
    if existing is not None and uuid_tag not in existing.tags:
        runner.run([*ZERO_4K, f"of={meta}"])
        stale = [t for t in existing.tags if t.startswith("skycache-uuid.")]
        runner.run(
            [
                "lvchange",
                *[w for t in stale for w in ("--deltag", t)],
                "--addtag",
                uuid_tag,
                f"{vg}/{meta_name}",
            ]
        )
    return RcLvs(meta, data, guard)


# -- clone ------------------------------------------------------------------------------------------


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


def plan_clone(runner: Runner, req: CloneRequest, *, rebuild: bool = False) -> tuple[Plan, str]:
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
    base = _base_image(runner, req.base_ref)
    repo = get_repo(runner, base.repo)
    vg = repo.location
    store = store_name(vm_id)
    if dm.exists(runner, layers.vm_name(vm_id)):
        raise Busy(f"VM disk {vm_id!r} already exists on this node")
    existing = lvm.find_lv(runner, vg, store)
    if existing is not None and not rebuild:
        raise Busy(f"VM {vm_id!r} already has a COW store {vg}/{store} (disk purge {vm_id} removes it)")
    if existing is None and rebuild:
        raise NotFound(f"VM {vm_id!r} has no COW store in {repo.name!r}")
    cache_vg = ""
    if req.read_cache or req.write_cache:
        cache_vg = req.cache_vg or node.default_cache_vg(runner)
        node.require_cache_vg(runner, cache_vg)
    for what, size in (("--read-cache", req.read_cache), ("--write-cache", req.write_cache)):
        if size and size < 8 * 1024**2:
            raise InvalidInput(f"{what} {format_size(size)} is too small (at least 8M)")
    store_size = existing.size if existing else (req.store_size or default_store_size(base.size, req.cow))
    if existing is None and store_size > repo.free:
        raise InvalidInput(
            f"COW store of {format_size(store_size)} does not fit in {repo.name!r} "
            f"({format_size(repo.free)} free)"
        )
    base_lv = lvm.require_owned_lv(runner, vg, base.name)
    store_tags = [STORE_TAG, vm_tag(vm_id), base_tag(base.name), cow_tag(req.cow)]
    initiators = [_node_initiator()]
    listen = (portal.address, portal.port)
    exported_base = not _exported(base.repo, base.name)
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
        exported_base,
        base.size,
    )
    plan = Plan(f"clone {req.base_ref} -> VM disk {vm_id} ({req.cow})")
    ctx: dict[str, str] = {}

    # Repository side.
    if not base.read_only:
        plan.add(
            _fn(
                f"make base {base.ref} read-only",
                lambda r: lvm.set_read_only(r, vg, base.name, True),
                shown=(render(lvm.permission_argv(vg, base.name, read_only=True)),),
            )
        )
    if existing is None:
        extra = [w for t in store_tags for w in ("--addtag", t)]
        plan.add(
            _fn(
                f"create COW store {vg}/{store} ({format_size(store_size)})",
                lambda r: lvm.create_lv(r, vg, store, store_size, extra=extra),
                lambda r: lvm.remove_lv(r, vg, store, missing_ok=True),
                (render(lvm.lvcreate_argv(vg, store, store_size, extra=extra)),),
            )
        )
    else:
        plan.add(
            _fn(
                f"mark COW store {vg}/{store} live again",
                lambda r: r.run(["lvchange", "--deltag", SYNCED_TAG, f"{vg}/{store}"]),
            )
        )
    if exported_base:
        plan.extend(
            image.plan_export(runner, base.ref, initiators=initiators, read_only=True, listen=listen).actions
        )
    if not _exported(base.repo, store):
        plan.add(
            _fn(
                f"export COW store {base.repo}/{store} for {initiators[0]}",
                lambda r: image.plan_export(
                    r, f"{base.repo}/{store}", initiators=initiators, listen=listen
                ).apply(r),
                lambda r: image.plan_unexport(r, f"{base.repo}/{store}").apply(r),
            )
        )
    plan.add(
        _fn("save the VM note", lambda r: None if r.dry_run else save_note(note), lambda r: drop_note(vm_id))
    )

    # Node side: attach both LUNs.
    def attach_base(r: Runner) -> None:
        ctx["base"] = _attach(r, base.repo, base.name, portal)

    def detach_base(r: Runner) -> None:
        dev = ctx.get("base")
        if dev and not _session_users(dev):
            image.detach(r, base.ref)

    plan.add(_fn(f"attach base {base.ref} from {portal}", attach_base, detach_base))
    plan.add(
        _fn(
            f"attach COW store {base.repo}/{store} from {portal}",
            lambda r: ctx.__setitem__("store", _attach(r, base.repo, store, portal)),
            lambda r: image.detach(r, f"{base.repo}/{store}", force=True),
        )
    )

    def build(r: Runner) -> None:
        try:
            _build_stack(r, req, note, ctx, base_lv.uuid, fresh=existing is None)
        except BaseException:
            unbuild(r)  # the failing step's own partial work: the plan undoes only finished steps
            raise

    def unbuild(r: Runner) -> None:
        for name in layers.all_vm_devices(vm_id):
            dm.remove(r, name, force=True)
        _release_rc(r, note)
        if cache_vg:
            for lv in _wb_lv_names(vm_id):
                lvm.remove_lv(r, cache_vg, lv, missing_ok=True)

    rc_note = f"read cache {format_size(req.read_cache)} in {cache_vg}; " if req.read_cache else ""
    wb_note = (
        f"write-back cache {format_size(req.write_cache)} ({req.write_engine}) in {cache_vg}; "
        if req.write_cache
        else ""
    )
    plan.add(
        _fn(f"build the stack: {rc_note}{wb_note}{req.cow} device {layers.vm_name(vm_id)}", build, unbuild)
    )
    return plan, dm.path(layers.vm_name(vm_id))


def _wb_lv_names(vm_id: str) -> tuple[str, str]:
    return f"wb.{vm_id}.d", f"wb.{vm_id}.m"


def _build_stack(
    runner: Runner, req: CloneRequest, note: VmNote, ctx: dict[str, str], base_uuid: str, *, fresh: bool
) -> None:
    vm_id = req.vm_id
    base_dev, store_dev = ctx["base"], ctx["store"]
    rc = None
    if req.read_cache:
        lvs = ensure_rc_lvs(runner, note.cache_vg, note.repo, note.image, req.read_cache, base_uuid)
        rc = layers.ReadCacheDevs(
            layers.rc_name(note.cache_vg, note.repo, note.image), lvs.meta, lvs.data, lvs.guard
        )
    wc = None
    if req.write_cache:
        data_name, meta_name = _wb_lv_names(vm_id)
        tags = [WB_TAG, vm_tag(vm_id)]
        data = _ensure_lv(runner, note.cache_vg, data_name, req.write_cache, tags)
        meta = ""
        if req.write_engine == "dmcache":
            meta = _ensure_lv(
                runner,
                note.cache_vg,
                meta_name,
                dmcache.metadata_bytes(req.write_cache, layers.WB_BLOCK),
                tags,
            )
        wc = layers.WriteCacheDevs(req.write_engine, data, meta)
        # A write-back cache is transient: start it empty (writecache superblock / dm-cache metadata).
        runner.run([*ZERO_4K, f"of={meta or data}"])
    if wc is not None:
        # The VM's flushes end at the write-back cache instead of waiting for the repository (a
        # repository outage would stall them): blockqueue's docstring says why and what it costs.
        blockqueue.set_write_cache(runner, store_dev, "write through")
    spec = layers.StackSpec(
        vm_id,
        req.cow,
        base_dev,
        dm.device_sectors(runner, base_dev),
        store_dev,
        dm.device_sectors(runner, store_dev),
        rc,
        wc,
    )
    for layer in layers.build_order(spec):
        if layer.shared and dm.exists(runner, layer.name):
            continue  # the read cache of this image is already up (another VM uses it)
        if fresh and layer.role == "vm" and spec.cow == "snapshot":
            # A zero header makes dm-snapshot initialise a new persistent exception store.
            runner.run([*ZERO_4K, f"of={layers.store_top(spec)}"])
        dm.create(runner, layer.name, layer.table)
        if fresh and layer.role == "tm":
            runner.run([*ZERO_4K, f"of={dm.path(layer.name)}"])  # new pool metadata
        if fresh and layer.role == "tp":
            dm.message(runner, layer.name, 0, "create_thin", "0")


def clone(runner: Runner, req: CloneRequest, *, dry_run_lines: list[str] | None = None) -> str:
    plan, path = plan_clone(runner, req)
    if dry_run_lines is not None:
        dry_run_lines.extend(plan.describe())
        return path
    plan.apply(runner)
    return path


# -- release of shared parts ----------------------------------------------------------------------


def _rc_users(runner: Runner, rc: str) -> list[str]:
    """Devices stacked on the read cache (VM disks of the same image on this node)."""
    if not dm.exists(runner, rc):
        return []
    return dm.holders(rc)


def _release_rc(runner: Runner, note: VmNote) -> None:
    """Stop the image's read cache when no VM disk uses it any more; its LVs (and contents) stay.

    A clean dm-cache removal writes its metadata, so the next clone of the image starts warm.
    """
    if not note.read_cache or not note.cache_vg:
        return
    rc = layers.rc_name(note.cache_vg, note.repo, note.image)
    if dm.exists(runner, rc) and not _rc_users(runner, rc):
        dmcache.remove(runner, rc)
    guard = layers.rc_guard_name(rc)
    if not dm.exists(runner, rc) and dm.exists(runner, guard) and not dm.holders(guard):
        dm.remove(runner, guard)


def _release_base(runner: Runner, note: VmNote) -> None:
    """Log out of the base when nothing on this node sits on it; unexport it if this VM exported it
    and no other live VM store of the base remains."""
    dev = _attached_device(runner, note.repo, note.image)
    if dev and not _session_users(dev):
        image.detach(runner, f"{note.repo}/{note.image}")
    if not note.exported_base or not _exported(note.repo, note.image):
        return
    repo = get_repo(runner, note.repo)
    for lv in lvm.list_lvs(runner, repo.location):
        if (
            STORE_TAG in lv.tags
            and base_tag(note.image) in lv.tags
            and SYNCED_TAG not in lv.tags
            and lv.name != store_name(note.vm_id)
        ):
            return  # another VM of this base is still live
    if dev is None or not _session_users(dev):
        lio.plan_remove(runner, note.repo, note.image, missing_ok=True).apply(runner)


# -- delete / purge ---------------------------------------------------------------------------------


def current_note(runner: Runner, vm_id: str) -> VmNote | None:
    """The VM's note if the system still has something of it; a note left behind by a teardown
    (no device, no store, no volume) is dropped: the system's records win."""
    note = load_note(vm_id)
    if note is None:
        return None
    if dm.exists(runner, layers.vm_name(vm_id)) or _find_store(runner, vm_id) is not None:
        return note
    if note.cache_vg and lvm.find_lv(runner, note.cache_vg, vol_name(vm_id)) is not None:
        return note
    if not runner.dry_run:
        drop_note(vm_id)
    return None


def require_note(vm_id: str, runner: Runner | None = None) -> VmNote:
    check_vm_id(vm_id)
    note = current_note(runner, vm_id) if runner is not None else load_note(vm_id)
    if note is None:
        raise NotFound(f"VM disk {vm_id!r} is not known on this node")
    return note


def plan_delete(runner: Runner, vm_id: str, *, sync: bool = False, progress: Progress = _quiet) -> Plan:
    """Tear the VM's stack down. ``sync``: flush the write-back cache into the COW store first and
    keep the store (listed as synced); without it, the store and any cached writes are discarded."""
    note = require_note(vm_id, runner)
    plan = Plan(f"delete VM disk {vm_id}" + (" (sync to the repository)" if sync else ""))
    if note.state == "synced" and note.kind == "clone":
        plan.add(_fn(f"VM disk {vm_id} is already synced: forget the node note", lambda r: drop_note(vm_id)))
        return plan
    if note.kind != "clone":
        return _plan_delete_simple(runner, note)
    repo = get_repo(runner, note.repo)
    vg = repo.location
    store = store_name(vm_id)
    top = layers.vm_name(vm_id)
    tm, td, tp = layers.thin_names(vm_id)
    wb = layers.wb_name(vm_id)

    def remove_cow(r: Runner) -> None:
        # The COW devices write their own metadata (exceptions, pool superblock) as they go away,
        # into the write-back cache below them: remove them before flushing it.
        for name in (top, tp, td, tm):
            dm.remove(r, name)

    plan.add(
        _fn(
            f"remove {top} (and its thin pool)",
            remove_cow,
            shown=tuple(f"dmsetup remove {n}" for n in (top, tp, td, tm)),
        )
    )
    if note.write_cache:
        if sync:

            def flush(r: Runner) -> None:
                if dm.exists(r, wb):
                    cachestatus.flush(r, wb, lambda n: progress(f"{wb}: {n} blocks to write back"))

            plan.add(
                _fn(
                    f"flush write-back cache {wb} to the COW store",
                    flush,
                    shown=(
                        f"dmsetup message {wb} 0 cleaner (poll until clean)",
                        "sync the store LUN (its write cache flag on for it: a flush on the repository)",
                    ),
                )
            )

        def remove_wb(r: Runner) -> None:
            if sync:
                _remove_clean_cache(r, wb)
            else:
                dm.remove(r, wb, force=True)

        plan.add(_fn(f"remove {wb}" + ("" if sync else " (discarding its unwritten blocks)"), remove_wb))
        for lv in _wb_lv_names(vm_id):
            plan.add(
                _fn(
                    f"remove cache LV {note.cache_vg}/{lv}",
                    _remove_lv_step(note.cache_vg, lv),
                )
            )
    store_ref = f"{note.repo}/{store}"
    plan.add(_fn(f"detach COW store {store_ref}", lambda r: image.detach(r, store_ref)))
    plan.add(
        _fn(
            f"unexport COW store {store_ref}",
            lambda r: lio.plan_remove(r, note.repo, store, missing_ok=True).apply(r),
        )
    )
    if sync:
        plan.add(_fn(f"mark {vg}/{store} synced", lambda r: _tag(r, vg, store, SYNCED_TAG)))
    else:
        plan.add(
            _fn(f"remove COW store {vg}/{store}", lambda r: lvm.remove_lv(r, vg, store, missing_ok=True))
        )
    plan.add(_fn("stop the read cache if unused (its LVs stay warm)", lambda r: _release_rc(r, note)))
    plan.add(_fn(f"release base {note.repo}/{note.image}", lambda r: _release_base(r, note)))
    if sync:
        synced = VmNote(**{**note.as_dict(), "state": "synced"})
        plan.add(_fn("note the VM disk as synced", lambda r: None if r.dry_run else save_note(synced)))
    else:
        plan.add(_fn("forget the VM note", lambda r: drop_note(vm_id)))
    return plan


def _remove_lv_step(vg: str, lv: str) -> Callable[[Runner], object]:
    def step(r: Runner) -> None:
        lvm.remove_lv(r, vg, lv, missing_ok=True)

    return step


def _remove_clean_cache(runner: Runner, name: str) -> None:
    """Remove a write-back cache only when clean (dmcache/writecache refuse a dirty one)."""
    if not dm.exists(runner, name):
        return
    unwritten = cachestatus.dirty_count(runner, name)
    if unwritten:
        raise Busy(f"write-back cache {name!r} still holds {unwritten} unwritten blocks")
    dm.remove(runner, name)


def _tag(runner: Runner, vg: str, lv: str, tag: str) -> None:
    runner.run(["lvchange", "--addtag", tag, f"{vg}/{lv}"], retry=lvm.LOCK_RETRY)


def _plan_delete_simple(runner: Runner, note: VmNote) -> Plan:
    vm_id = note.vm_id
    top = layers.vm_name(vm_id)
    plan = Plan(f"delete VM disk {vm_id} ({note.kind})")
    plan.add(_fn(f"remove {top}", lambda r: dm.remove(r, top), shown=(f"dmsetup remove {top}",)))
    if note.kind == "ln":
        ref = f"{note.repo}/{note.image}"
        plan.add(_fn(f"detach {ref}", lambda r: image.detach(r, ref)))
        if note.exported_base:
            plan.add(
                _fn(
                    f"unexport {ref}",
                    lambda r: lio.plan_remove(r, note.repo, note.image, missing_ok=True).apply(r),
                )
            )
    else:
        lv = vol_name(vm_id)
        plan.add(
            _fn(
                f"remove LV {note.cache_vg}/{lv}",
                lambda r: lvm.remove_lv(r, note.cache_vg, lv, missing_ok=True),
            )
        )
    plan.add(_fn("forget the VM note", lambda r: drop_note(vm_id)))
    return plan


def plan_purge(runner: Runner, vm_id: str) -> Plan:
    """Remove a synced COW store from the repository (refused while the VM disk is live)."""
    check_vm_id(vm_id)
    store = _find_store(runner, vm_id)
    if store is None:
        raise NotFound(f"VM {vm_id!r} has no COW store in any repository")
    if SYNCED_TAG not in store.tags or dm.exists(runner, layers.vm_name(vm_id)):
        raise Busy(f"VM disk {vm_id!r} is live: delete it (with or without --sync) before purging")
    plan = Plan(f"purge COW store of VM {vm_id}")
    plan.add(_fn(f"remove {store.vg}/{store.name}", lambda r: lvm.remove_lv(r, store.vg, store.name)))
    plan.add(_fn("forget the VM note", lambda r: drop_note(vm_id)))
    return plan


def _find_store(runner: Runner, vm_id: str) -> lvm.LV | None:
    for lv in lvm.list_lvs(runner):
        if lv.owned and STORE_TAG in lv.tags and vm_tag(vm_id) in lv.tags:
            return lv
    return None


# -- save -------------------------------------------------------------------------------------------


def _tag_value(tags: tuple[str, ...], prefix: str) -> str:
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), "")


def plan_save(runner: Runner, vm_id: str, new_ref: str, *, progress: Progress = _quiet) -> Plan:
    """Materialise base + COW store as a new image on the repository.

    On the repository a read-only dm device joins the base LV and the store LV (dm-snapshot with
    the store as persistent COW, or a thin pool over a copy of the store's metadata with the base as
    external origin); it is copied into a new LV. A live VM disk is flushed and suspended for the
    copy, then resumed.
    """
    check_vm_id(vm_id)
    store = _find_store(runner, vm_id)
    if store is None:
        raise NotFound(f"VM {vm_id!r} has no COW store (only clones can be saved)")
    base_name = _tag_value(store.tags, "skycache-base.")
    cow = _tag_value(store.tags, "skycache-cow.")
    repo_name = next(
        (r.name for r in [get_repo(runner, new_ref.split("/")[0])] if r.location == store.vg), ""
    )
    if not repo_name:
        raise InvalidInput(f"{new_ref!r} must be in the repository of VM {vm_id!r} (VG {store.vg!r})")
    _, new = image.split_ref(new_ref)
    if lvm.find_lv(runner, store.vg, new) is not None:
        raise Busy(f"image {new_ref!r} already exists")
    base_lv = lvm.require_owned_lv(runner, store.vg, base_name)
    live = dm.exists(runner, layers.vm_name(vm_id))
    sectors = base_lv.size // 512
    vg = store.vg
    mat = f"skycache-mat-{vm_id}"
    td, tp = (f"skycache-mat{x}-{vm_id}" for x in ("td", "tp"))
    plan = Plan(f"save VM disk {vm_id} as {new_ref}")
    base_dev, store_dev = f"/dev/{vg}/{base_name}", f"/dev/{vg}/{store.name}"
    # thin: the pool is loaded over a copy of the store's metadata area, so the store is only read.
    # (A pool over the store's own metadata would write its superblock; and the "read_only" pool
    # feature is refused on a pool's first load: "only available after the thin-pool has been
    # created and first used in full read/write mode", thin-provisioning.rst.)
    meta_copy = f"{new}.matmeta"
    meta, data = layers.thin_split(dm.device_sectors(runner, store_dev)) if cow == "thin" else (0, 0)
    # Every LVM command runs before the VM disk is suspended or after it is resumed: an LVM scan
    # reads every block device, and a read of a suspended dm device waits until it is resumed (seen
    # in the lab: the `vgs` after an `lvcreate` hung there; lvm.conf ignore_suspended_devices says
    # the same).
    plan.add(
        _fn(
            f"create image LV {vg}/{new} ({format_size(base_lv.size)})",
            lambda r: lvm.create_lv(r, vg, new, base_lv.size),
            lambda r: lvm.remove_lv(r, vg, new, missing_ok=True),
            (render(lvm.lvcreate_argv(vg, new, base_lv.size)),),
        )
    )
    if cow == "thin":
        plan.add(
            _fn(
                f"create LV {vg}/{meta_copy} for a copy of the store's thin-pool metadata",
                lambda r: lvm.create_lv(r, vg, meta_copy, meta * 512),
                lambda r: lvm.remove_lv(r, vg, meta_copy, missing_ok=True),
                (render(lvm.lvcreate_argv(vg, meta_copy, meta * 512)),),
            )
        )
    # The write-back cache's table before the flush: the flush leaves it writing back everything and
    # caching nothing (dm-cache cleaner policy, dm-writecache cleaner mode); the VM gets it back after.
    wb_table: dict[str, str] = {}
    if live:
        wb = layers.wb_name(vm_id)
        top = layers.vm_name(vm_id)
        tops = [top, layers.thin_names(vm_id)[2]] if cow == "thin" else [top]

        def quiesce(r: Runner) -> None:
            for name in tops:
                dm.suspend(r, name)  # flushes the COW metadata (exceptions / pool commit) downwards
            if dm.exists(r, wb):
                wb_table[wb] = cachestatus.table_line(r, wb)
                cachestatus.flush(r, wb, lambda n: progress(f"{wb}: {n} blocks to write back"))

        def restore_caching(r: Runner) -> None:
            for name, line in wb_table.items():
                cachestatus.resume_caching(r, name, line)

        def thaw(r: Runner) -> None:
            restore_caching(r)
            for name in reversed(tops):
                dm.resume(r, name)

        plan.add(_fn(f"suspend {top} and flush its write-back cache", quiesce, thaw))

    def materialise(r: Runner) -> None:
        if cow == "snapshot":
            dm.create(r, mat, [dm.snapshot(base_dev, store_dev, sectors)], readonly=True)
            return
        r.run([*COPY, f"if={store_dev}", f"of=/dev/{vg}/{meta_copy}", f"count={-(-meta * 512 // (4 << 20))}"])
        dm.create(r, td, [dm.linear(store_dev, data, offset=meta)])
        dm.create(r, tp, layers.thin_pool_line(f"/dev/{vg}/{meta_copy}", dm.path(td), data))
        dm.create(r, mat, [dm.thin(dm.path(tp), 0, sectors, external_origin=base_dev)], readonly=True)

    def unmaterialise(r: Runner) -> None:
        for name in (mat, tp, td):
            dm.remove(r, name)

    plan.add(
        _fn(f"join base {base_name} and store {store.name} read-only ({cow})", materialise, unmaterialise)
    )
    plan.add(
        Action.command(f"copy {mat} into {vg}/{new}", [*COPY, f"if={dm.path(mat)}", f"of=/dev/{vg}/{new}"])
    )
    plan.add(_fn(f"remove {mat}", unmaterialise))
    if live:

        def resume(r: Runner) -> None:
            restore_caching(r)
            names = [layers.thin_names(vm_id)[2]] if cow == "thin" else []
            for name in [*names, layers.vm_name(vm_id)]:
                dm.resume(r, name)

        plan.add(_fn(f"restore the write-back cache's mode and resume {layers.vm_name(vm_id)}", resume))
    if cow == "thin":
        plan.add(_fn(f"remove {vg}/{meta_copy}", lambda r: lvm.remove_lv(r, vg, meta_copy, missing_ok=True)))
    return plan


# -- ln, mkimage, mkswap ------------------------------------------------------------------------------


def vol_name(vm_id: str) -> str:
    return f"vol.{vm_id}"


def plan_ln(runner: Runner, vm_id: str, ref: str, portal_text: str) -> tuple[Plan, str]:
    """Attach a persistent image itself (no COW): the VM disk is a dm-linear over its LUN."""
    check_vm_id(vm_id)
    portal = iscsi.parse_portal(portal_text)
    img = _base_image(runner, ref)
    if img.read_only:
        raise InvalidInput(f"image {ref!r} is read-only (a base): clone it instead of linking it")
    top = layers.vm_name(vm_id)
    if dm.exists(runner, top) or current_note(runner, vm_id):
        raise Busy(f"VM disk {vm_id!r} already exists on this node")
    exported = _exported(img.repo, img.name)
    note = VmNote(
        vm_id, "ln", img.repo, img.name, portal=str(portal), exported_base=not exported, size=img.size
    )
    plan = Plan(f"ln {ref} -> VM disk {vm_id}")
    if not exported:
        listen = (portal.address, portal.port)
        plan.extend(image.plan_export(runner, ref, initiators=[_node_initiator()], listen=listen).actions)
    plan.add(
        _fn("save the VM note", lambda r: None if r.dry_run else save_note(note), lambda r: drop_note(vm_id))
    )
    ctx: dict[str, str] = {}
    plan.add(
        _fn(
            f"attach {ref} from {portal}",
            lambda r: ctx.__setitem__("dev", _attach(r, img.repo, img.name, portal)),
            lambda r: image.detach(r, ref, force=True),
        )
    )
    plan.add(
        _fn(
            f"create {top} (linear over the LUN)",
            lambda r: dm.create(r, top, [dm.linear(ctx["dev"], dm.device_sectors(r, ctx["dev"]))]),
            lambda r: dm.remove(r, top, force=True),
        )
    )
    return plan, dm.path(top)


def plan_mkimage(
    runner: Runner, vm_id: str, size: int, *, cache_vg: str = "", swap: bool = False
) -> tuple[Plan, str]:
    """A new empty local disk (an LV in the node cache VG behind ``skycache-vm-<id>``); ``swap``
    formats it as swap."""
    check_vm_id(vm_id)
    if size <= 0:
        raise InvalidInput(f"size {size} is not positive")
    vg = cache_vg or node.default_cache_vg(runner)
    cvg = node.require_cache_vg(runner, vg)
    size = node.round_extent(size)
    if size > cvg.free:
        raise InvalidInput(
            f"size {format_size(size)} is larger than the free space of {vg!r} ({format_size(cvg.free)})"
        )
    top = layers.vm_name(vm_id)
    if dm.exists(runner, top) or current_note(runner, vm_id):
        raise Busy(f"VM disk {vm_id!r} already exists on this node")
    lv = vol_name(vm_id)
    kind = "mkswap" if swap else "mkimage"
    note = VmNote(vm_id, kind, cache_vg=vg, size=size)
    tags = [VOL_TAG, vm_tag(vm_id)]
    extra = [w for t in tags for w in ("--addtag", t)]
    plan = Plan(f"{kind} VM disk {vm_id} ({format_size(size)})")
    plan.add(
        _fn(
            f"create LV {vg}/{lv}",
            lambda r: lvm.create_lv(r, vg, lv, size, extra=extra),
            lambda r: lvm.remove_lv(r, vg, lv, missing_ok=True),
            (render(lvm.lvcreate_argv(vg, lv, size, extra=extra)),),
        )
    )
    plan.add(
        _fn(
            f"create {top}",
            lambda r: dm.create(r, top, [dm.linear(f"/dev/{vg}/{lv}", size // 512)]),
            lambda r: dm.remove(r, top, force=True),
        )
    )
    if swap:
        plan.add(Action.command(f"format {top} as swap", ["mkswap", dm.path(top)]))
    plan.add(
        _fn("save the VM note", lambda r: None if r.dry_run else save_note(note), lambda r: drop_note(vm_id))
    )
    return plan, dm.path(top)


# -- mv -------------------------------------------------------------------------------------------


def plan_mv(
    runner: Runner, vm_id: str, to_cache_vg: str, *, portal: str = "", progress: Progress = _quiet
) -> tuple[Plan, str]:
    """Synchronise the VM disk, then rebuild it on the other node (here: with another cache VG).

    On a testbed the second half runs on the target node (its runner); in the lab a second cache VG
    on the same host stands for the other node.
    """
    note = require_note(vm_id, runner)
    if note.kind != "clone":
        raise InvalidInput(f"VM disk {vm_id!r} is a {note.kind} disk: only clones can move")
    node.require_cache_vg(runner, to_cache_vg)
    plan = plan_delete(runner, vm_id, sync=True, progress=progress)
    req = CloneRequest(
        vm_id,
        f"{note.repo}/{note.image}",
        portal or note.portal,
        note.cow,
        note.read_cache,
        note.write_cache,
        note.write_engine or "writecache",
        to_cache_vg,
    )

    def rebuild(r: Runner) -> None:
        drop_note(vm_id)
        plan2, _ = plan_clone(r, req, rebuild=True)
        plan2.apply(r)

    plan.add(_fn(f"rebuild VM disk {vm_id} with cache VG {to_cache_vg}", rebuild))
    return plan, dm.path(layers.vm_name(vm_id))


# -- list ---------------------------------------------------------------------------------------------


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


def list_disks(runner: Runner) -> list[DiskInfo]:
    """VM disks from the system's records (dm devices, store LVs), with the node notes' details."""
    names = set(dm.ls(runner))
    notes = {n.vm_id: n for n in all_notes() if current_note(runner, n.vm_id) is not None}
    stores = {
        _tag_value(lv.tags, "skycache-vm."): lv
        for lv in lvm.list_lvs(runner)
        if lv.owned and STORE_TAG in lv.tags
    }
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
        if layers.wb_name(vm_id) in names:
            try:
                dirty = cachestatus.dirty_count(runner, layers.wb_name(vm_id))
            except SkycacheError:
                dirty = None
        image_ref = f"{note.repo}/{note.image}" if note and note.repo else ""
        if not image_ref and store is not None:
            image_ref = f"{store.vg}/{_tag_value(store.tags, 'skycache-base.')}"
        out.append(
            DiskInfo(
                vm_id,
                note.kind if note else "clone",
                st,
                image_ref,
                note.cow if note else (_tag_value(store.tags, "skycache-cow.") if store else ""),
                note.read_cache if note else 0,
                note.write_cache if note else 0,
                note.write_engine if note else "",
                dm.path(layers.vm_name(vm_id)) if live else "",
                dirty,
                devices,
            )
        )
    return out


def node_name() -> str:
    return socket.gethostname()
