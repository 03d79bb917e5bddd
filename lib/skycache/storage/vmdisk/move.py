"""``disk mv``: synchronise a VM disk, then rebuild it with another node's caches.

Two plans, not one: the rebuild is planned from the state the synchronisation leaves (its store
synced, its sessions gone), which only exists once the first plan has run. A dry run shows the first
plan and says so. On a testbed the second plan runs on the target node (its runner); in the lab a
second cache VG on the same host stands for the other node.
"""

from __future__ import annotations

from skycache.errors import InvalidInput
from skycache.plan import Plan
from skycache.storage import node
from skycache.storage.view import View
from skycache.storage.vmdisk.clone import CloneRequest
from skycache.storage.vmdisk.delete import plan_delete
from skycache.storage.vmdisk.query import require_note


def rebuild_request(view: View, vm_id: str, to_cache_vg: str, *, portal: str = "") -> CloneRequest:
    """What ``disk mv`` will rebuild, checked before anything runs."""
    note = require_note(view, vm_id)
    if note.kind != "clone":
        raise InvalidInput(f"VM disk {vm_id!r} is a {note.kind} disk: only clones can move")
    node.require_cache_vg(view, to_cache_vg)
    return CloneRequest(
        vm_id,
        f"{note.repo}/{note.image}",
        portal or note.portal,
        note.cow,
        note.read_cache,
        note.write_cache,
        note.write_engine or "writecache",
        to_cache_vg,
    )


def plan_sync_for_move(
    view: View, vm_id: str, to_cache_vg: str, *, portal: str = ""
) -> tuple[Plan, CloneRequest]:
    """The first plan of a move (delete --sync) and the request the second one rebuilds."""
    req = rebuild_request(view, vm_id, to_cache_vg, portal=portal)
    plan = plan_delete(view, vm_id, sync=True)
    plan.title = f"move VM disk {vm_id} to cache VG {to_cache_vg}, step 1 of 2: sync"
    plan.notes.append(
        f"step 2 rebuilds {vm_id} with cache VG {to_cache_vg} (disk clone's plan, planned after step 1)"
    )
    return plan, req
