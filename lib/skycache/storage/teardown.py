"""``teardown --all``: remove everything skycache owns, in the order that loses no data.

Order (docs/storage.md, "Safety"): flush write-back caches -> remove dm holders, top-down -> log out
iSCSI sessions -> remove exports (targets, backstores, shims) -> remove LVs and VGs -> detach loop
devices and delete their files -> file repositories. The plan is built from :mod:`.inventory`, i.e.
from the system's own records, so it also finishes what a killed skycache left half done; every
command it runs is in the plan, so ``--dry-run`` shows them all.

Write-back caches: a ``cache`` or ``writecache`` dm device with dirty blocks is flushed first by
default (``flush=True``; :func:`cachestatus.flush_steps`), once the devices on top of it are gone
(they write their own metadata into it as they go). With ``flush=False`` the teardown is refused
(:class:`Busy`, naming the device and its dirty count) unless ``force=True``, which discards the
dirty blocks.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from skycache.errors import Busy
from skycache.plan import Action, Command, Plan
from skycache.storage import repository
from skycache.storage.caches import cachestatus
from skycache.storage.inventory import Inventory, collect
from skycache.storage.kernel import dm, iscsi, lio, loopdev, lvm
from skycache.storage.view import View

CACHE_TARGETS = ("cache", "writecache")
SHIM_PREFIX = "skycache-exp-"


def plan_teardown(
    view: View, *, flush: bool = True, force: bool = False, flush_timeout_s: float = 600
) -> Plan:
    # what a killed skycache's iscsiadm is still doing must be done before the records are read
    iscsi.wait_for_iscsiadm(view.runner)
    inv = collect(view)
    plan = Plan("tear down everything skycache owns")
    _plan_dm(view, plan, inv, flush=flush, force=force, timeout_s=flush_timeout_s)
    _plan_iscsi(plan, inv)
    _plan_exports(view, plan, inv)
    removed_pvs = _plan_lvm(view, plan, inv)
    _plan_loops_and_files(view, plan, inv, removed_pvs)
    return plan


def _dirty(view: View, name: str) -> int:
    status = view.dm_status.get(name, ())
    if not status:
        return 0
    return cachestatus.parse_status(status[0].line()).unwritten


def _plan_dm(view: View, plan: Plan, inv: Inventory, *, flush: bool, force: bool, timeout_s: float) -> None:
    for name in inv.dm_devices:
        if name.startswith(SHIM_PREFIX):
            continue  # held by LIO: removed with the exports
        target = inv.dm_targets.get(name, "")
        if target in CACHE_TARGETS:
            dirty = _dirty(view, name)
            if dirty > 0:
                if flush:
                    steps = cachestatus.flush_steps(name, view.dm_table(name)[0].line(), timeout_s=timeout_s)
                    plan.add(Action(f"flush write-back cache {name} ({dirty} dirty blocks)", steps))
                elif not force:
                    raise Busy(
                        f"write-back cache {name} has {dirty} dirty blocks; flush it (teardown without "
                        "--no-flush) or discard them with --force"
                    )
        plan.add(dm.remove_action(name, f"dm device ({target or 'no table'})", force=force))


def _plan_iscsi(plan: Plan, inv: Inventory) -> None:
    logged_in = set()
    for s in inv.sessions:
        iface = s.iface if s.iface != "default" else None
        portal = iscsi.parse_portal(s.portal)
        logged_in.add((s.portal, s.iqn))
        plan.add(
            Action(
                f"log out of {s.iqn} at {s.portal}" + (f" (iface {s.iface})" if iface else ""),
                iscsi.logout_commands(s.iqn, portal, iface),
            )
        )
    for portal_text, iqn in inv.nodes:
        if (portal_text, iqn) in logged_in:
            continue  # the logout above deletes its record
        portal = iscsi.parse_portal(portal_text)
        plan.add(
            Action(f"delete iSCSI node record {iqn} at {portal_text}", iscsi.logout_commands(iqn, portal)[1:])
        )
    for name in inv.ifaces:
        plan.add(Action(f"delete iSCSI iface {name}", (iscsi.delete_iface_command(name),)))


def _plan_exports(view: View, plan: Plan, inv: Inventory) -> None:
    state = lio.LioState(inv.exports, inv.backstores)
    dm_names = set(inv.dm_devices)
    done_backstores: set[str] = set()
    done_shims: set[str] = set()
    for exp in inv.exports:
        plan.extend(lio.remove_actions(state, dm_names, exp.iqn, with_save=False))
        done_backstores.add("skycache-" + exp.iqn.split(":", 1)[1])
        done_shims.add(lio.shim_of_iqn(exp.iqn))
    for plugin, name in inv.backstores:
        if name not in done_backstores:
            plan.add(
                Action(
                    f"remove LIO {plugin} backstore {name} (no target)",
                    (Command(("skycache-agent", "lio-remove-backstore", name)),),
                )
            )
    for name in inv.dm_devices:
        if name.startswith(SHIM_PREFIX) and name not in done_shims:
            plan.add(dm.remove_action(name, "dm shim"))
    if inv.exports or inv.backstores:
        plan.add(lio.save_action())


def _lv_rank(lv: lvm.LV) -> int:
    """Snapshots and thin volumes before their origins, pools last."""
    if lv.origin or lv.segtype == "thin":
        return 0
    return 2 if lv.is_thin_pool else 1


def _plan_lvm(view: View, plan: Plan, inv: Inventory) -> set[str]:
    """Remove owned VGs whole and owned LVs of other VGs; returns the PVs of the removed VGs."""
    whole: set[str] = set()
    for vg in inv.vgs:
        foreign = [lv for lv in view.lvs_of(vg.name) if not lv.hidden and not lv.owned]
        if not foreign:
            whole.add(vg.name)
            plan.extend(lvm.vg_remove_actions(view, vg.name, what="volume group"))
    for lv in sorted((lv for lv in inv.lvs if lv.vg not in whole and not lv.hidden), key=_lv_rank):
        plan.add(lvm.lvremove_action(view, lv.vg, lv.name, what="logical volume"))
    return {pv.name for pv in view.pvs if pv.vg in whole}


def _plan_loops_and_files(view: View, plan: Plan, inv: Inventory, removed_pvs: set[str]) -> None:
    for lp in inv.loops:
        if lp.device in removed_pvs:
            continue  # detached with its VG
        plan.add(
            Action(f"detach owned loop device {lp.device} left over", (loopdev.detach_command(lp.device),))
        )
        backing = PurePosixPath(lp.backing_file.removesuffix(" (deleted)"))
        if backing.name.startswith("skycache-vg-"):
            plan.add(Action(f"delete {backing}", (Command(("rm", "-f", "--", str(backing))),)))
    for f in inv.image_files:
        plan.add(Action.command(f"delete image file {f}", ["rm", "-f", "--", f]))
    plan.extend(repository.forget_file_repos_actions(view.runner, sorted(inv.file_repos)))
