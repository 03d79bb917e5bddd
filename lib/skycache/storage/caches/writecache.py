"""dm-writecache tables (pure: no commands run here).

Constructor (kernel Documentation/admin-guide/device-mapper/writecache.rst)::

    writecache <p|s> <origin dev> <cache dev> <block size> <#optional args> [<optional arg>]*

``s`` is the SSD mode (any block device as cache; metadata lives at the start of the cache device and
is formatted when its first block is zero, so a fresh cache device must be zeroed first). Block size
is a power of two between 512 bytes and the page size (4096 here).
"""

from __future__ import annotations

from dataclasses import dataclass

from skycache.errors import Busy, InvalidInput
from skycache.ownership import require_marked_name
from skycache.runner import Runner
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import dm

SECTOR = 512
DEFAULT_BLOCK = 4096


@dataclass(frozen=True)
class WritecacheTable:
    """One dm-writecache target (SSD mode) covering the whole origin."""

    origin_dev: str
    cache_dev: str
    origin_sectors: int
    block_bytes: int = DEFAULT_BLOCK
    high_watermark: int | None = None  # percent of blocks in use that starts writeback
    low_watermark: int | None = None  # percent at which writeback stops
    writeback_jobs: int | None = None
    cleaner: bool = False

    def __post_init__(self) -> None:
        b = self.block_bytes
        if b < 512 or b > 4096 or b & (b - 1):
            raise InvalidInput(f"writecache block size {b} is invalid: use 512, 1024, 2048 or 4096")
        for name, pct in (("high_watermark", self.high_watermark), ("low_watermark", self.low_watermark)):
            if pct is not None and not 0 <= pct <= 100:
                raise InvalidInput(f"writecache {name} {pct} is invalid: use 0-100")
        if self.origin_sectors <= 0:
            raise InvalidInput(f"origin size {self.origin_sectors} sectors is invalid")

    def optional_args(self) -> list[str]:
        args: list[str] = []
        if self.high_watermark is not None:
            args += ["high_watermark", str(self.high_watermark)]
        if self.low_watermark is not None:
            args += ["low_watermark", str(self.low_watermark)]
        if self.writeback_jobs is not None:
            args += ["writeback_jobs", str(self.writeback_jobs)]
        if self.cleaner:
            args.append("cleaner")
        return args

    def line(self) -> str:
        args = self.optional_args()
        return " ".join(
            [
                "0",
                str(self.origin_sectors),
                "writecache",
                "s",
                self.origin_dev,
                self.cache_dev,
                str(self.block_bytes),
                str(len(args)),
                *args,
            ]
        )


# -- the thin layer that runs dmsetup (through kernel.dm) -------------------------------------------

ZERO_BYTES = 1024 * 1024


def zero_superblock_argv(cache_dev: str) -> list[str]:
    """Zero the start of a cache device so dm-writecache formats it instead of reading old metadata."""
    return [
        "dd", "if=/dev/zero", f"of={cache_dev}", "bs=65536", f"count={ZERO_BYTES // 65536}",
        "oflag=direct", "conv=fsync",
    ]  # fmt: skip


def create(runner: Runner, name: str, spec: WritecacheTable, *, fresh: bool = True) -> str:
    """Create the dm-writecache device ``name``; ``fresh`` zeroes the cache device first."""
    require_marked_name(name, what="device-mapper device")
    if fresh:
        runner.run(zero_superblock_argv(spec.cache_dev))
    return dm.create(runner, name, spec.line())


def remove(runner: Runner, name: str, *, force: bool = False) -> None:
    """Remove a dm-writecache device; refuses while blocks are not written back unless ``force``."""
    if not dm.exists(runner, name):
        return
    if not force:
        unwritten = cachestatus.dirty_count(runner, name)
        if unwritten:
            raise Busy(f"write cache {name!r} holds {unwritten} unwritten blocks; flush it first (or force)")
    dm.remove(runner, name)
