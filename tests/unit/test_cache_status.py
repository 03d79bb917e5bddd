"""Parsers of dm-cache / dm-writecache status lines, over lines recorded in the lab (6.1 kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycache.errors import Busy, SkycacheError
from skycache.runner import Completed
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


class FakeRunner:
    """Answers dmsetup status/table from a queue of recorded lines and records mutating commands."""

    dry_run = False

    def __init__(self, statuses: list[str], table: str = "") -> None:
        self.statuses = statuses
        self.table = table
        self.ran: list[list[str]] = []

    def query(self, argv: list[str], **_: object) -> Completed:
        if argv[1] == "status":
            out = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        else:
            out = self.table
        return Completed(tuple(argv), 0, out + "\n", "")

    def run(self, argv: list[str], **_: object) -> Completed:
        self.ran.append(list(argv))
        return Completed(tuple(argv), 0, "", "")


def test_flush_dmcache_reloads_cleaner_and_reports_progress() -> None:
    dirty = line("cache-wb-dirty.txt")
    half = dirty.replace(" 0 49 46 1 writeback", " 0 49 20 1 writeback")
    clean = line("cache-cleaner-clean.txt")
    fake = FakeRunner([dirty, dirty, half, clean], table=line("cache-wb-table.txt"))
    seen: list[int] = []
    origins: list[str] = []
    cachestatus.flush(
        fake,  # type: ignore[arg-type]
        "skycache-wb-vm1",
        seen.append,
        sleep=lambda _: None,
        flush_origin=lambda _r, dev: origins.append(dev),
    )
    assert seen == [46, 20, 0]
    assert origins == ["7:0"]  # the origin of cache-wb-table.txt, flushed once the cache is clean
    assert fake.ran[0] == ["dmsetup", "reload", "skycache-wb-vm1", "--table", line("cache-cleaner-table.txt")]
    assert [a[1] for a in fake.ran[1:]] == ["suspend", "resume"]


def test_flush_reports_the_count_before_it_starts() -> None:
    """A small cache can be clean at the first poll: progress still starts from the dirty count."""
    dirty, clean = line("cache-wb-dirty.txt"), line("cache-cleaner-clean.txt")
    fake = FakeRunner([dirty, dirty, clean], table=line("cache-wb-table.txt"))
    seen: list[int] = []
    cachestatus.flush(
        fake,
        "skycache-wb-vm1",
        seen.append,
        sleep=lambda _: None,
        flush_origin=lambda *_: None,  # type: ignore[arg-type]
    )
    assert seen == [46, 0]


def test_flush_writecache_messages_cleaner() -> None:
    fake = FakeRunner(
        [line("wc-dirty.txt"), line("wc-dirty.txt"), line("wc-clean.txt")], table=line("wc-table.txt")
    )
    seen: list[int] = []
    origins: list[str] = []
    flush_origin = lambda _r, dev: origins.append(dev)  # noqa: E731
    cachestatus.flush(fake, "skycache-wb-vm1", seen.append, sleep=lambda _: None, flush_origin=flush_origin)  # type: ignore[arg-type]
    assert origins == ["7:0"]
    assert fake.ran == [
        ["dmsetup", "message", "skycache-wb-vm1", "0", "flush"],
        ["dmsetup", "message", "skycache-wb-vm1", "0", "cleaner"],
    ]
    assert seen == [1600, 0]


def test_flush_refuses_needs_check_and_times_out() -> None:
    bad = line("cache-wb-dirty.txt").replace("rw -", "ro needs_check")
    fake = FakeRunner([bad], table=line("cache-wb-table.txt"))
    with pytest.raises(SkycacheError, match="needs_check"):
        cachestatus.flush(fake, "skycache-wb-vm1", sleep=lambda _: None)  # type: ignore[arg-type]
    t = iter(range(100))
    fake2 = FakeRunner([line("wc-dirty.txt")])
    with pytest.raises(Busy, match="1600 blocks unwritten"):
        cachestatus.flush(
            fake2,  # type: ignore[arg-type]
            "skycache-wb-vm1",
            timeout_s=3,
            clock=lambda: float(next(t)),
            sleep=lambda _: None,
        )


def test_flush_refuses_unmarked() -> None:
    with pytest.raises(SkycacheError, match="not created by skycache"):
        cachestatus.flush(FakeRunner([line("wc-dirty.txt")]), "vg-lv")  # type: ignore[arg-type]


def test_dirty_count() -> None:
    assert cachestatus.dirty_count(FakeRunner([line("cache-wb-dirty.txt")]), "x") == 46  # type: ignore[arg-type]
    assert cachestatus.dirty_count(FakeRunner([line("wc-dirty.txt")]), "x") == 1600  # type: ignore[arg-type]


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
    origins: list[str] = []
    with pytest.raises(SkycacheError, match="error 5"):
        cachestatus.flush(
            FakeRunner([bad], table=line("wc-table.txt")),  # type: ignore[arg-type]
            "skycache-wb-vm1",
            sleep=lambda _: None,
            flush_origin=lambda _r, dev: origins.append(dev),
        )
    assert origins == []
