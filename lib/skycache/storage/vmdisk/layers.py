"""The node-side VM-disk stack as data: dm device names and tables, built by pure functions.

docs/architecture.md ("The VM-disk stack"), bottom to top::

    base LUN (iSCSI, read-only)          store LUN (iSCSI, the VM's COW store on the repository)
        |                                     |
    skycache-rc-<vg>.<repo>.<base>       skycache-wb-<id>        write-back cache (optional):
      dm-cache writethrough (optional,     dm-writecache, or dm-cache writeback + smq
      persistent, shared per image)           |
        |                                 snapshot: the whole store is the persistent COW
        |                                 thin:     skycache-tm-<id> (metadata, first THIN_META bytes)
        |                                           skycache-td-<id> (data, the rest)
        |                                           skycache-tp-<id> thin-pool
        +----------- skycache-vm-<id> -----------+
                     snapshot ORIGIN COW P 8   |   thin POOL 0 ORIGIN (base as external origin)

Every name carries the VM id or image, so the stack can be found again from ``dmsetup`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from skycache.errors import InvalidInput
from skycache.storage.caches import dmcache, writecache
from skycache.storage.kernel import dm

SECTOR = 512
COW_ENGINES = ("snapshot", "thin")
# "none": the persistent image itself (``disk ln``): its LUN is the origin of the caches, and the VM
# disk is a dm-linear over the top of them; there is no COW store.
STACK_KINDS = (*COW_ENGINES, "none")
WRITE_ENGINES = ("writecache", "dmcache")
THIN_META = 16 * 1024**2  # thin-pool metadata area at the start of the store
THIN_BLOCK_SECTORS = 128  # 64 KiB pool blocks
SNAP_CHUNK_SECTORS = 8  # 4 KiB exceptions
RC_BLOCK = 64 * 1024
WB_BLOCK = 64 * 1024


def vm_name(vm_id: str) -> str:
    return f"skycache-vm-{vm_id}"


def vm_path(vm_id: str) -> str:
    return dm.path(vm_name(vm_id))


def wb_name(vm_id: str) -> str:
    return f"skycache-wb-{vm_id}"


def thin_names(vm_id: str) -> tuple[str, str, str]:
    """(metadata linear, data linear, pool) of a thin VM disk."""
    return f"skycache-tm-{vm_id}", f"skycache-td-{vm_id}", f"skycache-tp-{vm_id}"


def rc_name(cache_vg: str, repo: str, base: str) -> str:
    return f"skycache-rc-{cache_vg}.{repo}.{base}"


def rc_guard_name(rc: str) -> str:
    """The read-only guard under a read cache: ``skycache-rg-...`` for ``skycache-rc-...``."""
    return "skycache-rg-" + rc.removeprefix("skycache-rc-")


def all_vm_devices(vm_id: str) -> list[str]:
    """Every dm device of a VM (not the shared read cache), top first: the removal order."""
    tm, td, tp = thin_names(vm_id)
    return [vm_name(vm_id), tp, td, tm, wb_name(vm_id)]


@dataclass(frozen=True)
class ReadCacheDevs:
    """dm-cache opens its origin read-write, and the kernel refuses that on the write-protected base
    LUN ("reload ioctl ... failed: Read-only file system", seen in the lab). So the cache's origin is a
    guard: a non-persistent dm-snapshot of the LUN (dm-snapshot opens its origin read-only) over a
    small local COW LV. Nothing writes to it (the cache is writethrough under a COW device), so the
    guard never fills; it only makes the read-only LUN acceptable as a dm-cache origin."""

    name: str
    metadata_dev: str
    data_dev: str
    guard_cow_dev: str = ""
    block_bytes: int = RC_BLOCK


@dataclass(frozen=True)
class WriteCacheDevs:
    engine: str  # writecache | dmcache
    data_dev: str
    metadata_dev: str = ""  # dmcache only
    block_bytes: int = WB_BLOCK

    def __post_init__(self) -> None:
        if self.engine not in WRITE_ENGINES:
            raise InvalidInput(f"write engine {self.engine!r} is invalid: use {' or '.join(WRITE_ENGINES)}")
        if self.engine == "dmcache" and not self.metadata_dev:
            raise InvalidInput("the dmcache write engine needs a metadata device")


@dataclass(frozen=True)
class StackSpec:
    vm_id: str
    cow: str
    base_dev: str
    base_sectors: int
    store_dev: str
    store_sectors: int
    read_cache: ReadCacheDevs | None = None
    write_cache: WriteCacheDevs | None = None

    def __post_init__(self) -> None:
        if self.cow not in STACK_KINDS:
            raise InvalidInput(f"--cow {self.cow!r} is invalid: use {' or '.join(COW_ENGINES)}")
        if self.cow == "thin" and self.store_sectors * SECTOR <= THIN_META + 1024**2:
            raise InvalidInput("the COW store is too small for a thin pool")


ROLE_NAMES = {
    "rg": "read-cache guard",
    "rc": "read cache",
    "wb": "write-back cache",
    "tm": "thin-pool metadata",
    "td": "thin-pool data",
    "tp": "thin pool",
    "vm": "VM disk",
}


@dataclass(frozen=True)
class Layer:
    """One dm device of the stack; ``shared`` layers (the read cache) may already exist."""

    name: str
    table: str
    role: str  # rc, wb, tm, td, tp, vm
    shared: bool = False


def store_top(spec: StackSpec) -> str:
    """The device the COW engine writes to: the write-back cache, or the store LUN itself."""
    return dm.path(wb_name(spec.vm_id)) if spec.write_cache else spec.store_dev


def origin_top(spec: StackSpec) -> str:
    """The device the COW engine reads the base from: the read cache, or the base LUN."""
    return dm.path(spec.read_cache.name) if spec.read_cache else spec.base_dev


def thin_split(store_sectors: int) -> tuple[int, int]:
    """(metadata sectors, data sectors) of the store; data is whole pool blocks."""
    meta = THIN_META // SECTOR
    data = (store_sectors - meta) // THIN_BLOCK_SECTORS * THIN_BLOCK_SECTORS
    return meta, data


def build_order(spec: StackSpec) -> list[Layer]:
    """The stack's dm devices in creation order (remove in the reverse order)."""
    out: list[Layer] = []
    if spec.read_cache:
        rc = spec.read_cache
        origin = spec.base_dev
        if rc.guard_cow_dev:
            guard = rc_guard_name(rc.name)
            seg = dm.snapshot(spec.base_dev, rc.guard_cow_dev, spec.base_sectors, persistent=False)
            out.append(Layer(guard, seg.line(), "rg", shared=True))
            origin = dm.path(guard)
        t = dmcache.CacheTable(
            rc.metadata_dev, rc.data_dev, origin, spec.base_sectors, block_bytes=rc.block_bytes
        )
        out.append(Layer(rc.name, t.line(), "rc", shared=True))
    if spec.write_cache:
        wc = spec.write_cache
        # Under a COW device the write-back cache caches the COW store; on a persistent image
        # (cow "none") it caches the image itself, above its read cache.
        wb_origin, wb_sectors = (
            (spec.store_dev, spec.store_sectors)
            if spec.cow != "none"
            else (origin_top(spec), spec.base_sectors)
        )
        if wc.engine == "writecache":
            line = writecache.WritecacheTable(wb_origin, wc.data_dev, wb_sectors).line()
        else:
            line = dmcache.CacheTable(
                wc.metadata_dev,
                wc.data_dev,
                wb_origin,
                wb_sectors,
                block_bytes=wc.block_bytes,
                mode="writeback",
            ).line()
        out.append(Layer(wb_name(spec.vm_id), line, "wb"))
    if spec.cow == "none":
        top = dm.path(wb_name(spec.vm_id)) if spec.write_cache else origin_top(spec)
        out.append(Layer(vm_name(spec.vm_id), dm.linear(top, spec.base_sectors).line(), "vm"))
        return out
    cow_dev = store_top(spec)
    origin = origin_top(spec)
    if spec.cow == "snapshot":
        seg = dm.snapshot(origin, cow_dev, spec.base_sectors, chunk_sectors=SNAP_CHUNK_SECTORS)
        out.append(Layer(vm_name(spec.vm_id), seg.line(), "vm"))
        return out
    tm, td, tp = thin_names(spec.vm_id)
    meta, data = thin_split(spec.store_sectors)
    out.append(Layer(tm, dm.linear(cow_dev, meta).line(), "tm"))
    out.append(Layer(td, dm.linear(cow_dev, data, offset=meta).line(), "td"))
    out.append(Layer(tp, thin_pool_line(dm.path(tm), dm.path(td), data), "tp"))
    thin = dm.thin(dm.path(tp), 0, spec.base_sectors, external_origin=origin)
    out.append(Layer(vm_name(spec.vm_id), thin.line(), "vm"))
    return out


def thin_pool_line(meta_dev: str, data_dev: str, data_sectors: int, *, read_only: bool = False) -> str:
    """``thin-pool META DATA BLOCK LOW_WATER [features]`` (thin-provisioning.rst).

    ``read_only`` ("Don't allow any changes to be made to the pool metadata") is how the repository
    opens a VM's pool to materialise it without touching the store.
    """
    features = ["1", "read_only"] if read_only else ["0"]
    return " ".join(
        ["0", str(data_sectors), "thin-pool", meta_dev, data_dev, str(THIN_BLOCK_SECTORS), "0", *features]
    )


def fresh_init_device(spec: StackSpec) -> str:
    """What a new COW store must have zeroed before first use: the snapshot header or the pool's
    metadata superblock (both are the first 4 KiB of their area)."""
    if spec.cow == "snapshot":
        return store_top(spec)
    return dm.path(thin_names(spec.vm_id)[0])
