"""dm-cache / dm-writecache table builders and sizing rules."""

from __future__ import annotations

import pytest
from fakes import FakeRunner

from skycache.errors import InvalidInput, NotOwned
from skycache.storage.caches import dmcache
from skycache.storage.caches.dmcache import CacheTable
from skycache.storage.caches.writecache import WritecacheTable


def test_cache_table_line_matches_kernel_form() -> None:
    t = CacheTable("/dev/m", "/dev/d", "/dev/o", 131072, block_bytes=256 * 1024, mode="writeback")
    assert t.line() == "0 131072 cache /dev/m /dev/d /dev/o 512 2 metadata2 writeback smq 0"
    t1 = CacheTable("7:2", "7:1", "7:0", 131072, mode="writethrough", metadata2=False)
    assert t1.line() == "0 131072 cache 7:2 7:1 7:0 512 1 writethrough smq 0"


@pytest.mark.parametrize("bad", [0, 16 * 1024, 48 * 1024, 2 * 1024**3])
def test_block_size_rule(bad: int) -> None:
    with pytest.raises(InvalidInput, match="multiple of 32K"):
        CacheTable("m", "d", "o", 100, block_bytes=bad)


def test_mode_and_policy_checked() -> None:
    with pytest.raises(InvalidInput, match="'writearound'"):
        CacheTable("m", "d", "o", 100, mode="writearound")
    with pytest.raises(InvalidInput, match="'mq'"):
        CacheTable("m", "d", "o", 100, policy="mq")


def test_metadata_sizing_rule() -> None:
    # 1 GiB of 32 KiB blocks = 32768 blocks -> 4 MiB + 1441792 B -> rounded to 8 MiB.
    assert dmcache.cache_blocks(1024**3, 32 * 1024) == 32768
    assert dmcache.metadata_bytes(1024**3, 32 * 1024) == 8 * 1024**2
    small = dmcache.metadata_bytes(64 * 1024**2, 256 * 1024, align=1)
    assert small == 4 * 1024**2 + 44 * 256
    assert dmcache.metadata_bytes(100 * 1024**3, 32 * 1024) >= 4 * 1024**2 + 44 * 3276800


def test_writecache_table() -> None:
    assert WritecacheTable("7:0", "7:3", 131072).line() == "0 131072 writecache s 7:0 7:3 4096 0"
    t = WritecacheTable("7:0", "7:3", 131072, high_watermark=60, writeback_jobs=1024)
    assert t.line() == "0 131072 writecache s 7:0 7:3 4096 4 high_watermark 60 writeback_jobs 1024"
    assert WritecacheTable("a", "b", 8, cleaner=True).line().endswith(" 1 cleaner")
    with pytest.raises(InvalidInput):
        WritecacheTable("a", "b", 8, block_bytes=3000)
    with pytest.raises(InvalidInput):
        WritecacheTable("a", "b", 8, high_watermark=120)


def test_migration_threshold_message() -> None:
    runner = FakeRunner()
    dmcache.set_migration_threshold(runner, "skycache-wb-vm1", 0)
    assert runner.ran() == ["dmsetup message skycache-wb-vm1 0 migration_threshold 0"]
    with pytest.raises(InvalidInput, match="-1"):
        dmcache.set_migration_threshold(runner, "skycache-wb-vm1", -1)
    with pytest.raises(NotOwned):
        dmcache.set_migration_threshold(runner, "vg-lv", 0)
