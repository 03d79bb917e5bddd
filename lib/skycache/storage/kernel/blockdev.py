"""What is on a block device the user names: before skycache makes it a PV, is anything using it?

Read through the runner (so a remote host answers for its own disks), one command of each kind:

- ``lsblk --json -p -o NAME,TYPE,FSTYPE,MOUNTPOINTS,PTTYPE -- DEV``: whether it is a block device at
  all (lsblk exits 32, "not a block device", for ``/dev/null`` or a path that does not exist), its
  mounts (``[SWAP]`` for active swap, from /proc/swaps) and the devices on it (partitions, dm
  devices) as ``children``. Its FSTYPE/PTTYPE come from the udev database only: on a host without
  udev they are empty even for a disk with ext4 on it (recorded: tests/unit/data/storage/blockdev).
- ``wipefs --no-act --json -- DEV``: every signature libblkid finds by probing the device itself
  (filesystems, partition tables, LVM2_member, swap, RAID...), udev or not. It only reads.
- ``/sys/class/block/KNAME/holders``: the kernel's own list of devices stacked on it (dm, md).

:func:`problems` turns those facts into the reasons a device is not free; the planners refuse the
device by name with them unless the user forces it (:mod:`skycache.storage.devices`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from skycache.runner import Runner

LSBLK_COLUMNS = "NAME,TYPE,FSTYPE,MOUNTPOINTS,PTTYPE"
LSBLK_NOT_FOUND = 32  # lsblk(8): "none of specified devices found"


def lsblk_argv(device: str) -> list[str]:
    return ["lsblk", "--json", "-p", "-o", LSBLK_COLUMNS, "--", device]


def wipefs_argv(device: str) -> list[str]:
    # --no-act: list only (without -a/-o wipefs erases nothing anyway; this says so on the command line).
    return ["wipefs", "--no-act", "--json", "--", device]


@dataclass(frozen=True)
class Signature:
    type: str  # ext4, dos, gpt, LVM2_member, swap...
    offset: str  # as wipefs prints it (0x438)
    label: str | None = None

    def describe(self) -> str:
        label = f", label {self.label!r}" if self.label else ""
        return f"signature {self.type} (offset {self.offset}{label})"


@dataclass(frozen=True)
class Node:
    """One device of lsblk's tree: the device asked for, or a child (partition, dm device on it)."""

    name: str
    type: str
    fstype: str | None = None
    pttype: str | None = None
    mountpoints: tuple[str, ...] = ()
    children: tuple[Node, ...] = ()

    def walk(self) -> list[Node]:
        return [self, *(n for c in self.children for n in c.walk())]


@dataclass(frozen=True)
class BlockDevice:
    """The facts about one named device that decide whether skycache may take it."""

    path: str  # as the user named it
    exists: bool
    node: Node | None  # None: lsblk does not list it (not a block device)
    lsblk_error: str = ""
    signatures: tuple[Signature, ...] = ()
    probe_error: str = ""  # wipefs failed: the signatures are unknown
    holders: tuple[str, ...] = ()

    @property
    def is_block(self) -> bool:
        return self.exists and self.node is not None


# -- parsers -------------------------------------------------------------------------------------------


def _node(entry: Any) -> Node:
    if not isinstance(entry, dict):
        raise ValueError("lsblk entry is not an object")
    mounts = tuple(str(m) for m in (entry.get("mountpoints") or []) if m)
    return Node(
        name=str(entry.get("name") or ""),
        type=str(entry.get("type") or ""),
        fstype=entry.get("fstype") or None,
        pttype=entry.get("pttype") or None,
        mountpoints=mounts,
        children=tuple(_node(c) for c in entry.get("children") or []),
    )


def parse_lsblk(text: str) -> Node | None:
    """The first device of ``lsblk --json`` output (the one asked for), or None when it lists none."""
    devices = json.loads(text).get("blockdevices") or [] if text.strip() else []
    return _node(devices[0]) if devices else None


def parse_wipefs(text: str) -> tuple[Signature, ...]:
    """``wipefs --no-act --json``: its ``signatures`` (empty output: none)."""
    if not text.strip():
        return ()
    return tuple(
        Signature(str(s.get("type") or "unknown"), str(s.get("offset") or "?"), s.get("label") or None)
        for s in json.loads(text).get("signatures") or []
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- the thin layer ------------------------------------------------------------------------------------


def read(runner: Runner, device: str) -> BlockDevice:
    """The facts about ``device`` on the runner's host (read-only commands and sysfs reads)."""
    if not runner.exists(device):
        return BlockDevice(device, exists=False, node=None)
    listed = runner.query(lsblk_argv(device), check=False)
    node = None
    try:
        node = parse_lsblk(listed.stdout) if listed.returncode == 0 else None
    except (ValueError, AttributeError):  # json.JSONDecodeError is a ValueError
        node = None
    if node is None:
        why = _last_line(listed.stderr) or f"lsblk exit {listed.returncode}, lists no device"
        return BlockDevice(device, exists=True, node=None, lsblk_error=why)
    probed = runner.query(wipefs_argv(device), check=False)
    signatures: tuple[Signature, ...] = ()
    probe_error = ""
    if probed.returncode == 0:
        try:
            signatures = parse_wipefs(probed.stdout)
        except (ValueError, AttributeError):
            probe_error = "wipefs printed no JSON"
    else:
        probe_error = _last_line(probed.stderr) or f"wipefs exit {probed.returncode}"
    # /sys/class/block is named by the kernel name: /dev/mapper/x is a link to /dev/dm-N.
    kname = PurePosixPath(runner.resolve(device) or node.name).name
    holders = tuple(runner.list_dir(f"/sys/class/block/{kname}/holders") or ())
    return BlockDevice(device, True, node, "", signatures, probe_error, holders)


# -- the decision --------------------------------------------------------------------------------------


def problems(dev: BlockDevice) -> list[str]:
    """Why ``dev`` is not free for skycache to take; empty when nothing was found on it.

    Not existing or not being a block device is not in this list: that is never forceable (see
    :func:`unusable`).
    """
    if dev.node is None:
        return []
    found: list[str] = []
    for n in dev.node.walk():
        for m in n.mountpoints:
            found.append(f"{n.name} is active swap" if m == "[SWAP]" else f"{n.name} is mounted at {m}")
    for child in dev.node.children:
        if child.type == "part":
            found.append(f"partition {child.name} is on it")
        elif not dev.holders:  # a dm/md device on it: the kernel's holders name it below
            found.append(f"{child.type} device {child.name} is on it")
    found += [f"{h} is stacked on it (holders)" for h in dev.holders]
    found += [s.describe() for s in dev.signatures]
    # lsblk's own FSTYPE/PTTYPE (udev) can name what wipefs did not list; PTTYPE of a partition is
    # its disk's table, not something on the partition itself.
    types = {s.type for s in dev.signatures}
    if dev.node.fstype and dev.node.fstype not in types:
        found.append(f"udev records a {dev.node.fstype} filesystem on it")
    if dev.node.pttype and dev.node.type != "part" and dev.node.pttype not in types:
        found.append(f"udev records a {dev.node.pttype} partition table on it")
    if dev.probe_error:
        found.append(f"its signatures could not be read ({dev.probe_error})")
    return found


def unusable(dev: BlockDevice) -> str | None:
    """Why ``dev`` can never be taken, forced or not (missing, or not a block device)."""
    if not dev.exists:
        return "does not exist"
    if dev.node is None:
        return f"is not a block device ({dev.lsblk_error})"
    return None
