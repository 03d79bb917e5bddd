"""teardown planning without a kernel: order of the steps and the dirty write-back cache rules."""

from __future__ import annotations

import types

import pytest

from skycache.errors import Busy
from skycache.runner import SystemRunner
from skycache.storage import teardown
from skycache.storage.inventory import Inventory
from skycache.storage.kernel import iscsi, lio, loopdev, lvm


def inventory(**over: object) -> Inventory:
    base: dict[str, object] = {
        "vgs": (lvm.VG("r1", 1 << 30, 1 << 29, ("skycache", "skycache-repo"), 1, 1, 4 << 20),),
        "lvs": (),
        "dm_devices": ("skycache-vm-1", "skycache-wb-1", "skycache-exp-r1.img"),
        "dm_targets": {
            "skycache-vm-1": "snapshot",
            "skycache-wb-1": "writecache",
            "skycache-exp-r1.img": "linear",
        },
        "exports": (
            lio.Export(
                "iqn.2026-11.org.skycache:r1.img",
                "skycache-r1.img",
                "block",
                "/dev/mapper/x",
                (),
                False,
                True,
                (),
            ),
        ),
        "backstores": (("block", "skycache-r1.img"),),
        "sessions": (iscsi.Session(1, "iqn.2026-11.org.skycache:r1.img", "127.0.0.1:3260"),),
        "nodes": (),
        "ifaces": (),
        "loops": (loopdev.Loop("/dev/loop0", "/x/skycache-vg-r1.img"),),
        "file_repos": {},
        "image_files": (),
    }
    base.update(over)
    return Inventory(**base)  # type: ignore[arg-type]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    dirty = {"skycache-wb-1": 7}
    mod = types.ModuleType("skycache.storage.caches.cachestatus")
    mod.dirty_count = lambda runner, name: dirty.get(name, 0)  # type: ignore[attr-defined]
    mod.flush = lambda runner, name, on_progress=None, timeout_s=600: dirty.update({name: 0})  # type: ignore[attr-defined]
    monkeypatch.setattr(teardown, "_cachestatus", lambda: mod)
    monkeypatch.setattr(teardown, "collect", lambda runner: inventory())
    monkeypatch.setattr(lvm, "list_lvs", lambda runner, vg=None: [])
    return dirty


def test_order_flush_dm_sessions_exports_lvm_loops(fake: dict[str, int]) -> None:
    plan = teardown.plan_teardown(SystemRunner(dry_run=True))
    steps = [a.description for a in plan.actions]
    keys = [
        "flush write-back cache skycache-wb-1",
        "remove dm device skycache-wb-1",
        "log out",
        "remove export",
        "remove dm shim",
        "remove volume group r1",
        "detach owned loop",
    ]
    first = {key: next(i for i, s in enumerate(steps) if key in s) for key in keys}
    order = sorted(first, key=first.__getitem__)
    assert order == keys
    assert "7 dirty blocks" in steps[first["flush write-back cache skycache-wb-1"]]


def test_dirty_cache_without_flush_is_refused_unless_forced(fake: dict[str, int]) -> None:
    with pytest.raises(Busy, match="skycache-wb-1 has 7 dirty blocks"):
        teardown.plan_teardown(SystemRunner(dry_run=True), flush=False)
    plan = teardown.plan_teardown(SystemRunner(dry_run=True), flush=False, force=True)
    assert not any("flush" in a.description for a in plan.actions)


def test_tagged_vg_with_foreign_lv_is_not_removed_whole(
    fake: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = lvm.LV("r1", "mine", 1, "-wi-a-----", (), "", "", "", "", "linear", "", "u")
    monkeypatch.setattr(lvm, "list_lvs", lambda runner, vg=None: [foreign])
    steps = [a.description for a in teardown.plan_teardown(SystemRunner(dry_run=True)).actions]
    assert not any("remove volume group r1" in s for s in steps)
    assert not any("mine" in s for s in steps)
