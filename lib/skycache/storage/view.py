"""One read of a host's storage state, for planning.

A planner decides everything from a :class:`View` before anything runs (skycache.plan): which LVs,
dm devices, sessions and exports exist, how big they are, who sits on what. Each part is read through
the runner the first time a planner asks for it and kept for the rest of the planning, so a plan costs
one ``lvs``, one ``dmsetup info`` and so on, however many lookups it makes (every LVM command scans all
block devices: a third of a second each in the lab), and every decision of one plan sees the same
state.
"""

from __future__ import annotations

from functools import cached_property

from skycache.runner import Runner
from skycache.storage.kernel import blockdev, dm, iscsi, lio, loopdev, lvm


class View:
    """The storage state of the runner's host, each part read once, when first needed."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._block_devices: dict[str, blockdev.BlockDevice] = {}

    # -- LVM ----------------------------------------------------------------------------------------

    @cached_property
    def lvs(self) -> tuple[lvm.LV, ...]:
        return tuple(lvm.list_lvs(self.runner))

    @cached_property
    def vgs(self) -> tuple[lvm.VG, ...]:
        return tuple(lvm.list_vgs(self.runner))

    @cached_property
    def pvs(self) -> tuple[lvm.PV, ...]:
        return tuple(lvm.list_pvs(self.runner))

    def vg(self, name: str) -> lvm.VG | None:
        return next((v for v in self.vgs if v.name == name), None)

    def lv(self, vg: str, name: str) -> lvm.LV | None:
        return next((x for x in self.lvs if x.vg == vg and x.name == name), None)

    def lvs_of(self, vg: str) -> list[lvm.LV]:
        return [x for x in self.lvs if x.vg == vg]

    # -- device-mapper ------------------------------------------------------------------------------

    @cached_property
    def dm_info(self) -> dict[str, dm.Info]:
        return dm.info(self.runner)

    @cached_property
    def dm_tables(self) -> dict[str, dm.Table]:
        return dm.all_tables(self.runner) if self.dm_info else {}

    @cached_property
    def dm_deps(self) -> dict[str, tuple[str, ...]]:
        return dm.deps(self.runner) if self.dm_info else {}

    @cached_property
    def dm_status(self) -> dict[str, dm.Table]:
        """``dmsetup status`` of every device (cache counters, dirty blocks, snapshot fill)."""
        return dm.all_status(self.runner) if self.dm_info else {}

    def dm_exists(self, name: str) -> bool:
        return name in self.dm_info

    def dm_holders(self, name: str) -> list[str]:
        """dm devices stacked directly on ``name``."""
        return dm.holders_of(name, self.dm_deps)

    def dm_table(self, name: str) -> dm.Table:
        return self.dm_tables.get(name, ())

    # -- iSCSI --------------------------------------------------------------------------------------

    @cached_property
    def sessions(self) -> tuple[iscsi.Session, ...]:
        return tuple(iscsi.sessions(self.runner))

    def session(self, iqn: str) -> iscsi.Session | None:
        return next((s for s in self.sessions if s.iqn == iqn), None)

    @cached_property
    def node_records(self) -> tuple[tuple[str, str], ...]:
        return tuple(iscsi.node_records(self.runner))

    @cached_property
    def ifaces(self) -> tuple[str, ...]:
        return tuple(iscsi.list_ifaces(self.runner))

    @cached_property
    def lio(self) -> lio.LioState:
        return lio.read_state(self.runner)

    @cached_property
    def initiator_name(self) -> str:
        return iscsi.initiator_name(self.runner)

    # -- block devices the user names -----------------------------------------------------------------

    def block_device(self, path: str) -> blockdev.BlockDevice:
        """What is on ``path`` (lsblk, wipefs, holders), read once per path: the planners decide from
        it whether the device is free to take (:mod:`skycache.storage.devices`)."""
        if path not in self._block_devices:
            self._block_devices[path] = blockdev.read(self.runner, path)
        return self._block_devices[path]

    # -- loop devices -------------------------------------------------------------------------------

    @cached_property
    def loops(self) -> tuple[loopdev.Loop, ...]:
        return tuple(loopdev.list_loops(self.runner))

    def loop_of(self, backing_file: str) -> loopdev.Loop | None:
        return next(
            (lp for lp in self.loops if lp.backing_file.removesuffix(" (deleted)") == backing_file), None
        )
