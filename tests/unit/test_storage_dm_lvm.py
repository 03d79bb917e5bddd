"""dm / lvm / loopdev: builders produce the exact argv and tables; parsers read recorded lab output."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeRunner, fake_view

from skycache.errors import InvalidInput, NotOwned
from skycache.plan import Plan
from skycache.storage.kernel import dm, loopdev, lvm

DATA = Path(__file__).parent / "data" / "storage"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_table_builders_render_kernel_syntax() -> None:
    assert dm.linear("/dev/sda", 2048).line() == "0 2048 linear /dev/sda 0"
    assert dm.snapshot("253:1", "253:2", 524288).line() == "0 524288 snapshot 253:1 253:2 P 8"
    assert dm.snapshot("a", "b", 8, persistent=False, chunk_sectors=16).line() == "0 8 snapshot a b N 16"
    assert dm.snapshot_origin("/dev/x", 100).line() == "0 100 snapshot-origin /dev/x"
    assert dm.thin("/dev/mapper/pool", 1, 100, external_origin="/dev/b").line() == (
        "0 100 thin /dev/mapper/pool 1 /dev/b"
    )
    assert dm.delay("/dev/x", 100, 5).line() == "0 100 delay /dev/x 0 5"
    assert dm.delay("/dev/x", 100, 5, write_ms=7).line() == "0 100 delay /dev/x 0 5 /dev/x 0 7"
    assert dm.flakey("/dev/x", 100, 10, 2, features=["drop_writes"]).line() == (
        "0 100 flakey /dev/x 0 10 2 1 drop_writes"
    )
    assert dm.error(64).line() == "0 64 error"
    two = (dm.linear("/dev/a", 10), dm.linear("/dev/b", 10, start=10))
    assert dm.render_table(two) == "0 10 linear /dev/a 0\n10 10 linear /dev/b 0"


@pytest.mark.parametrize("bad", [0, -8])
def test_table_builders_refuse_empty_lengths(bad: int) -> None:
    with pytest.raises(InvalidInput):
        dm.linear("/dev/a", bad)


def test_bytes_to_sectors() -> None:
    assert dm.bytes_to_sectors(1 << 20) == 2048
    with pytest.raises(InvalidInput):
        dm.bytes_to_sectors(1000)


def test_parse_recorded_dmsetup_table_status_ls_info() -> None:
    tables = dm.parse_table(read("dmsetup_table.txt"))
    assert tables["skycache--probe-snapclone"] == (
        dm.Segment(0, 524288, "snapshot", ("253:1", "253:2", "P", "8")),
    )
    status = dm.parse_table(read("dmsetup_status.txt"))
    assert status["skycache--probe-snapclone"][0].args == ("16/131072", "16")
    assert status["skycache--probe-base"][0].target == "snapshot-origin"
    assert dm.parse_ls(read("dmsetup_ls.txt"))["skycache--probe-snapclone-cow"] == (253, 2)
    infos = dm.parse_info(read("dmsetup_info.txt"))
    assert infos["skycache--probe-base-real"].open_count == 2
    assert infos["skycache--probe-base"].uuid.startswith("LVM-")
    assert not infos["skycache--probe-base"].suspended
    assert dm.parse_ls("No devices found\n") == {}
    assert dm.parse_table("0 100 linear 7:0 0\n", name="x") == {
        "x": (dm.Segment(0, 100, "linear", ("7:0", "0")),)
    }


def test_removal_order_puts_holders_first() -> None:
    deps = dm.parse_deps(read("dmsetup_deps2.txt"))
    assert deps["skycache--probe-snapclone"] == ("skycache--probe-snapclone-cow", "skycache--probe-base-real")
    order = dm.removal_order(deps.keys(), deps)
    for holder, held in deps.items():
        for lower in held:
            if lower in deps:
                assert order.index(holder) < order.index(lower), (holder, lower, order)
    # Only the named devices are ordered; others (loop0, unowned) are ignored.
    assert dm.removal_order(["skycache-exp-probe"], deps) == ["skycache-exp-probe"]


def Recorder(answers: dict[str, str] | None = None) -> FakeRunner:
    """Answers queries from canned outputs (by argv prefix), "not found" otherwise; records commands."""
    fake = FakeRunner()
    fake.reply("dmsetup", "info", rc=1, stderr="not found")
    for prefix, out in (answers or {}).items():
        fake.reply(*prefix.split(), stdout=out)
    return fake


def test_dm_refuses_unmarked_names() -> None:
    r = Recorder()
    with pytest.raises(NotOwned):
        dm.create(r, "vg0-root", [dm.linear("/dev/a", 8)])
    with pytest.raises(NotOwned):
        dm.remove(r, "vg0-root")
    with pytest.raises(NotOwned):
        dm.remove_command("vg0-root")
    assert r.ran() == []


def test_dm_create_argv() -> None:
    r = Recorder()
    assert (
        dm.create(r, "skycache-exp-x", [dm.linear("/dev/a", 8)], readonly=True)
        == "/dev/mapper/skycache-exp-x"
    )
    assert r.ran() == ["dmsetup create skycache-exp-x --readonly --table '0 8 linear /dev/a 0'"]
    action = dm.create_action("skycache-exp-x", [dm.linear("/dev/a", 8)], "shim")
    assert [c.render() for c in action.undo] == ["dmsetup remove --force skycache-exp-x"]


def test_owned_devices_skips_lvm_and_unmarked() -> None:
    r = Recorder(
        {
            "dmsetup info -c": read("dmsetup_info.txt")
            + "skycache-exp-probe|253|4|0|1|L--w|\nvg0-root|253|9|1|1|L--w|\n",
            "dmsetup deps": read("dmsetup_deps2.txt"),
        }
    )
    assert dm.owned_devices(r) == ["skycache-exp-probe"]


def test_parse_recorded_lvm_reports() -> None:
    lvs = {lv.name: lv for lv in lvm.parse_lvs(read("lvs_json.txt"))}
    base = lvs["base"]
    assert base.read_only and base.owned and base.active and base.size == 256 << 20
    assert lvs["snapclone"].origin == "base" and not lvs["snapclone"].read_only
    assert lvs["pool"].is_thin_pool
    assert lvs["[pool_tdata]"].hidden and not lvs["[pool_tdata]"].owned
    (vg,) = lvm.parse_vgs(read("vgs_json.txt"))
    assert vg.owned and vg.free == 3409969152 and vg.extent_size == 4 << 20
    (pv,) = lvm.parse_pvs(read("pvs_json.txt"))
    assert pv.name == "/dev/loop0" and pv.vg == "skycache-probe"
    assert lvm.parse_lvs("") == []


def test_lvm_argv_builders() -> None:
    assert lvm.thin_snapshot_argv("vg", "pool", "base", "c1") == [
        "lvcreate", "-y", "-s", "--thinpool", "vg/pool", "-n", "c1", "--addtag", "skycache", "vg/base",
    ]  # fmt: skip
    assert lvm.snapshot_argv("vg", "base", "c2", 64 << 20) == [
        "lvcreate", "-y", "-s", "-L", f"{64 << 20}b", "-n", "c2", "--addtag", "skycache", "vg/base",
    ]  # fmt: skip
    assert lvm.vgcreate_argv("skycache-r", ["/dev/loop0"]) == [
        "vgcreate", "-y", "--setautoactivation", "n", "--addtag", "skycache", "skycache-r", "/dev/loop0",
    ]  # fmt: skip
    assert lvm.permission_argv("vg", "b", read_only=True) == ["lvchange", "-p", "r", "vg/b"]


def test_lvm_lookups_ask_for_one_object_by_selection() -> None:
    # One lvs / vgs with a selection (exit 0 and an empty report when missing), not vgs + lvs VG.
    assert lvm.lv_lookup_argv("skycache-r", "rc.r.base.m") == [
        "lvs", *lvm.REPORT_OPTS, "-a", "-o", lvm.LV_FIELDS,
        "-S", 'vg_name="skycache-r" && lv_name="rc.r.base.m"',
    ]  # fmt: skip
    assert lvm.vg_lookup_argv("skycache-r") == [
        "vgs", *lvm.REPORT_OPTS, "-o", lvm.VG_FIELDS, "-S", 'vg_name="skycache-r"',
    ]  # fmt: skip
    # A value that cannot be an LVM name never reaches the selection syntax: nothing is run.
    assert lvm.lv_lookup_argv("skycache-r", 'x" || lv_name="root') is None
    assert lvm.vg_lookup_argv("a b") is None
    r = Recorder({"lvs": read("lvs_json.txt"), "vgs": read("vgs_json.txt")})

    def queries() -> list[list[str]]:
        return [list(c.argv) for c in r.calls if c.kind == "query"]

    assert lvm.find_lv(r, "skycache-probe", 'base"') is None
    assert lvm.find_vg(r, "no such") is None
    assert queries() == []
    # One command per lookup; the selection narrows the report, and the names are still checked on
    # what comes back (the canned report holds every LV and VG).
    assert lvm.get_lv(r, "skycache-probe", "base").name == "base"
    assert queries() == [lvm.lv_lookup_argv("skycache-probe", "base")]
    assert lvm.find_lv(r, "other-vg", "base") is None
    assert lvm.get_vg(r, "skycache-probe").name == "skycache-probe"
    assert len(queries()) == 3 and queries()[-1] == lvm.vg_lookup_argv("skycache-probe")


def test_lvm_refuses_untagged_lv_and_oversize() -> None:
    untagged = read("lvs_json.txt").replace(
        '"lv_name":"base", "lv_size":"268435456", "lv_attr":"ori-a-s---", "lv_tags":"skycache"',
        '"lv_name":"base", "lv_size":"268435456", "lv_attr":"ori-a-s---", "lv_tags":""',
    )
    view = fake_view(
        lvs=tuple(lvm.parse_lvs(untagged)), vgs=tuple(lvm.parse_vgs(read("vgs_json.txt"))), pvs=()
    )
    with pytest.raises(NotOwned):
        lvm.lvremove_action(view, "skycache-probe", "base")
    with pytest.raises(InvalidInput, match="larger than the free space"):
        lvm.lvcreate_action(view, "skycache-probe", "big", 8 << 30)
    action = lvm.lvcreate_action(view, "skycache-probe", "new", 8 << 20, tags=["skycache-x"])
    assert Plan("p", [action]).commands() == [
        "lvcreate -y -Wy -Zy -L 8388608b -n new --addtag skycache --addtag skycache-x skycache-probe"
    ]
    assert [c.render() for c in action.undo] == ["lvremove -y skycache-probe/new"]


def test_parse_recorded_losetup() -> None:
    (lp,) = loopdev.parse_list(read("losetup_list.txt"))
    assert lp.device == "/dev/loop0" and lp.backing_file == "/tmp/skycache-probe.img" and lp.owned
    assert not loopdev.Loop("/dev/loop1", "/var/lib/other.img").owned
    assert loopdev.parse_list("") == []


def test_kernel_reason_is_the_last_device_mapper_line() -> None:
    dmesg = (
        "[   12.100000] loop0: detected capacity change\n"
        "[   13.200000] device-mapper: table: 253:8: thin-pool: Error creating metadata object\n"
        "[   13.200001] device-mapper: ioctl: error adding target to table\n"
        "[   14.000000] EXT4-fs (vda): mounted\n"
    )
    assert dm.kernel_reason(dmesg) == "device-mapper: table: 253:8: thin-pool: Error creating metadata object"
    assert dm.kernel_reason("[ 1.0] device-mapper: ioctl: error adding target to table\n") == (
        "device-mapper: ioctl: error adding target to table"
    )
    assert dm.kernel_reason("nothing here\n") is None
