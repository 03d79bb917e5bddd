"""What a VM disk is made of, by name: its tags, its LVs, and the node's note about it.

The records are the system's own: the store LV's tags (``skycache-vmstore``, ``skycache-vm.<id>``,
``skycache-base.<base>``, ``skycache-cow.<engine>``, ``skycache-synced`` once synchronised), the dm
names (``skycache-vm-<id>``, ``skycache-wb-<id>``, ...: :mod:`.layers`), the cache LVs' tags in the node
cache VG, and the iSCSI sessions. A small JSON note per VM in the state directory adds what only the
node knows (portal, cache sizes and engines); nothing needed for teardown lives only there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from skycache import state
from skycache.errors import InvalidInput
from skycache.ownership import check_name
from skycache.plan import Action, Command
from skycache.runner import Runner

STORE_TAG = "skycache-vmstore"
SYNCED_TAG = "skycache-synced"
RC_TAG = "skycache-rc"
WB_TAG = "skycache-wb"
VOL_TAG = "skycache-vol"
KINDS = ("clone", "ln", "mkimage", "mkswap")
# dd that zeroes a superblock (dm-writecache, dm-cache metadata, dm-snapshot header, thin metadata):
# each target formats its device only when the first block is zero.
ZERO_4K = ("dd", "if=/dev/zero", "bs=4096", "count=1", "oflag=direct", "conv=fsync", "status=none")
COPY = ("dd", "bs=4M", "iflag=direct", "oflag=direct", "conv=fsync", "status=none")


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


def tag_value(tags: tuple[str, ...], prefix: str) -> str:
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), "")


def rc_lv_names(repo: str, base: str) -> tuple[str, str, str]:
    """(metadata, data, guard COW) LVs of an image's read cache in the node cache VG."""
    stem = f"rc.{repo}.{base}"
    return f"{stem}.m", f"{stem}.d", f"{stem}.g"


def wb_lv_names(vm_id: str) -> tuple[str, str]:
    """(data, metadata) LVs of a VM's write-back cache (metadata: the dm-cache engine only)."""
    return f"wb.{vm_id}.d", f"wb.{vm_id}.m"


def vol_name(vm_id: str) -> str:
    return f"vol.{vm_id}"


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


def notes_dir() -> PurePosixPath:
    return state.state_dir() / "vmdisks"


def note_path(vm_id: str) -> PurePosixPath:
    return notes_dir() / f"{vm_id}.json"


def parse_note(data: Any) -> VmNote | None:
    if not isinstance(data, dict) or not isinstance(data.get("vm_id"), str):
        return None
    known = set(VmNote.__dataclass_fields__)
    try:
        return VmNote(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def load_note(runner: Runner, vm_id: str) -> VmNote | None:
    return parse_note(state.read_json(runner, note_path(vm_id)))


def all_notes(runner: Runner) -> list[VmNote]:
    names = runner.list_dir(notes_dir()) or []
    notes = [load_note(runner, n[: -len(".json")]) for n in names if n.endswith(".json")]
    return [n for n in notes if n is not None]


def save_note_action(note: VmNote, *, undo_to: VmNote | None = None) -> Action:
    """Write the note; the undo puts back ``undo_to`` (or removes the note)."""
    path = note_path(note.vm_id)
    back = (
        state.write_command(path, json.dumps(undo_to.as_dict()) + "\n")
        if undo_to
        else drop_note_command(note.vm_id)
    )
    return Action(
        f"save the VM note {path}" + ("" if note.state == "live" else f" ({note.state})"),
        (state.write_command(path, json.dumps(note.as_dict()) + "\n"),),
        (back,),
    )


def drop_note_command(vm_id: str) -> Command:
    return Command(("rm", "-f", "--", str(note_path(vm_id))))


def drop_note_action(vm_id: str) -> Action:
    return Action(f"forget the VM note {note_path(vm_id)}", (drop_note_command(vm_id),))
