"""LVM: argv builders, ``--reportformat json`` parsers and a thin layer that runs them.

Every VG and LV skycache creates carries the LVM tag ``skycache``; changes and removals go through
:func:`require_owned_vg` / :func:`require_owned_lv`, which refuse untagged objects even when named.
Sizes are bytes everywhere (reports are asked for with ``--units b --nosuffix``); LVM rounds LV sizes
up to whole extents (4 MiB by default).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from skycache.errors import Busy, InvalidInput, NotFound
from skycache.ownership import LVM_TAG, check_name, require_tagged
from skycache.plan import Action, Command
from skycache.runner import Retry, Runner
from skycache.storage.kernel import loopdev
from skycache.storage.kernel.directory import existing_entries
from skycache.units import format_size

# lvremove/lvchange -an race with udev (blkid probing the new node): "Logical volume ... in use" or
# "device-mapper: remove ioctl ... failed: Device or resource busy" go away after a moment.
UDEV_RETRY = Retry(
    exit_codes=frozenset(),
    attempts=6,
    first_delay_s=0.5,
    stderr_contains=("in use", "busy", "Can't remove open logical volume"),
)
# Other LVM commands hold the global lock for a moment; "Another command holds the lock" style
# failures are transient, a real error is not matched here and is raised at once.
LOCK_RETRY = Retry(exit_codes=frozenset(), attempts=4, first_delay_s=0.5, stderr_contains=("lock",))

LV_FIELDS = (
    "vg_name,lv_name,lv_size,lv_attr,lv_tags,origin,pool_lv,lv_path,lv_dm_path,segtype,data_percent,lv_uuid"
)
VG_FIELDS = "vg_name,vg_size,vg_free,vg_tags,pv_count,lv_count,vg_extent_size"
PV_FIELDS = "pv_name,vg_name,pv_size,pv_free,pv_tags"
REPORT_OPTS = ("--reportformat", "json", "--units", "b", "--nosuffix")


@dataclass(frozen=True)
class LV:
    vg: str
    name: str
    size: int
    attr: str  # lvs(8) lv_attr: [0] type, [1] permissions, [4] state, [5] open...
    tags: tuple[str, ...]
    origin: str
    pool_lv: str
    path: str
    dm_path: str
    segtype: str
    data_percent: str
    uuid: str

    @property
    def full_name(self) -> str:
        return f"{self.vg}/{self.name}"

    @property
    def owned(self) -> bool:
        return LVM_TAG in self.tags

    @property
    def read_only(self) -> bool:
        return len(self.attr) > 1 and self.attr[1] == "r"

    @property
    def active(self) -> bool:
        return len(self.attr) > 4 and self.attr[4] == "a"

    @property
    def opened(self) -> bool:
        return len(self.attr) > 5 and self.attr[5] == "o"

    @property
    def hidden(self) -> bool:
        """Internal LVs (thin pool data/metadata, ...): lvs shows them as ``[name]``."""
        return self.name.startswith("[")

    @property
    def is_thin_pool(self) -> bool:
        return self.segtype == "thin-pool"

    @property
    def device(self) -> str:
        return self.dm_path or self.path


@dataclass(frozen=True)
class VG:
    name: str
    size: int
    free: int
    tags: tuple[str, ...]
    pv_count: int
    lv_count: int
    extent_size: int

    @property
    def owned(self) -> bool:
        return LVM_TAG in self.tags


@dataclass(frozen=True)
class PV:
    name: str
    vg: str
    size: int
    free: int
    tags: tuple[str, ...]


# -- parsers -----------------------------------------------------------------------------------------


def _rows(text: str, key: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    data = json.loads(text)
    rows: list[dict[str, Any]] = []
    for report in data.get("report", []):
        rows += report.get(key, [])
    return rows


def _int(value: Any) -> int:
    text = str(value or "0").strip()
    return int(float(text)) if text else 0


def _tags(value: Any) -> tuple[str, ...]:
    return tuple(t for t in str(value or "").split(",") if t)


def parse_lvs(text: str) -> list[LV]:
    return [
        LV(
            vg=r["vg_name"],
            name=r["lv_name"],
            size=_int(r.get("lv_size")),
            attr=r.get("lv_attr", ""),
            tags=_tags(r.get("lv_tags")),
            origin=r.get("origin", ""),
            pool_lv=r.get("pool_lv", ""),
            path=r.get("lv_path", ""),
            dm_path=r.get("lv_dm_path", ""),
            segtype=r.get("segtype", ""),
            data_percent=r.get("data_percent", ""),
            uuid=r.get("lv_uuid", ""),
        )
        for r in _rows(text, "lv")
    ]


def parse_vgs(text: str) -> list[VG]:
    return [
        VG(
            name=r["vg_name"],
            size=_int(r.get("vg_size")),
            free=_int(r.get("vg_free")),
            tags=_tags(r.get("vg_tags")),
            pv_count=_int(r.get("pv_count")),
            lv_count=_int(r.get("lv_count")),
            extent_size=_int(r.get("vg_extent_size")),
        )
        for r in _rows(text, "vg")
    ]


def parse_pvs(text: str) -> list[PV]:
    return [
        PV(
            name=r["pv_name"],
            vg=r.get("vg_name", ""),
            size=_int(r.get("pv_size")),
            free=_int(r.get("pv_free")),
            tags=_tags(r.get("pv_tags")),
        )
        for r in _rows(text, "pv")
    ]


# -- argv builders -----------------------------------------------------------------------------------


def lvs_argv(vg: str | None = None) -> list[str]:
    return ["lvs", *REPORT_OPTS, "-a", "-o", LV_FIELDS, *([vg] if vg else [])]


def vgs_argv(vg: str | None = None) -> list[str]:
    return ["vgs", *REPORT_OPTS, "-o", VG_FIELDS, *([vg] if vg else [])]


def pvs_argv() -> list[str]:
    return ["pvs", *REPORT_OPTS, "-o", PV_FIELDS]


# Characters LVM allows in VG and LV names (lvm(8) "VALID NAMES"), plus the brackets of hidden LVs.
_LVM_NAME_RE = re.compile(r"[A-Za-z0-9+_.\-\[\]]+")


def _selection(**fields: str) -> str | None:
    """An ``lvs``/``vgs`` ``-S`` selection matching ``field="value"`` for each field, or None when a
    value cannot be an LVM name (nothing can match it, and it must not reach the selection syntax)."""
    if not all(_LVM_NAME_RE.fullmatch(v) for v in fields.values()):
        return None
    return " && ".join(f'{k}="{v}"' for k, v in fields.items())


def lv_lookup_argv(vg: str, name: str) -> list[str] | None:
    """``lvs`` for one LV. A selection, not ``lvs VG``: it matches nothing (exit 0) when the VG or
    the LV is missing, so one command answers what otherwise takes ``vgs`` then ``lvs VG`` (every
    LVM command scans all block devices: 0.3 s each in the lab, hundreds of lookups per test tier).
    """
    sel = _selection(vg_name=vg, lv_name=name)
    return None if sel is None else ["lvs", *REPORT_OPTS, "-a", "-o", LV_FIELDS, "-S", sel]


def vg_lookup_argv(name: str) -> list[str] | None:
    """``vgs`` for one VG by selection: empty (exit 0) when it does not exist."""
    sel = _selection(vg_name=name)
    return None if sel is None else ["vgs", *REPORT_OPTS, "-o", VG_FIELDS, "-S", sel]


def pvcreate_argv(devices: Sequence[str]) -> list[str]:
    return ["pvcreate", "-y", *devices]


def vgcreate_argv(name: str, devices: Sequence[str], *, tags: Sequence[str] = ()) -> list[str]:
    """vgcreate of a skycache VG, tagged, and never auto-activated.

    udev's 69-lvm.rules runs ``vgchange -aay`` for a VG whose PV has just appeared (a loop device's
    first change event), asynchronously and whenever udev gets to it: under TCG that was seconds
    after skycache had deactivated a base for its first thin clone, which then failed with "Cannot
    use active LV for the external origin" (CI, 2026-12-02). skycache activates what it builds itself.
    """
    extra = [w for t in tags for w in ("--addtag", t)]
    return ["vgcreate", "-y", "--setautoactivation", "n", "--addtag", LVM_TAG, *extra, name, *devices]


def lvcreate_argv(vg: str, name: str, size: int, *, extra: Sequence[str] = ()) -> list[str]:
    # -Wy -Zy: wipe stale signatures and zero the start, so an old filesystem does not reappear.
    return [
        "lvcreate", "-y", "-Wy", "-Zy", "-L", f"{size}b", "-n", name, "--addtag", LVM_TAG, *extra, vg,
    ]  # fmt: skip


def thin_pool_argv(vg: str, name: str, size: int) -> list[str]:
    return ["lvcreate", "-y", "--type", "thin-pool", "-L", f"{size}b", "-n", name, "--addtag", LVM_TAG, vg]


def thin_snapshot_argv(vg: str, pool: str, base: str, new: str) -> list[str]:
    """A thin snapshot of a non-thin LV: LVM uses ``base`` as the external (read-only) origin.

    O(1): nothing is copied; unprovisioned blocks are read from the base (dm-thin external origin).
    """
    return [
        "lvcreate",
        "-y",
        "-s",
        "--thinpool",
        f"{vg}/{pool}",
        "-n",
        new,
        "--addtag",
        LVM_TAG,
        f"{vg}/{base}",
    ]


def snapshot_argv(vg: str, base: str, new: str, cow_size: int) -> list[str]:
    """A classic (dm-snapshot) LVM snapshot with a ``cow_size`` exception store; O(1) to create."""
    return ["lvcreate", "-y", "-s", "-L", f"{cow_size}b", "-n", new, "--addtag", LVM_TAG, f"{vg}/{base}"]


def lvremove_argv(vg: str, name: str) -> list[str]:
    return ["lvremove", "-y", f"{vg}/{name}"]


def permission_argv(vg: str, name: str, *, read_only: bool) -> list[str]:
    return ["lvchange", "-p", "r" if read_only else "rw", f"{vg}/{name}"]


def activate_argv(vg: str, name: str, *, active: bool = True) -> list[str]:
    # -K: activate even when the LV has the skip-activation flag (thin snapshots get it by default).
    return ["lvchange", "-a", "y" if active else "n", *(["-K"] if active else []), f"{vg}/{name}"]


# -- queries -----------------------------------------------------------------------------------------


def list_vgs(runner: Runner) -> list[VG]:
    return parse_vgs(runner.query(vgs_argv(), retry=LOCK_RETRY).stdout)


def list_lvs(runner: Runner, vg: str | None = None) -> list[LV]:
    return parse_lvs(runner.query(lvs_argv(vg), retry=LOCK_RETRY).stdout)


def list_pvs(runner: Runner) -> list[PV]:
    return parse_pvs(runner.query(pvs_argv(), retry=LOCK_RETRY).stdout)


def get_vg(runner: Runner, name: str) -> VG:
    argv = vg_lookup_argv(name)
    found = parse_vgs(runner.query(argv, retry=LOCK_RETRY).stdout) if argv else []
    for vg in found:
        if vg.name == name:
            return vg
    raise NotFound(f"volume group {name!r} does not exist")


def find_vg(runner: Runner, name: str) -> VG | None:
    try:
        return get_vg(runner, name)
    except NotFound:
        return None


def get_lv(runner: Runner, vg: str, name: str) -> LV:
    argv = lv_lookup_argv(vg, name)
    found = parse_lvs(runner.query(argv, retry=LOCK_RETRY).stdout) if argv else []
    for lv in found:
        if lv.vg == vg and lv.name == name:
            return lv
    raise NotFound(f"logical volume {vg}/{name} does not exist")


def find_lv(runner: Runner, vg: str, name: str) -> LV | None:
    try:
        return get_lv(runner, vg, name)
    except NotFound:
        return None


def require_owned_vg(runner: Runner, name: str) -> VG:
    vg = get_vg(runner, name)
    require_tagged(name, vg.tags, what="volume group")
    return vg


def require_owned_lv(runner: Runner, vg: str, name: str) -> LV:
    lv = get_lv(runner, vg, name)
    require_tagged(f"{vg}/{name}", lv.tags, what="logical volume")
    return lv


# -- actions for plans (checked against a view of the host: skycache.storage.view) ----------------


class LvmView(Protocol):
    """What the action builders need to know of the host (skycache.storage.view.View provides it)."""

    @property
    def pvs(self) -> tuple[PV, ...]: ...

    @property
    def loops(self) -> tuple[loopdev.Loop, ...]: ...

    def vg(self, name: str) -> VG | None: ...

    def lv(self, vg: str, name: str) -> LV | None: ...

    def lvs_of(self, vg: str) -> list[LV]: ...


def require_owned_vg_in(view: LvmView, name: str) -> VG:
    vg = view.vg(name)
    if vg is None:
        raise NotFound(f"volume group {name!r} does not exist")
    require_tagged(name, vg.tags, what="volume group")
    return vg


def require_owned_lv_in(view: LvmView, vg: str, name: str) -> LV:
    lv = view.lv(vg, name)
    if lv is None:
        raise NotFound(f"logical volume {vg}/{name} does not exist")
    require_tagged(f"{vg}/{name}", lv.tags, what="logical volume")
    return lv


def _tag_args(tags: Sequence[str]) -> list[str]:
    return [w for t in tags for w in ("--addtag", t)]


def lvremove_command(vg: str, name: str) -> Command:
    return Command(tuple(lvremove_argv(vg, name)), retry=UDEV_RETRY)


def lvcreate_action(
    view: LvmView, vg: str, name: str, size: int, *, tags: Sequence[str] = (), what: str = "LV"
) -> Action:
    """A tagged LV of ``size`` bytes in the owned VG ``vg``; the undo removes it."""
    check_name(name, what="logical volume name")
    vgi = require_owned_vg_in(view, vg)
    if size <= 0:
        raise InvalidInput(f"size {size} must be positive")
    if size > vgi.free:
        raise InvalidInput(
            f"size {format_size(size)} is larger than the free space of {vg!r} ({format_size(vgi.free)})"
        )
    if view.lv(vg, name) is not None:
        raise Busy(f"logical volume {vg}/{name} already exists")
    return Action(
        f"create {what} {vg}/{name} ({format_size(size)})",
        (Command(tuple(lvcreate_argv(vg, name, size, extra=_tag_args(tags))), retry=LOCK_RETRY),),
        (lvremove_command(vg, name),),
    )


def lvremove_action(view: LvmView, vg: str, name: str, what: str = "LV") -> Action:
    """Remove an owned LV (retrying udev races); refuses untagged LVs."""
    require_owned_lv_in(view, vg, name)
    return Action(f"remove {what} {vg}/{name}", (lvremove_command(vg, name),))


def read_only_action(view: LvmView, vg: str, name: str, *, what: str = "LV") -> Action | None:
    """Make an owned LV read-only (None when it already is); the undo makes it writable again."""
    lv = require_owned_lv_in(view, vg, name)
    if lv.read_only:
        return None
    return Action(
        f"make {what} {vg}/{name} read-only",
        (Command(tuple(permission_argv(vg, name, read_only=True)), retry=UDEV_RETRY),),
        (Command(tuple(permission_argv(vg, name, read_only=False)), retry=UDEV_RETRY),),
    )


def tag_action(vg: str, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> Action:
    words = [*[w for t in remove for w in ("--deltag", t)], *_tag_args(add)]
    undo = [*[w for t in add for w in ("--deltag", t)], *_tag_args(remove)]
    change = ", ".join([*(f"+{t}" for t in add), *(f"-{t}" for t in remove)])
    return Action(
        f"tag {vg}/{name} ({change})",
        (Command(("lvchange", *words, f"{vg}/{name}"), retry=LOCK_RETRY),),
        (Command(("lvchange", *undo, f"{vg}/{name}"), retry=LOCK_RETRY),),
    )


def thin_pool_action(view: LvmView, vg: str, name: str, size: int) -> Action:
    check_name(name, what="thin pool name")
    require_owned_vg_in(view, vg)
    return Action(
        f"create thin pool {vg}/{name} ({format_size(size)})",
        (Command(tuple(thin_pool_argv(vg, name, size)), retry=LOCK_RETRY),),
        (lvremove_command(vg, name),),
    )


def snapshot_action(view: LvmView, vg: str, base: str, new: str, cow_size: int) -> Action:
    """A classic (dm-snapshot) LVM snapshot of an owned LV with a ``cow_size`` exception store."""
    check_name(new, what="clone name")
    require_owned_lv_in(view, vg, base)
    return Action(
        f"LVM snapshot {vg}/{new} of {vg}/{base} (COW store {format_size(cow_size)})",
        (Command(tuple(snapshot_argv(vg, base, new, cow_size)), retry=LOCK_RETRY),),
        (lvremove_command(vg, new),),
    )


# lvcreate refuses an active LV as a new external origin; right after writes to the base, lvchange
# -an can return before udev has let go of it (seen in the lab), so the lvcreate is retried.
EXTERNAL_ORIGIN_RETRY = Retry(
    exit_codes=frozenset(),
    attempts=5,
    first_delay_s=0.5,
    stderr_contains=("active LV for the external origin",),
)


def thin_snapshot_actions(view: LvmView, vg: str, pool: str, base: str, new: str) -> list[Action]:
    """Thin snapshot of ``base`` with ``base`` as external origin, activated for use.

    LVM turns an LV into an external origin only while it is inactive ("Cannot use active LV for the
    external origin"); once it is one (another thin LV names it as origin), further thin snapshots
    work while it is active. So the first thin clone of a base deactivates it for the lvcreate, which
    is refused while the base is open (exported or attached).
    """
    check_name(new, what="clone name")
    base_lv = require_owned_lv_in(view, vg, base)
    is_external_origin = any(x.origin == base and x.segtype == "thin" for x in view.lvs_of(vg))
    create = Command(tuple(thin_snapshot_argv(vg, pool, base, new)), retry=EXTERNAL_ORIGIN_RETRY)
    undo = (lvremove_command(vg, new),)
    actions: list[Action] = []
    if is_external_origin or not base_lv.active:
        actions.append(Action(f"thin snapshot {vg}/{new} of {vg}/{base} (external origin)", (create,), undo))
    else:
        if base_lv.opened:
            raise Busy(
                f"base {vg}/{base} is open (exported or attached); its first thin clone needs it closed"
            )
        actions.append(
            Action(
                f"thin snapshot {vg}/{new} of {vg}/{base} (external origin; the base is deactivated for it)",
                (
                    Command(tuple(activate_argv(vg, base, active=False)), retry=UDEV_RETRY),
                    Command(("udevadm", "settle", "--timeout=10"), ok_codes=frozenset({0, 1})),
                    create,
                    Command(tuple(activate_argv(vg, base)), retry=UDEV_RETRY),
                ),
                (*undo, Command(tuple(activate_argv(vg, base)), retry=UDEV_RETRY)),
            )
        )
    # Thin snapshots are created with the activation-skip flag; the clone is meant to be used now.
    actions.append(
        Action(f"activate {vg}/{new}", (Command(tuple(activate_argv(vg, new)), retry=UDEV_RETRY),))
    )
    return actions


def vg_create_actions(
    view: LvmView, name: str, devices: Sequence[str], *, tags: Sequence[str] = (), what: str = "VG"
) -> list[Action]:
    """pvcreate + vgcreate (tagged) on ``devices``; refuses devices that already carry a PV."""
    check_name(name, what="volume group name")
    if not devices:
        raise InvalidInput("a volume group needs at least one device")
    if view.vg(name) is not None:
        raise Busy(f"volume group {name!r} already exists")
    in_use = {pv.name: pv.vg for pv in view.pvs}
    for dev in devices:
        if dev in in_use:
            raise Busy(f"device {dev!r} is already an LVM physical volume (VG {in_use[dev] or '-'!r})")
    return [
        Action(
            f"make {', '.join(devices)} LVM physical volume(s)",
            (Command(tuple(pvcreate_argv(devices)), retry=LOCK_RETRY),),
            (Command(("pvremove", "-y", *devices), retry=LOCK_RETRY),),
        ),
        Action(
            f"create tagged {what} {name} on {', '.join(devices)}",
            (Command(tuple(vgcreate_argv(name, devices, tags=tags)), retry=LOCK_RETRY),),
            (Command(("vgremove", "-y", "-f", name), retry=UDEV_RETRY),),
        ),
    ]


def loop_backing_file(directory: str | PurePosixPath, vg: str) -> PurePosixPath:
    return PurePosixPath(directory) / f"skycache-vg-{vg}.img"


def loop_vg_actions(
    view: LvmView,
    runner: Runner,
    name: str,
    size: int,
    directory: str | PurePosixPath,
    *,
    tags: Sequence[str] = (),
    what: str = "VG",
) -> list[Action]:
    """A tagged VG on a loop device over a sparse ``skycache-vg-NAME.img`` in ``directory``.

    The directory is created (0700) when it does not exist: the default one, /var/lib/skycache, is
    missing on a fresh host and in a fresh lab.
    """
    check_name(name, what="volume group name")
    if view.vg(name) is not None:
        raise Busy(f"volume group {name!r} already exists")
    where = PurePosixPath(directory)
    backing = loop_backing_file(where, name)
    actions: list[Action] = []
    if existing_entries(runner, where, what="loop directory") is None:
        actions.append(
            Action(f"create directory {where} (0700)", (Command(("mkdir", "-p", "-m", "0700", str(where))),))
        )
    actions.append(loopdev.sparse_file_action(runner, backing, size))
    device = loopdev.free_device(runner)
    actions.append(loopdev.attach_action(device, backing))
    actions += vg_create_actions(view, name, [device], tags=tags, what=what)
    return actions


def vg_remove_actions(view: LvmView, name: str, *, what: str = "VG") -> list[Action]:
    """Remove an owned VG, its (owned) LVs, its PV labels, and its loop devices and backing files."""
    require_owned_vg_in(view, name)
    for lv in view.lvs_of(name):
        if not lv.hidden and not lv.owned:
            raise Busy(f"volume group {name!r} holds logical volume {lv.name!r} not created by skycache")
    pvs = [pv.name for pv in view.pvs if pv.vg == name]
    loops = {lp.device: lp for lp in view.loops}
    actions = [
        Action(
            f"remove {what} {name} with its LVs", (Command(("vgremove", "-y", "-f", name), retry=UDEV_RETRY),)
        )
    ]
    if pvs:
        actions.append(
            Action(
                f"remove the LVM labels of {', '.join(pvs)}",
                (Command(("pvremove", "-y", *pvs), retry=LOCK_RETRY),),
            )
        )
    for dev in pvs:
        lp = loops.get(dev)
        if lp is not None and lp.owned:
            actions.append(Action(f"detach loop device {dev}", (loopdev.detach_command(dev),)))
            backing = PurePosixPath(lp.backing_file.removesuffix(" (deleted)"))
            if backing.name.startswith("skycache-vg-"):
                actions.append(Action(f"delete {backing}", (Command(("rm", "-f", "--", str(backing))),)))
    return actions
