"""The storage stacks a scenario names, built and torn down by the management library.

The bench adds measurement only: every LV, export, session, cache and dm device comes from the
library's planners (skycache.storage), the same code and block sizes as ``skycache disk ...``.

A run has one :class:`Workspace`, made once and filled once: an LVM repository ``bench`` on a
loop-backed VG (images ``img`` for the stacks without COW, ``base`` for VM-disk clones), a file
repository ``benchf`` (image ``img``) when a stack uses one, and a node cache VG ``benchnode``. Each
condition x repetition then builds its stack on a fresh VM disk and tears it down after fio, so every
repetition starts with empty caches ("cold"; the image's read cache is dropped with the VM disk); a
"warm" repetition runs an untimed pass first. The mapping, a scenario stack to a library VM disk:

- ``transport = "local"``: the image itself (the LV or the file); no VM disk.
- ``transport = "iscsi"``, ``cow = "none"``: ``disk ln`` (the persistent image over iSCSI), with the
  read and write-back caches asked for, and ``repo_delay_ms`` as a dm-delay export of the image.
- ``cow = "snapshot" | "thin"``: ``disk clone`` of the base (COW store on the repository), caches too.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from skycache.bench import cachemetrics
from skycache.bench.scenario import Stack
from skycache.errors import SkycacheError
from skycache.plan import Plan
from skycache.runner import Runner
from skycache.storage import image, node, repository
from skycache.storage.caches import cachestatus, dmcache
from skycache.storage.view import View
from skycache.storage.vmdisk import clone, delete, layers, volumes
from skycache.units import parse_positive_size

log = logging.getLogger("skycache.bench.stacks")

REPO = "bench"
FILE_REPO = "benchf"
NODE_VG = "benchnode"
IMAGE = "img"  # stacks without COW use (and write to) this image
BASE = "base"  # the read-only base of VM-disk clones
LAB_CACHE_DIR = Path("/tmp/skycache-bench-node")
SCRATCH_MOUNT = Path("/run/skycache-bench")
PORTAL_ADDR = "127.0.0.1"
PORTAL_PORT = 3260
PORTAL = f"{PORTAL_ADDR}:{PORTAL_PORT}"


class StackError(SkycacheError):
    """A stack could not be built or torn down."""


def _apply(runner: Runner, plan: Plan, progress: Callable[[str], None] | None = None) -> None:
    log.info("%s", plan.title)
    plan.apply(runner, progress or (lambda _: None))


@dataclass
class BuiltStack:
    stack: Stack
    device: str  # what fio opens
    layers: list[str] = field(default_factory=list)  # human-readable, bottom up
    caches: list[tuple[str, str]] = field(default_factory=list)  # (role read|write, dm name)
    runner: Runner | None = None
    vm_id: str = ""
    read_cache: tuple[str, str, str] | None = None  # (cache VG, repo, image): dropped after the VM disk
    repo_devices: list[str] = field(default_factory=list)  # MAJ:MIN read from the repository (cachemetrics)
    flush: dict[str, float] = field(default_factory=dict)  # the write-back flush's columns (teardown)

    def teardown(self) -> list[str]:
        """Flush the write-back cache, timed (:meth:`flush_write_cache`), delete the VM disk (a
        clone's COW store is discarded) and drop the image's read cache; returns the errors."""
        if self.runner is None or not self.vm_id:
            return []
        errors = []
        try:
            self.flush_write_cache()
        except (SkycacheError, OSError) as exc:  # still torn down: a clone's cache is discarded anyway
            errors.append(f"flushing the write-back cache of {self.vm_id}: {exc}")
            log.warning("flush of %s failed: %s", self.vm_id, exc)
        try:
            _apply(self.runner, delete.plan_delete(View(self.runner), self.vm_id, sync=False))
            if self.read_cache is not None:
                _apply(self.runner, delete.plan_drop_read_cache(View(self.runner), *self.read_cache))
        except (SkycacheError, OSError) as exc:
            errors.append(f"VM disk {self.vm_id}: {exc}")
            log.warning("teardown of %s failed: %s", self.vm_id, exc)
        self.vm_id = ""
        return errors

    def flush_write_cache(self) -> None:
        """Write the write-back cache back, timed, before the VM disk goes: what synchronising the VM
        costs (design.md, section 2). ``disk delete`` of a persistent image flushes anyway (it then
        finds the cache clean); a clone's cache would be discarded, so the flush here is the one
        step added to its teardown, and its writes go to the COW store that is then deleted."""
        r = self.runner
        for role, name in self.caches:
            if role != "write" or r is None:
                continue
            table = cachestatus.table_line(r, name)
            dirty_bytes = cachestatus.status(r, name).unwritten * cachestatus.block_bytes(table)
            before = cachemetrics.block_stats(r, self.repo_devices)
            start = time.monotonic()
            cachestatus.flush(r, name, timeout_s=3600)
            elapsed = time.monotonic() - start
            after = cachemetrics.block_stats(r, self.repo_devices)
            written = sum(a.write_sectors - b.write_sectors for a, b in zip(after, before, strict=True))
            self.flush = {
                "wb_flush_s": round(elapsed, 3),
                "wb_flushed_bytes": float(written * cachemetrics.STAT_SECTOR) if after else math.nan,
                "wb_flush_dirty_bytes": float(dirty_bytes),
            }


@dataclass
class Workspace:
    """Per-run repository and node storage shared by every condition.

    Its repositories and cache VG are named ``bench``, ``benchf``, ``benchnode``, with a suffix from the
    directory when that is not the default: several workspaces on one host (fio servers of a test on
    127.0.0.1) then do not collide.
    """

    runner: Runner
    directory: Path
    image_size: int
    images: list[str] = field(default_factory=list)  # REPO/NAME refs to fill
    mounted: str | None = None
    vm_counter: int = 0
    _made: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    has_node: bool = False

    @classmethod
    def prepare(
        cls, runner: Runner, stacks: list[Stack], image_size: str | int, directory: Path | None = None
    ) -> Workspace:
        size = parse_positive_size(image_size, what="image_size")
        ws = cls(runner, directory or SCRATCH_MOUNT, size)
        try:
            ws._setup(stacks)
        except BaseException:
            ws.teardown()
            raise
        return ws

    @property
    def suffix(self) -> str:
        if self.directory == SCRATCH_MOUNT:
            return ""
        return "-" + hashlib.sha256(str(self.directory).encode()).hexdigest()[:6]

    @property
    def repo(self) -> str:
        return REPO + self.suffix

    @property
    def file_repo(self) -> str:
        return FILE_REPO + self.suffix

    @property
    def node_vg(self) -> str:
        return NODE_VG + self.suffix

    @property
    def local(self) -> bool:
        """Whether the workspace is on this machine (a fio server reached over ssh is not: this
        machine's lab disks are never its disks)."""
        return self.runner.target.local

    def _setup(self, stacks: list[Stack]) -> None:
        r = self.runner
        lab_disks = os.environ.get("SKYCACHE_LAB_DISKS", "").split() if self.local else []
        r.run(["mkdir", "-p", "--", str(self.directory)])
        if lab_disks and self.directory == SCRATCH_MOUNT and not os.path.ismount(SCRATCH_MOUNT):
            # In the lab the guest's /tmp is RAM: back the repository with the first scratch disk.
            r.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", lab_disks[0]])
            r.run(["mount", lab_disks[0], str(SCRATCH_MOUNT)])
            self.mounted = str(SCRATCH_MOUNT)
            self._made.append(("scratch mount", lambda: _quiet(r, ["umount", "-l", str(SCRATCH_MOUNT)])))
        lvm_images = sorted({IMAGE if s.cow == "none" else BASE for s in stacks if s.backend == "lvm"})
        if lvm_images:
            stores = (
                clone.default_store_size(self.image_size, "thin")
                if any(s.cow != "none" for s in stacks)
                else 0
            )
            loop = self.image_size * len(lvm_images) + stores + 256 * 2**20
            self._plan(
                "repository",
                repository.plan_init_lvm(View(r), self.repo, loop_size=loop, directory=str(self.directory)),
            )
            self._made.append(
                ("repository", lambda: _apply(r, repository.plan_delete(View(r), self.repo, force=True)))
            )
            for name in lvm_images:
                self._plan(
                    f"image {self.repo}/{name}",
                    image.plan_create(View(r), f"{self.repo}/{name}", size=self.image_size),
                )
                self.images.append(f"{self.repo}/{name}")
        if any(s.backend == "file" for s in stacks):
            fdir = str(PurePosixPath(self.directory) / FILE_REPO)
            self._plan("file repository", repository.plan_init_file(View(r), self.file_repo, fdir))
            self._made.append(
                (
                    "file repository",
                    lambda: _apply(r, repository.plan_delete(View(r), self.file_repo, force=True)),
                )
            )
            self._plan(
                f"image {self.file_repo}/{IMAGE}",
                image.plan_create(View(r), f"{self.file_repo}/{IMAGE}", size=self.image_size),
            )
            self.images.append(f"{self.file_repo}/{IMAGE}")
        cache_bytes = max([_cache_need(s) for s in stacks] or [0])
        if cache_bytes:
            need = cache_bytes + 64 * 2**20
            disk = self.node_disk(need)
            view = View(r)
            if disk is not None:
                # The lab's second scratch disk stands for the worker node's local SSD.
                plan = node.plan_init(view, self.node_vg, devices=[disk])
            else:
                plan = node.plan_init(
                    view,
                    self.node_vg,
                    loop_size=node.round_extent(need),
                    directory=str(self.cache_directory()),
                )
            self._plan("node cache VG", plan)
            self.has_node = True
            self._made.append(("node cache VG", lambda: _apply(r, node.plan_delete(View(r), self.node_vg))))

    def _plan(self, what: str, plan: Plan) -> None:
        try:
            _apply(self.runner, plan)
        except SkycacheError as exc:
            raise StackError(f"preparing the {what}: {exc}") from exc

    def node_disk(self, need: int) -> str | None:
        """In the lab, the second scratch disk when it is blank and large enough: a loop device is
        several times slower than a virtio disk under TCG, which would make any cache look slow."""
        disks = os.environ.get("SKYCACHE_LAB_DISKS", "").split()
        if not self.local or os.environ.get("SKYCACHE_IN_LAB") != "1" or len(disks) < 2:
            return None
        disk = disks[1]
        try:
            signatures = self.runner.query(["wipefs", "--no-act", "--noheadings", disk]).stdout.strip()
            size = int(self.runner.query(["blockdev", "--getsize64", disk]).stdout.strip())
        except (SkycacheError, ValueError):
            return None
        return disk if not signatures and size >= need else None

    def cache_directory(self) -> Path:
        """Where the node's cache VG lives. In the lab: the guest's RAM (/tmp), standing for the fast
        local SSD of a worker node, while the repository sits on the slower virtio scratch disk."""
        if self.local and os.environ.get("SKYCACHE_IN_LAB") == "1" and self.directory == SCRATCH_MOUNT:
            return LAB_CACHE_DIR
        return self.directory

    def fill(self, progress: Callable[[str], None] | None = None) -> None:
        """Write every image once (sequential, 1 MiB) so reads return real blocks, not holes."""
        view = View(self.runner)
        for ref in self.images:
            path = image.get_image(view, ref).path
            if progress:
                progress(f"filling {ref} ({path})")
            argv = ["fio", "--name=fill", f"--filename={path}", "--rw=write", "--bs=1m"]
            argv += [f"--size={self.image_size}", "--direct=1", "--ioengine=libaio", "--iodepth=8"]
            self.runner.run([*argv, "--output-format=terse"], timeout_s=3600)

    def image_ref(self, stack: Stack) -> str:
        if stack.backend == "file":
            return f"{self.file_repo}/{IMAGE}"
        return f"{self.repo}/{IMAGE if stack.cow == 'none' else BASE}"

    def teardown(self) -> list[str]:
        errors = []
        while self._made:
            what, undo = self._made.pop()
            try:
                undo()
            except (SkycacheError, OSError) as exc:
                errors.append(f"{what}: {exc}")
        return errors


def _cache_need(s: Stack) -> int:
    need = 0
    for size in (s.read_cache, s.write_cache):
        if size is not None:
            data = parse_positive_size(size)
            need += node.round_extent(data) + node.round_extent(dmcache.metadata_bytes(data, layers.RC_BLOCK))
    if s.read_cache is not None:
        need += clone.GUARD_COW
    return need


def _quiet(runner: Runner, argv: list[str]) -> None:
    runner.run(argv, check=False)


def drop_page_cache(runner: Runner) -> None:
    """Empty the kernel's page cache, so buffered paths start cold too."""
    runner.run(["sync"])
    runner.run(["sysctl", "-q", "-w", "vm.drop_caches=3"], check=False)


def build(ws: Workspace, stack: Stack) -> BuiltStack:
    """Build ``stack`` through the library's planners; a failing plan rolls itself back."""
    r = ws.runner
    ref = ws.image_ref(stack)
    view = View(r)
    img = image.get_image(view, ref)
    if stack.transport == "local":
        built = BuiltStack(stack, img.path, [f"{stack.backend} image {ref} ({img.path}), local"])
        built.repo_devices = cachemetrics.repo_devices(r, stack.transport, stack.backend, img.path)
        return built
    ws.vm_counter += 1
    vm_id = f"bench{ws.vm_counter}"
    rc = parse_positive_size(stack.read_cache) if stack.read_cache else 0
    wc = parse_positive_size(stack.write_cache) if stack.write_cache else 0
    engine = stack.engine or "writecache"
    cache_vg = ws.node_vg if ws.has_node else ""
    if stack.cow == "none":
        plan, device = volumes.plan_ln(
            view,
            vm_id,
            ref,
            PORTAL,
            read_cache=rc,
            write_cache=wc,
            write_engine=engine,
            cache_vg=cache_vg,
            delay_ms=round(stack.repo_delay_ms),
        )
    else:
        if stack.repo_delay_ms:
            raise StackError("repo_delay_ms (a dm-delay export) is for stacks without cow")
        req = clone.CloneRequest(vm_id, ref, PORTAL, stack.cow, rc, wc, engine, cache_vg)
        plan, device = clone.plan_clone(view, req)
    repo = ref.split("/")[0]
    built = BuiltStack(
        stack,
        device,
        [
            f"{stack.backend} image {ref} ({img.path})",
            *(a.description for a in plan.actions if a.description.startswith(("create", "log in"))),
        ],
        runner=r,
        vm_id=vm_id,
        read_cache=(cache_vg, repo, img.name) if rc else None,
    )
    if rc:
        built.caches.append(("read", layers.rc_name(cache_vg, repo, img.name)))
    if wc:
        built.caches.append(("write", layers.wb_name(vm_id)))
    try:
        _apply(r, plan)
    except SkycacheError as exc:
        raise StackError(f"building {stack.name}: {exc}") from exc
    built.repo_devices = cachemetrics.repo_devices(r, stack.transport, stack.backend, device)
    return built


def cache_sample(runner: Runner, built: BuiltStack) -> list[dict[str, Any]]:
    """The stack's counters now: each cache's (hits, misses, dirty blocks, ...) and the repository
    devices' read and write bytes (role ``repo``); see :mod:`skycache.bench.cachemetrics`."""
    return cachemetrics.take(runner, built.caches, built.repo_devices)
