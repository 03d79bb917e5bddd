"""dm-cache tables and sizing rules (pure: no commands run here).

Constructor (kernel Documentation/admin-guide/device-mapper/cache.rst)::

    cache <metadata dev> <cache dev> <origin dev> <block size> <#feature args> [<feature arg>]*
          <policy> <#policy args> [<policy arg>]*

Block size is in sectors, a multiple of 64 (32 KiB) between 32 KiB and 1 GiB. The metadata device is
sized by rule: at least 4 MiB plus 44 bytes per cache block (the issue's rule; cache.rst's own rule of
thumb, 16 bytes per block, is too tight for metadata2 with hints).
"""

from __future__ import annotations

from dataclasses import dataclass

from skycache.errors import Busy, InvalidInput
from skycache.runner import Runner
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import dm
from skycache.units import format_size

SECTOR = 512
MIN_BLOCK = 32 * 1024
MAX_BLOCK = 1024**3
METADATA_BASE = 4 * 1024**2
METADATA_PER_BLOCK = 44
MODES = ("writethrough", "writeback", "passthrough")
POLICIES = ("smq", "cleaner")
DEFAULT_BLOCK = 256 * 1024
DEFAULT_MIGRATION_THRESHOLD = 2048  # sectors; the kernel's default


def check_block_size(block_bytes: int) -> int:
    if block_bytes % MIN_BLOCK or not MIN_BLOCK <= block_bytes <= MAX_BLOCK:
        raise InvalidInput(
            f"cache block size {format_size(block_bytes)} is invalid: "
            "use a multiple of 32K between 32K and 1G"
        )
    return block_bytes


def cache_blocks(data_bytes: int, block_bytes: int) -> int:
    """How many cache blocks a data device of ``data_bytes`` holds."""
    check_block_size(block_bytes)
    return data_bytes // block_bytes


def metadata_bytes(data_bytes: int, block_bytes: int, *, align: int = 4 * 1024**2) -> int:
    """Metadata device size for ``data_bytes`` of cache: 4 MiB + 44 B x blocks, rounded up to ``align``."""
    need = METADATA_BASE + METADATA_PER_BLOCK * cache_blocks(data_bytes, block_bytes)
    return -(-need // align) * align


@dataclass(frozen=True)
class CacheTable:
    """One dm-cache target covering the whole origin."""

    metadata_dev: str
    cache_dev: str
    origin_dev: str
    origin_sectors: int
    block_bytes: int = DEFAULT_BLOCK
    mode: str = "writethrough"
    policy: str = "smq"
    metadata2: bool = True

    def __post_init__(self) -> None:
        check_block_size(self.block_bytes)
        if self.mode not in MODES:
            raise InvalidInput(f"cache mode {self.mode!r} is invalid: use one of {', '.join(MODES)}")
        if self.policy not in POLICIES:
            raise InvalidInput(f"cache policy {self.policy!r} is invalid: use one of {', '.join(POLICIES)}")
        if self.origin_sectors <= 0:
            raise InvalidInput(f"origin size {self.origin_sectors} sectors is invalid")

    def line(self) -> str:
        features = (["metadata2"] if self.metadata2 else []) + [self.mode]
        return " ".join(
            [
                "0",
                str(self.origin_sectors),
                "cache",
                self.metadata_dev,
                self.cache_dev,
                self.origin_dev,
                str(self.block_bytes // SECTOR),
                str(len(features)),
                *features,
                self.policy,
                "0",
            ]
        )


# -- the thin layer that runs dmsetup (through kernel.dm) -------------------------------------------


def create(runner: Runner, name: str, spec: CacheTable) -> str:
    """Create the dm-cache device ``name`` (``skycache-...``); returns its /dev/mapper path.

    The metadata device must start zeroed for a new cache (lvcreate -Zy does that); a metadata device
    from an earlier cache is reopened with its contents: that is how a read cache stays warm.
    """
    return dm.create(runner, name, spec.line())


def remove(runner: Runner, name: str, *, force: bool = False) -> None:
    """Remove a dm-cache device; refuses while it holds dirty blocks unless ``force``.

    Removing a clean dm-cache writes its metadata (clean shutdown), so the same LVs reopen warm.
    """
    if not dm.exists(runner, name):
        return
    if not force:
        dirty = cachestatus.dirty_count(runner, name)
        if dirty:
            raise Busy(f"cache {name!r} holds {dirty} dirty blocks; flush it first (or force)")
    dm.remove(runner, name)


def set_migration_threshold(runner: Runner, name: str, sectors: int) -> None:
    """Cap the background migrations (promotions, demotions, writebacks) of a dm-cache device.

    dm-cache runs them only when it has seen no I/O for a second and no more than ``sectors`` are in
    flight; ``0`` stops them all (smq then neither promotes nor writes dirty blocks back by itself).
    The value lives in the loaded table only: the next table load (e.g. the ``cleaner`` reload of a
    flush) restores the default, :data:`DEFAULT_MIGRATION_THRESHOLD`.
    """
    if sectors < 0:
        raise InvalidInput(f"migration threshold {sectors} is invalid: use 0 or more sectors")
    dm.message(runner, name, 0, "migration_threshold", str(sectors))
