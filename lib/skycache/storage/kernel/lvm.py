"""LVM: argv builders, ``--reportformat json`` parsers and a thin layer that runs them.

Every VG and LV skycache creates carries the LVM tag ``skycache``; changes and removals go through
:func:`require_owned_vg` / :func:`require_owned_lv`, which refuse untagged objects even when named.
Sizes are bytes everywhere (reports are asked for with ``--units b --nosuffix``); LVM rounds LV sizes
up to whole extents (4 MiB by default).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skycache.errors import Busy, InvalidInput, NotFound
from skycache.ownership import LVM_TAG, check_name, require_tagged
from skycache.runner import CommandError, Retry, Runner
from skycache.storage.kernel import loopdev
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
    extra = [w for t in tags for w in ("--addtag", t)]
    return ["vgcreate", "-y", "--addtag", LVM_TAG, *extra, name, *devices]


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


# -- changes -----------------------------------------------------------------------------------------


def create_vg(runner: Runner, name: str, devices: Sequence[str], *, tags: Sequence[str] = ()) -> None:
    """pvcreate + vgcreate (tagged) on ``devices``; refuses devices that already carry a PV or data."""
    check_name(name, what="volume group name")
    if not devices:
        raise InvalidInput("a volume group needs at least one device")
    if find_vg(runner, name):
        raise Busy(f"volume group {name!r} already exists")
    in_use = {pv.name: pv.vg for pv in list_pvs(runner)}
    for dev in devices:
        if not Path(dev).exists() and not runner.dry_run:
            raise InvalidInput(f"device {dev!r} does not exist")
        if dev in in_use:
            raise Busy(f"device {dev!r} is already an LVM physical volume (VG {in_use[dev] or '-'!r})")
    runner.run(pvcreate_argv(devices), retry=LOCK_RETRY)
    try:
        runner.run(vgcreate_argv(name, devices, tags=tags), retry=LOCK_RETRY)
    except CommandError:
        runner.run(["pvremove", "-y", *devices], check=False)
        raise


def loop_backing_file(directory: str | Path, vg: str) -> Path:
    return Path(directory) / f"skycache-vg-{vg}.img"


def create_loop_vg(
    runner: Runner, name: str, size: int, directory: str | Path, *, tags: Sequence[str] = ()
) -> str:
    """A tagged VG on a loop device over a sparse ``skycache-vg-NAME.img`` in ``directory``.

    Returns the loop device. Undoes the file and the loop device when the VG cannot be made.
    """
    check_name(name, what="volume group name")
    if find_vg(runner, name):
        raise Busy(f"volume group {name!r} already exists")
    backing = loopdev.create_sparse(runner, loop_backing_file(directory, name), size)
    device = ""
    try:
        device = loopdev.attach(runner, backing)
        create_vg(runner, name, [device], tags=tags)
    except BaseException:
        if device and not runner.dry_run:
            loopdev.detach(runner, device)
        if not runner.dry_run:
            backing.unlink(missing_ok=True)
        raise
    return device


def remove_vg(runner: Runner, name: str) -> None:
    """Remove an owned VG, its (owned) LVs, its PV labels, and its loop devices and backing files."""
    require_owned_vg(runner, name)
    for lv in list_lvs(runner, name):
        if not lv.hidden and not lv.owned:
            raise Busy(f"volume group {name!r} holds logical volume {lv.name!r} not created by skycache")
    pvs = [pv.name for pv in list_pvs(runner) if pv.vg == name]
    loops = {lp.device: lp for lp in loopdev.list_loops(runner)}
    runner.run(["vgremove", "-y", "-f", name], retry=UDEV_RETRY)
    if pvs:
        runner.run(["pvremove", "-y", *pvs], retry=LOCK_RETRY, check=False)
    for dev in pvs:
        lp = loops.get(dev)
        if lp is not None and lp.owned:
            loopdev.detach(runner, dev)
            backing = Path(lp.backing_file.removesuffix(" (deleted)"))
            if not runner.dry_run and backing.name.startswith("skycache-vg-"):
                backing.unlink(missing_ok=True)


def create_lv(runner: Runner, vg: str, name: str, size: int, *, extra: Sequence[str] = ()) -> LV | None:
    """A tagged LV of ``size`` bytes in the owned VG ``vg``; refuses sizes above the free space."""
    check_name(name, what="logical volume name")
    vgi = require_owned_vg(runner, vg)
    if size <= 0:
        raise InvalidInput(f"size {size} must be positive")
    if size > vgi.free:
        raise InvalidInput(
            f"size {format_size(size)} is larger than the free space of {vg!r} ({format_size(vgi.free)})"
        )
    if find_lv(runner, vg, name):
        raise Busy(f"logical volume {vg}/{name} already exists")
    runner.run(lvcreate_argv(vg, name, size, extra=extra), retry=LOCK_RETRY)
    return None if runner.dry_run else get_lv(runner, vg, name)


def create_thin_pool(runner: Runner, vg: str, name: str, size: int) -> None:
    check_name(name, what="thin pool name")
    require_owned_vg(runner, vg)
    runner.run(thin_pool_argv(vg, name, size), retry=LOCK_RETRY)


def remove_lv(runner: Runner, vg: str, name: str, *, missing_ok: bool = False) -> None:
    """Remove an owned LV (retrying udev races); refuses untagged LVs."""
    if missing_ok and find_lv(runner, vg, name) is None:
        return
    require_owned_lv(runner, vg, name)
    try:
        runner.run(lvremove_argv(vg, name), retry=UDEV_RETRY)
    except CommandError as exc:
        if "open" in exc.stderr or "in use" in exc.stderr:
            raise Busy(f"logical volume {vg}/{name} is in use") from exc
        raise


def set_read_only(runner: Runner, vg: str, name: str, read_only: bool = True) -> None:
    lv = require_owned_lv(runner, vg, name)
    if lv.read_only == read_only:
        return
    runner.run(permission_argv(vg, name, read_only=read_only), retry=UDEV_RETRY)


def activate(runner: Runner, vg: str, name: str, *, active: bool = True) -> None:
    require_owned_lv(runner, vg, name)
    runner.run(activate_argv(vg, name, active=active), retry=UDEV_RETRY)


def snapshot_thin(runner: Runner, vg: str, pool: str, base: str, new: str) -> None:
    """Thin snapshot of ``base`` with ``base`` as external origin, activated for use.

    LVM turns an LV into an external origin only while it is inactive ("Cannot use active LV for the
    external origin"); once it is one, further thin snapshots work while it is active. So the first
    thin clone of a base deactivates it briefly, which is refused while the base is open (exported).
    """
    check_name(new, what="clone name")
    base_lv = require_owned_lv(runner, vg, base)
    argv = thin_snapshot_argv(vg, pool, base, new)
    try:
        runner.run(argv, retry=LOCK_RETRY)
    except CommandError as exc:
        if "active LV for the external origin" not in exc.stderr:
            raise
        if base_lv.opened:
            raise Busy(
                f"base {vg}/{base} is open (exported or attached); its first thin clone needs it closed"
            ) from exc
        try:
            _with_base_inactive(runner, vg, base, argv)
        finally:
            runner.run(activate_argv(vg, base), retry=UDEV_RETRY)
    # Thin snapshots are created with the activation-skip flag; the clone is meant to be used now.
    runner.run(activate_argv(vg, new), retry=UDEV_RETRY)


def _with_base_inactive(runner: Runner, vg: str, base: str, argv: list[str], *, attempts: int = 5) -> None:
    """Deactivate ``base``, wait until LVM reports it inactive, then run ``argv``.

    Seen in the lab: right after writes to the base, ``lvchange -an`` returned 0 while the next
    lvcreate still found the LV active (udev still had it open); settle, check and try again.
    """
    delay = 0.5
    for attempt in range(1, attempts + 1):
        runner.run(activate_argv(vg, base, active=False), retry=UDEV_RETRY)
        runner.query(["udevadm", "settle", "--timeout=10"], check=False)
        lv = find_lv(runner, vg, base)
        if lv is not None and lv.active and attempt < attempts:
            time.sleep(delay)
            delay *= 2
            continue
        try:
            runner.run(argv, retry=LOCK_RETRY)
            return
        except CommandError as exc:
            if "active LV for the external origin" not in exc.stderr or attempt == attempts:
                raise
            time.sleep(delay)
            delay *= 2


def snapshot_classic(runner: Runner, vg: str, base: str, new: str, cow_size: int) -> None:
    check_name(new, what="clone name")
    require_owned_lv(runner, vg, base)
    runner.run(snapshot_argv(vg, base, new, cow_size), retry=LOCK_RETRY)
