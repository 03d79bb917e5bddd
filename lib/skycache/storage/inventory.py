"""Every object skycache owns, read from the system's own records.

Sources: LVM (tag ``skycache``), device-mapper (names ``skycache-*``, LVM's own devices left out),
configfs through rtslib (targets under the IQN prefix, ``skycache-*`` backstores), iSCSI sessions,
node records and ifaces, loop devices over ``skycache-*`` files, and file repositories (their
marker files). Nothing unmarked is ever listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skycache.ownership import NAME_PREFIX, is_owned_iqn
from skycache.runner import Runner
from skycache.storage import repository
from skycache.storage.kernel import dm, iscsi, lio, loopdev, lvm


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
    dm_targets: dict[str, str]  # dm name -> first target type
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
        out += [Item("target", e.iqn, e.device) for e in self.exports]
        out += [Item("backstore", n, p) for p, n in self.backstores]
        out += [Item("session", s.iqn, f"{s.portal} {' '.join(s.disks)}".strip()) for s in self.sessions]
        out += [Item("node", iqn, portal) for portal, iqn in self.nodes]
        out += [Item("iface", n) for n in self.ifaces]
        out += [Item("loop", lp.device, lp.backing_file) for lp in self.loops]
        out += [Item("file-repo", n, d) for n, d in self.file_repos.items()]
        out += [Item("image-file", f) for f in self.image_files]
        return out


def collect(runner: Runner) -> Inventory:
    vgs = tuple(v for v in lvm.list_vgs(runner) if v.owned)
    lvs = tuple(lv for lv in lvm.list_lvs(runner) if lv.owned)
    devices = tuple(dm.owned_devices(runner))
    tables = dm.all_tables(runner)
    targets = {n: tables[n][0].target for n in devices if tables.get(n)}
    try:
        exports = tuple(lio.list_exports())
        backstores = tuple(lio.owned_storage_objects())
    except lio.LioError:
        exports, backstores = (), ()
    sessions = tuple(s for s in iscsi.sessions(runner) if is_owned_iqn(s.iqn))
    nodes = tuple((p, i) for p, i in iscsi.node_records(runner) if is_owned_iqn(i))
    ifaces = tuple(n for n in iscsi.list_ifaces(runner) if n.startswith(NAME_PREFIX))
    loops = tuple(loopdev.owned_loops(runner))
    frepos = repository.file_repos()
    files = tuple(
        str(f)
        for d in frepos.values()
        for pattern in ("*.img", "*.json")
        for f in sorted(d.glob(NAME_PREFIX + pattern))
    )
    return Inventory(
        vgs,
        lvs,
        devices,
        targets,
        exports,
        backstores,
        sessions,
        nodes,
        ifaces,
        loops,
        {n: str(d) for n, d in frepos.items()},
        files,
    )
