"""The VM-disk stack as data: names, dm tables per variant, sizing, input checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycache.errors import InvalidInput
from skycache.plan import Plan
from skycache.runner import SystemRunner
from skycache.storage.vmdisk import clone, layers, records

BASE, STORE = "/dev/sda", "/dev/sdb"
MiB = 1024 * 1024


def spec(**kw: object) -> layers.StackSpec:
    args: dict[str, object] = dict(
        vm_id="vm1", cow="snapshot", base_dev=BASE, base_sectors=131072, store_dev=STORE, store_sectors=180224
    )
    args.update(kw)
    return layers.StackSpec(**args)  # type: ignore[arg-type]


def test_no_cache_snapshot() -> None:
    (vm,) = layers.build_order(spec())
    assert vm.name == "skycache-vm-vm1" and vm.role == "vm"
    assert vm.table == "0 131072 snapshot /dev/sda /dev/sdb P 8"


def test_both_caches_snapshot_writecache() -> None:
    rc = layers.ReadCacheDevs("skycache-rc-node.repo.base", "/dev/n/rc.m", "/dev/n/rc.d")
    wc = layers.WriteCacheDevs("writecache", "/dev/n/wb.d")
    devs = layers.build_order(spec(read_cache=rc, write_cache=wc))
    assert [x.role for x in devs] == ["rc", "wb", "vm"]
    assert devs[0].shared and not devs[1].shared
    assert (
        devs[0].table == "0 131072 cache /dev/n/rc.m /dev/n/rc.d /dev/sda 128 2 metadata2 writethrough smq 0"
    )
    assert devs[1].table == "0 180224 writecache s /dev/sdb /dev/n/wb.d 4096 0"
    assert devs[2].table == (
        "0 131072 snapshot /dev/mapper/skycache-rc-node.repo.base /dev/mapper/skycache-wb-vm1 P 8"
    )


def test_thin_with_dmcache_write_engine() -> None:
    wc = layers.WriteCacheDevs("dmcache", "/dev/n/wb.d", "/dev/n/wb.m")
    devs = layers.build_order(spec(cow="thin", write_cache=wc))
    assert [x.role for x in devs] == ["wb", "tm", "td", "tp", "vm"]
    assert devs[0].table == "0 180224 cache /dev/n/wb.m /dev/n/wb.d /dev/sdb 128 2 metadata2 writeback smq 0"
    meta, data = layers.thin_split(180224)
    assert meta == 16 * MiB // 512 and data % 128 == 0 and meta + data <= 180224
    assert devs[1].table == f"0 {meta} linear /dev/mapper/skycache-wb-vm1 0"
    assert devs[2].table == f"0 {data} linear /dev/mapper/skycache-wb-vm1 {meta}"
    assert devs[3].table == (
        f"0 {data} thin-pool /dev/mapper/skycache-tm-vm1 /dev/mapper/skycache-td-vm1 128 0 0"
    )
    assert devs[4].table == "0 131072 thin /dev/mapper/skycache-tp-vm1 0 /dev/sda"
    assert layers.fresh_init_device(spec(cow="thin", write_cache=wc)) == "/dev/mapper/skycache-tm-vm1"


def test_read_only_pool_for_materialising() -> None:
    assert layers.thin_pool_line("m", "d", 1024, read_only=True) == "0 1024 thin-pool m d 128 0 1 read_only"


def test_removal_order_is_top_down() -> None:
    assert layers.all_vm_devices("a") == [
        "skycache-vm-a",
        "skycache-tp-a",
        "skycache-td-a",
        "skycache-tm-a",
        "skycache-wb-a",
    ]


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(InvalidInput, match="'zfs'"):
        spec(cow="zfs")
    with pytest.raises(InvalidInput, match="'bcache'"):
        layers.WriteCacheDevs("bcache", "/dev/x")
    with pytest.raises(InvalidInput, match="metadata"):
        layers.WriteCacheDevs("dmcache", "/dev/x")
    with pytest.raises(InvalidInput, match="too small"):
        spec(cow="thin", store_sectors=1000)
    for bad in ("VM1", "a/b", "../x", "", "x" * 31):
        with pytest.raises(InvalidInput):
            records.check_vm_id(bad)


def test_store_sizing() -> None:
    base = 64 * MiB
    snap = clone.default_store_size(base, "snapshot")
    thin = clone.default_store_size(base, "thin")
    # A full rewrite of the base fits: 4 KiB chunks cost 16 bytes of exception metadata each.
    assert snap >= base + base // 256 + 4096 and snap % (4 * MiB) == 0
    meta, data = layers.thin_split(thin // 512)
    assert data * 512 >= base and meta * 512 == layers.THIN_META


def test_names_and_tags() -> None:
    assert records.store_name("vm1") == "vm1.cow"
    assert records.vm_tag("vm1") == "skycache-vm.vm1"
    assert layers.rc_name("node", "repo", "base") == "skycache-rc-node.repo.base"
    assert records.rc_lv_names("repo", "base") == ("rc.repo.base.m", "rc.repo.base.d", "rc.repo.base.g")


def test_note_round_trip_through_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCACHE_STATE_DIR", str(tmp_path))
    note = records.VmNote("vm1", "clone", "vr", "base", "thin", "127.0.0.1:3260", "node1", 32 << 20, 0)
    runner = SystemRunner()
    Plan("save", [records.save_note_action(note)]).apply(runner)
    assert records.load_note(runner, "vm1") == note
    assert [n.vm_id for n in records.all_notes(runner)] == ["vm1"]
    assert (tmp_path / "vmdisks" / "vm1.json").stat().st_mode & 0o777 == 0o600
    Plan("drop", [records.drop_note_action("vm1")]).apply(runner)
    assert records.load_note(runner, "vm1") is None


def test_read_cache_guard_over_read_only_base() -> None:
    """dm-cache refuses a write-protected LUN as origin; a non-persistent snapshot guards it."""
    rc = layers.ReadCacheDevs("skycache-rc-n.r.b", "/dev/n/m", "/dev/n/d", "/dev/n/g")
    devs = layers.build_order(spec(read_cache=rc))
    assert [x.role for x in devs] == ["rg", "rc", "vm"]
    assert devs[0].name == "skycache-rg-n.r.b" and devs[0].shared
    assert devs[0].table == "0 131072 snapshot /dev/sda /dev/n/g N 8"
    assert (
        devs[1].table
        == "0 131072 cache /dev/n/m /dev/n/d /dev/mapper/skycache-rg-n.r.b 128 2 metadata2 writethrough smq 0"
    )
