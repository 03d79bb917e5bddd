"""``teardown --all``: remove everything skycache owns, in the order that loses no data.

Order (design.md §7): flush write-back caches -> remove dm holders, top-down -> log out iSCSI
sessions -> remove exports (targets, backstores, shims) -> remove LVs and VGs -> detach loop devices
and delete their files -> file repositories. The plan is built from :mod:`skycache.storage.inventory`, i.e.
from the system's own records, so it also finishes what a killed skycache left half done.

Write-back caches: a ``cache`` or ``writecache`` dm device with dirty blocks is flushed first by
default (``flush=True``; :func:`cachestatus.flush`). With ``flush=False`` the teardown is
refused (:class:`Busy`, naming the device and its dirty count) unless ``force=True``, which discards
the dirty blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from skycache.errors import Busy, SkycacheError
from skycache.plan import Action, Plan, legacy_action
from skycache.runner import Runner, render
from skycache.storage import repository
from skycache.storage.inventory import Inventory, collect
from skycache.storage.kernel import dm, iscsi, lio, loopdev, lvm

CACHE_TARGETS = ("cache", "writecache")
SHIM_PREFIX = "skycache-exp-"


def _call(fn: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[[Runner], object]:
    """A plan step calling ``fn(runner, *args, **kwargs)``; binds the arguments now, not at call time."""
    return lambda runner: fn(runner, *args, **kwargs)


def _cachestatus() -> ModuleType:
    try:
        from skycache.storage.caches import cachestatus
    except ImportError as exc:
        raise SkycacheError(
            "skycache.storage.caches.cachestatus is missing: cannot check write-back caches for dirty data"
        ) from exc
    return cachestatus


def plan_teardown(
    runner: Runner, *, flush: bool = True, force: bool = False, flush_timeout_s: float = 600
) -> Plan:
    inv = collect(runner)
    plan = Plan("tear down everything skycache owns")
    _plan_dm(runner, plan, inv, flush=flush, force=force, timeout_s=flush_timeout_s)
    _plan_iscsi(plan, inv)
    _plan_exports(runner, plan, inv)
    _plan_lvm(runner, plan, inv)
    _plan_loops_and_files(plan, inv)
    return plan


def _plan_dm(
    runner: Runner, plan: Plan, inv: Inventory, *, flush: bool, force: bool, timeout_s: float
) -> None:
    for name in inv.dm_devices:
        if name.startswith(SHIM_PREFIX):
            continue  # held by LIO: removed with the exports
        target = inv.dm_targets.get(name, "")
        if target in CACHE_TARGETS:
            cs = _cachestatus()
            dirty = cs.dirty_count(runner, name)
            if dirty > 0:
                if flush:
                    plan.add(
                        legacy_action(
                            f"flush write-back cache {name} ({dirty} dirty blocks)",
                            _call(cs.flush, name, timeout_s=timeout_s),
                        )
                    )
                elif not force:
                    raise Busy(
                        f"write-back cache {name} has {dirty} dirty blocks; flush it (teardown without "
                        "--no-flush) or discard them with --force"
                    )
        plan.add(
            legacy_action(
                f"remove dm device {name} ({target or '?'})",
                _call(dm.remove, name, force=force),
                shown=(f"dmsetup remove {name}",),
            )
        )


def _plan_iscsi(plan: Plan, inv: Inventory) -> None:
    for s in inv.sessions:
        iface = s.iface if s.iface != "default" else None
        portal = iscsi.parse_portal(s.portal)
        plan.add(
            legacy_action(
                f"log out of {s.iqn} at {s.portal}" + (f" (iface {s.iface})" if iface else ""),
                _call(iscsi.logout, s.iqn, portal, iface=iface),
                shown=(render(["iscsiadm", "-m", "node", "-T", s.iqn, "-p", s.portal, "--logout"]),),
            )
        )
    for portal_text, iqn in inv.nodes:
        plan.add(
            legacy_action(
                f"delete iSCSI node record {iqn} at {portal_text}",
                _call(_delete_node, iqn),
            )
        )
    for name in inv.ifaces:
        plan.add(legacy_action(f"delete iSCSI iface {name}", _call(iscsi.delete_iface, name)))


def _delete_node(runner: Runner, iqn: str) -> None:
    runner.run(["iscsiadm", "-m", "node", "-T", iqn, "-o", "delete"], check=False)


def _plan_exports(runner: Runner, plan: Plan, inv: Inventory) -> None:
    for exp in inv.exports:
        plan.add(legacy_action(f"remove export {exp.iqn}", _call(lio.remove_iqn, exp.iqn)))
    exported = {e.storage_object for e in inv.exports}
    for plugin, name in inv.backstores:
        if name not in exported:
            plan.add(
                legacy_action(
                    f"remove LIO {plugin} backstore {name}",
                    _call(lambda _r, n: lio.remove_storage_object(n), name),
                )
            )
    for name in inv.dm_devices:
        if name.startswith(SHIM_PREFIX):
            plan.add(
                legacy_action(
                    f"remove dm shim {name}",
                    _call(dm.remove, name),
                    shown=(f"dmsetup remove {name}",),
                )
            )
    if inv.exports or inv.backstores:
        plan.add(legacy_action("save the LIO configuration", lambda r: lio.save(r)))


def _lv_rank(lv: lvm.LV) -> int:
    """Snapshots and thin volumes before their origins, pools last."""
    if lv.origin or lv.segtype == "thin":
        return 0
    return 2 if lv.is_thin_pool else 1


def _plan_lvm(runner: Runner, plan: Plan, inv: Inventory) -> None:
    all_lvs = lvm.list_lvs(runner)
    whole: set[str] = set()
    for vg in inv.vgs:
        foreign = [lv for lv in all_lvs if lv.vg == vg.name and not lv.hidden and not lv.owned]
        if not foreign:
            whole.add(vg.name)
            plan.add(
                legacy_action(
                    f"remove volume group {vg.name} with its LVs, PVs and loop devices",
                    _call(lvm.remove_vg, vg.name),
                    shown=(f"vgremove -y -f {vg.name}",),
                )
            )
    for lv in sorted((lv for lv in inv.lvs if lv.vg not in whole and not lv.hidden), key=_lv_rank):
        plan.add(
            legacy_action(
                f"remove logical volume {lv.full_name}",
                _call(lvm.remove_lv, lv.vg, lv.name, missing_ok=True),
                shown=(render(lvm.lvremove_argv(lv.vg, lv.name)),),
            )
        )


def _plan_loops_and_files(plan: Plan, inv: Inventory) -> None:
    def detach_left(r: Runner) -> None:
        # Loop devices of removed VGs are gone by now; detach the rest (crash leftovers).
        for lp in loopdev.owned_loops(r):
            loopdev.detach(r, lp.device)
            backing = Path(lp.backing_file.removesuffix(" (deleted)"))
            if backing.name.startswith("skycache-vg-"):
                with contextlib.suppress(FileNotFoundError):
                    backing.unlink()

    if inv.loops:
        plan.add(legacy_action("detach owned loop devices left over", detach_left))
    for f in inv.image_files:
        plan.add(Action.command(f"delete image file {f}", ["rm", "-f", "--", f]))
    for name in inv.file_repos:
        plan.add(
            legacy_action(
                f"forget file repository {name}", _call(lambda _r, n: repository.forget_file_repo(n), name)
            )
        )
