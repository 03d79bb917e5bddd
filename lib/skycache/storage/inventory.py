"""Every object skycache owns on a host, read from the system's own records.

Sources: LVM (tag ``skycache``), device-mapper (names ``skycache-*``, LVM's own devices left out;
devices without a table too), configfs through the agent (targets under the IQN prefix, complete or
half-made, and ``skycache-*`` backstores), iSCSI sessions, node records and ifaces, loop devices over
``skycache-*`` files, and file repositories (their marker files). Nothing unmarked is ever listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from skycache.ownership import NAME_PREFIX, is_marked_name, is_owned_iqn
from skycache.storage import repository
from skycache.storage.kernel import dm, iscsi, lio, loopdev, lvm
from skycache.storage.view import View


@dataclass(frozen=True)
class Item:
    kind: str  # vg, lv, dm, target, backstore, session, node, iface, loop, file-repo, image-file
    name: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "detail": self.detail}


@dataclass(frozen=True)
class Inventory:
    vgs: tuple[lvm.VG, ...]
    lvs: tuple[lvm.LV, ...]
    dm_devices: tuple[str, ...]  # in removal order
    dm_targets: dict[str, str]  # dm name -> first target type ("" for a device without a table)
    exports: tuple[lio.Export, ...]
    backstores: tuple[tuple[str, str], ...]  # (plugin, name)
    sessions: tuple[iscsi.Session, ...]
    nodes: tuple[tuple[str, str], ...]  # (portal, iqn)
    ifaces: tuple[str, ...]
    loops: tuple[loopdev.Loop, ...]
    file_repos: dict[str, str]
    image_files: tuple[str, ...]

    def items(self) -> list[Item]:
        out: list[Item] = []
        out += [Item("vg", v.name, "repository" if repository.REPO_TAG in v.tags else "") for v in self.vgs]
        out += [Item("lv", lv.full_name, lv.segtype) for lv in self.lvs]
        out += [Item("dm", n, self.dm_targets.get(n, "")) for n in self.dm_devices]
        out += [Item("target", e.iqn, e.device if e.complete else "half-made") for e in self.exports]
        out += [Item("backstore", n, p) for p, n in self.backstores]
        out += [Item("session", s.iqn, f"{s.portal} {' '.join(s.disks)}".strip()) for s in self.sessions]
        out += [Item("node", iqn, portal) for portal, iqn in self.nodes]
        out += [Item("iface", n) for n in self.ifaces]
        out += [Item("loop", lp.device, lp.backing_file) for lp in self.loops]
        out += [Item("file-repo", n, d) for n, d in self.file_repos.items()]
        out += [Item("image-file", f) for f in self.image_files]
        return out


def collect(view: View) -> Inventory:
    vgs = tuple(v for v in view.vgs if v.owned)
    lvs = tuple(lv for lv in view.lvs if lv.owned)
    owned_dm = [
        n for n, i in view.dm_info.items() if is_marked_name(n) and not i.uuid.startswith(dm.LVM_UUID_PREFIX)
    ]
    devices = tuple(dm.removal_order(owned_dm, view.dm_deps))
    targets = {n: (view.dm_table(n)[0].target if view.dm_table(n) else "") for n in devices}
    try:
        lio_state = view.lio
        exports, backstores = tuple(e for e in lio_state.exports if is_owned_iqn(e.iqn)), lio_state.backstores
    except lio.LioError:
        exports, backstores = (), ()
    sessions = tuple(s for s in view.sessions if is_owned_iqn(s.iqn))
    nodes = tuple((p, i) for p, i in view.node_records if is_owned_iqn(i))
    ifaces = tuple(n for n in view.ifaces if n.startswith(NAME_PREFIX))
    loops = tuple(lp for lp in view.loops if lp.owned)
    frepos = repository.file_repos(view.runner)
    files: list[str] = []
    for d in frepos.values():
        for entry in view.runner.list_dir(d) or []:
            if entry.startswith(NAME_PREFIX) and entry.endswith((".img", ".json")):
                files.append(str(PurePosixPath(d) / entry))
    return Inventory(
        vgs, lvs, devices, targets, exports, backstores, sessions, nodes, ifaces, loops, frepos, tuple(files)
    )
