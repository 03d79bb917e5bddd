"""teardown planning without a kernel: order of the steps and the dirty write-back cache rules."""

from __future__ import annotations

import pytest
from fakes import FakeRunner, Reply, fake_view

from skycache.errors import Busy
from skycache.storage import teardown
from skycache.storage.kernel import dm, iscsi, lio, loopdev, lvm
from skycache.storage.view import View

IQN = "iqn.2026-11.org.skycache:r1.img"
DIRTY_WB = "0 8192 writecache 0 16320 16313 0 10 0 25 0 0 7 0 0 0 0 0"  # 7 unwritten blocks


def view(**over: object) -> View:
    parts: dict[str, object] = {
        "vgs": (lvm.VG("r1", 1 << 30, 1 << 29, ("skycache", "skycache-repo"), 1, 1, 4 << 20),),
        "pvs": (lvm.PV("/dev/loop0", "r1", 1 << 30, 1 << 29, ()),),
        "lvs": (),
        "dm_info": {
            "skycache-vm-1": dm.Info("skycache-vm-1", 253, 2, 0, 1, "L--w", ""),
            "skycache-wb-1": dm.Info("skycache-wb-1", 253, 1, 1, 1, "L--w", ""),
            "skycache-exp-r1.img": dm.Info("skycache-exp-r1.img", 253, 0, 1, 1, "L--w", ""),
        },
        "dm_deps": {
            "skycache-vm-1": ("skycache-wb-1",),
            "skycache-wb-1": ("sda",),
            "skycache-exp-r1.img": ("loop0",),
        },
        "dm_tables": {
            "skycache-vm-1": (dm.parse_segment("0 8192 snapshot 8:0 253:1 P 8"),),
            "skycache-wb-1": (dm.parse_segment("0 8192 writecache s 8:16 253:5 4096 0"),),
            "skycache-exp-r1.img": (dm.parse_segment("0 8192 linear 7:0 0"),),
        },
        "dm_status": {"skycache-wb-1": (dm.parse_segment(DIRTY_WB),)},
        "lio": lio.LioState(
            (lio.Export(IQN, "skycache-r1.img", "block", "/dev/mapper/x", (), False, True, ()),),
            (("block", "skycache-r1.img"),),
        ),
        "sessions": (iscsi.Session(1, IQN, "127.0.0.1:3260"),),
        "node_records": (("127.0.0.1:3260", IQN),),
        "ifaces": (),
        "loops": (loopdev.Loop("/dev/loop0", "/x/skycache-vg-r1.img"),),
    }
    parts.update(over)
    return fake_view(FakeRunner(), **parts)


def test_order_flush_dm_sessions_exports_lvm_loops() -> None:
    plan = teardown.plan_teardown(view())
    steps = [a.description for a in plan.actions]
    keys = [
        "remove dm device (snapshot) skycache-vm-1",
        "flush write-back cache skycache-wb-1",
        "remove dm device (writecache) skycache-wb-1",
        "log out",
        "delete LIO target",
        "remove dm shim",
        "remove volume group r1",
        "detach loop device /dev/loop0",
        "delete /x/skycache-vg-r1.img",
    ]
    first = {key: next(i for i, s in enumerate(steps) if key in s) for key in keys}
    assert sorted(first, key=first.__getitem__) == keys
    assert "7 dirty blocks" in steps[first["flush write-back cache skycache-wb-1"]]
    commands = plan.commands()
    # Everything the teardown runs is in the plan: the flush, the logout and node record, the loop.
    assert "dmsetup message skycache-wb-1 0 cleaner" in commands
    assert "skycache-agent flush-device 8:16" in commands
    assert "iscsiadm -m node -T iqn.2026-11.org.skycache:r1.img -p 127.0.0.1:3260 -o delete" in commands
    assert "losetup --detach /dev/loop0" in commands and "pvremove -y /dev/loop0" in commands
    assert "dmsetup remove skycache-vm-1" in commands


def test_dirty_cache_without_flush_is_refused_unless_forced() -> None:
    with pytest.raises(Busy, match="skycache-wb-1 has 7 dirty blocks"):
        teardown.plan_teardown(view(), flush=False)
    plan = teardown.plan_teardown(view(), flush=False, force=True)
    assert not any("flush" in a.description for a in plan.actions)
    assert "dmsetup remove --force skycache-wb-1" in plan.commands()


def test_tagged_vg_with_foreign_lv_is_not_removed_whole() -> None:
    foreign = lvm.LV("r1", "mine", 1, "-wi-a-----", (), "", "", "", "", "linear", "", "u")
    steps = [a.description for a in teardown.plan_teardown(view(lvs=(foreign,))).actions]
    assert not any("remove volume group r1" in s for s in steps)
    assert not any("mine" in s for s in steps)


def test_half_made_leftovers_are_found_and_removed() -> None:
    """A killed process can leave a backstore without a target and a dm device without a table."""
    v = view(
        dm_info={"skycache-rc-x": dm.Info("skycache-rc-x", 253, 9, 0, 0, "---w", "")},
        dm_deps={},
        dm_tables={"skycache-rc-x": ()},
        dm_status={},
        lio=lio.LioState((), (("block", "skycache-r1.other"),)),
        sessions=(),
        node_records=(),
    )
    commands = teardown.plan_teardown(v).commands()
    assert "dmsetup remove skycache-rc-x" in commands
    assert "skycache-agent lio-remove-backstore skycache-r1.other" in commands


# -- an iscsiadm left running by a killed skycache finishes before the records are read ----------------


def test_teardown_waits_for_a_running_iscsiadm_before_reading_the_records() -> None:
    runner = FakeRunner().replies(
        "pgrep", "-x", "iscsiadm", replies=["4242\n", "4242\n", Reply(returncode=1)]
    )
    iscsi.wait_for_iscsiadm(runner, timeout_s=10, poll_s=0)
    assert [c.line for c in runner.calls] == ["pgrep -x iscsiadm"] * 3


def test_teardown_refuses_to_race_an_iscsiadm_that_keeps_running() -> None:
    runner = FakeRunner().reply("pgrep", "-x", "iscsiadm", stdout="4242\n4243\n")
    with pytest.raises(Busy, match=r"iscsiadm \(pid 4242, 4243\) still running after 0 s"):
        iscsi.wait_for_iscsiadm(runner, timeout_s=0, poll_s=0)


def test_the_teardown_plan_is_read_after_iscsiadm_has_finished() -> None:
    runner = FakeRunner().replies("pgrep", "-x", "iscsiadm", replies=["4242\n", Reply(returncode=1)])
    teardown.plan_teardown(View(runner))
    lines = [c.line for c in runner.calls]
    first_read = next(i for i, line in enumerate(lines) if not line.startswith("pgrep"))
    assert lines[:first_read] == ["pgrep -x iscsiadm"] * 2
