"""Parsers of dm-cache / dm-writecache status lines, over lines recorded in the lab (6.1 kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeRunner

from skycache.errors import SkycacheError
from skycache.plan import Action, Wait
from skycache.storage.caches import cachestatus
from skycache.storage.caches.cachestatus import (
    CacheStatus,
    StatusParseError,
    WritecacheStatus,
    cleaner_table,
    parse_cache_status,
    parse_status,
    parse_writecache_status,
)

DATA = Path(__file__).parent / "data" / "cache"


def line(name: str) -> str:
    return (DATA / name).read_text().splitlines()[0]


def test_cache_writeback_dirty() -> None:
    st = parse_cache_status(line("cache-wb-dirty.txt"))
    assert st.length_sectors == 131072
    assert (st.metadata_block_sectors, st.metadata_used, st.metadata_total) == (8, 7, 2048)
    assert (st.cache_block_sectors, st.cache_used, st.cache_total) == (512, 49, 64)
    assert (st.read_hits, st.read_misses, st.write_hits, st.write_misses) == (454, 242, 271, 129)
    assert (st.demotions, st.promotions, st.dirty) == (0, 49, 46)
    assert st.features == ("writeback",)
    assert st.core_args == (("migration_threshold", "2048"),)
    assert st.policy == "smq" and st.policy_args == ()
    assert st.metadata_mode == "rw" and not st.needs_check
    assert st.io_mode == "writeback"
    assert not st.clean and st.unwritten == 46


def test_cache_cleaner_is_clean() -> None:
    st = parse_cache_status(line("cache-cleaner-clean.txt"))
    assert st.policy == "cleaner"
    assert st.dirty == 0 and st.clean and st.cache_used == 49


def test_cache_metadata2_writethrough_and_passthrough() -> None:
    wt = parse_cache_status(line("cache-wt.txt"))
    assert wt.features == ("metadata2", "writethrough") and wt.io_mode == "writethrough"
    pt = parse_cache_status(line("cache-pt.txt"))
    assert pt.io_mode == "passthrough" and pt.read_misses == 96


def test_cache_needs_check_and_ro_are_not_clean() -> None:
    raw = line("cache-cleaner-clean.txt").replace("rw -", "ro needs_check")
    st = parse_cache_status(raw)
    assert st.needs_check and st.metadata_mode == "ro" and not st.clean


def test_cache_fail_and_garbage_raise() -> None:
    with pytest.raises(StatusParseError):
        parse_cache_status("0 131072 cache Fail")
    with pytest.raises(StatusParseError):
        parse_cache_status("0 131072 cache 8 7/2048 512")
    with pytest.raises(StatusParseError):
        parse_cache_status(line("wc-dirty.txt"))


def test_writecache_lines() -> None:
    dirty = parse_writecache_status(line("wc-dirty.txt"))
    assert (dirty.error, dirty.total_blocks, dirty.free_blocks, dirty.writeback_blocks) == (0, 4080, 2480, 0)
    assert dirty.write_blocks == 1600 and dirty.write_allocated == 1600 and dirty.read_hits == 1732
    assert dirty.unwritten == 1600 and not dirty.clean
    clean = parse_writecache_status(line("wc-clean.txt"))
    assert clean.clean and clean.unwritten == 0


def test_writecache_old_kernel_and_errors() -> None:
    old = parse_writecache_status("0 100 writecache 0 10 4 2")
    assert old.unwritten == 6 and old.read_blocks == 0 and not old.clean
    err = parse_writecache_status("0 100 writecache -5 10 10 0")
    assert err.error == -5 and not err.clean
    with pytest.raises(StatusParseError):
        parse_writecache_status("0 100 writecache 0 10")


def test_parse_status_dispatch() -> None:
    assert isinstance(parse_status(line("cache-wt.txt")), CacheStatus)
    assert isinstance(parse_status(line("wc-fresh.txt")), WritecacheStatus)
    with pytest.raises(StatusParseError):
        parse_status("0 1024 error")


def test_as_dict_has_derived_fields() -> None:
    d = parse_status(line("cache-wb-dirty.txt")).as_dict()
    assert d["kind"] == "cache" and d["dirty"] == 46 and d["clean"] is False and d["io_mode"] == "writeback"
    w = parse_status(line("wc-dirty.txt")).as_dict()
    assert w["kind"] == "writecache" and w["unwritten"] == 1600


def test_cleaner_table() -> None:
    assert cleaner_table(line("cache-wb-table.txt")) == line("cache-cleaner-table.txt")
    assert (
        cleaner_table(line("cache-wt-table.txt"))
        == "0 131072 cache 7:2 7:1 7:0 512 2 metadata2 writethrough cleaner 0"
    )
    with pytest.raises(StatusParseError):
        cleaner_table(line("wc-table.txt"))


def status_fake(statuses: list[str], table: str = "") -> FakeRunner:
    fake = FakeRunner()
    fake.replies("dmsetup", "status", replies=[s + "\n" for s in statuses])
    fake.reply("dmsetup", "table", stdout=table + "\n")
    return fake


def run_flush(fake: FakeRunner, name: str, table: str) -> list[str]:
    """The flush's steps applied to the fake; returns the progress notes."""
    seen: list[str] = []
    action = Action(f"flush {name}", cachestatus.flush_steps(name, table))
    for step in action.do:
        if isinstance(step, Wait):
            step.run(fake, seen.append, sleep=lambda _: None)
        else:
            step.run(fake)
    return seen


def test_flush_dmcache_reloads_cleaner_waits_then_flushes_the_origin() -> None:
    dirty = line("cache-wb-dirty.txt")
    half = dirty.replace(" 0 49 46 1 writeback", " 0 49 20 1 writeback")
    clean = line("cache-cleaner-clean.txt")
    fake = status_fake([dirty, half, clean])
    seen = run_flush(fake, "skycache-wb-vm1", line("cache-wb-table.txt"))
    assert seen == [f"skycache-wb-vm1: {n} blocks to write back" for n in (46, 20, 0)]
    assert fake.ran() == [
        f"dmsetup reload skycache-wb-vm1 --table '{line('cache-cleaner-table.txt')}'",
        "dmsetup suspend skycache-wb-vm1",
        "dmsetup resume skycache-wb-vm1",
        "skycache-agent flush-device 7:0",  # the origin of cache-wb-table.txt, once the cache is clean
    ]


def test_flush_writecache_messages_cleaner() -> None:
    fake = status_fake([line("wc-dirty.txt"), line("wc-clean.txt")])
    seen = run_flush(fake, "skycache-wb-vm1", line("wc-table.txt"))
    assert fake.ran() == [
        "dmsetup message skycache-wb-vm1 0 flush",
        "dmsetup message skycache-wb-vm1 0 cleaner",
        "skycache-agent flush-device 7:0",
    ]
    assert seen == ["skycache-wb-vm1: 1600 blocks to write back", "skycache-wb-vm1: 0 blocks to write back"]


def test_flush_of_a_cache_in_cleaner_mode_only_waits() -> None:
    cleaner = line("cache-cleaner-table.txt")
    steps = cachestatus.flush_steps("skycache-wb-vm1", cleaner)
    assert [type(s).__name__ for s in steps] == ["Wait", "Command"]


def test_flush_refuses_needs_check_and_times_out() -> None:
    bad = line("cache-wb-dirty.txt").replace("rw -", "ro needs_check")
    with pytest.raises(SkycacheError, match="needs_check"):
        cachestatus.CacheClean("skycache-wb-vm1").poll(status_fake([bad]))
    t = iter(range(100))
    wait = Wait(cachestatus.CacheClean("skycache-wb-vm1"), timeout_s=3)
    with pytest.raises(SkycacheError, match="1600 blocks to write back"):
        wait.run(status_fake([line("wc-dirty.txt")]), clock=lambda: float(next(t)), sleep=lambda _: None)


def test_flush_refuses_unmarked() -> None:
    with pytest.raises(SkycacheError, match="not created by skycache"):
        cachestatus.flush_steps("vg-lv", line("wc-table.txt"))


def test_dirty_count() -> None:
    assert cachestatus.dirty_count(status_fake([line("cache-wb-dirty.txt")]), "x") == 46
    assert cachestatus.dirty_count(status_fake([line("wc-dirty.txt")]), "x") == 1600


def test_cache_three_features_from_the_vm_stack() -> None:
    """Recorded under a thin VM disk over iSCSI (dm-cache write engine): 3 feature args."""
    st = parse_cache_status(line("cache-wb-thin-stack.txt"))
    assert st.features == ("metadata2", "writeback", "no_discard_passdown")
    assert (st.cache_used, st.cache_total, st.dirty, st.promotions) == (89, 768, 66, 89)
    assert st.io_mode == "writeback" and st.policy == "smq" and not st.clean


def test_origin_of_both_engines() -> None:
    assert cachestatus.origin_of(line("wc-table.txt")) == "7:0"
    assert cachestatus.origin_of(line("cache-wb-table.txt")) == "7:0"
    with pytest.raises(SkycacheError, match="not a dm-writecache"):
        cachestatus.origin_of("0 8 linear 7:0 0")


def test_flush_not_clean_does_not_flush_the_origin() -> None:
    """An error stops the flush before the origin is touched (nothing to make durable yet)."""
    bad = line("wc-dirty.txt").replace("writecache 0 ", "writecache 5 ", 1)
    fake = status_fake([bad])
    with pytest.raises(SkycacheError, match="error 5"):
        run_flush(fake, "skycache-wb-vm1", line("wc-table.txt"))
    assert not any("flush-device" in c for c in fake.ran())
