"""Build and tear down the storage stacks a scenario names, through the management library.

A run has one :class:`Workspace`: the repository (a file image in a directory, an LVM image in a
loop-backed volume group) and a node volume group for cache LVs, made once and filled once. Each
condition x repetition then builds its :class:`BuiltStack` on top of the workspace's image (export
and attach over iSCSI, read cache, write-back cache) and tears it down after fio, so every
repetition starts with empty caches ("cold"); a "warm" repetition runs one untimed pass first.

Each layer is made by the library (skycache.storage: lvm, dm, dmcache, writecache, cachestatus, lio, iscsi);
every layer pushes its undo, and a failure while building undoes the layers already made (the plan ->
apply -> undo rule with steps whose arguments are only known while building, e.g. the attached
device's path).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skycache.bench.scenario import Stack
from skycache.errors import SkycacheError
from skycache.runner import CommandError, LocalTarget, Runner
from skycache.storage.caches import cachestatus, dmcache, writecache
from skycache.storage.kernel import dm, loopdev, lvm
from skycache.units import parse_positive_size

log = logging.getLogger("skycache.bench.stacks")

PREFIX = "skycache-bench"
REPO_VG = f"{PREFIX}-repo"
NODE_VG = f"{PREFIX}-node"
BASE_LV = f"{PREFIX}-base"
FILE_IMAGE = f"{PREFIX}-base.img"
# dm-cache block size: 256 KiB, as in the design's lab measurement (design.md §4); smaller blocks
# promote too slowly under TCG for a short warm-up pass to warm the cache.
CACHE_BLOCK = 256 * 1024
LAB_CACHE_DIR = Path("/tmp/skycache-bench-node")
SCRATCH_MOUNT = Path("/run/skycache-bench")
COW_REPO = f"{PREFIX}-cow"  # a skycache repository (repo/image/vmdisk API) for VM-disk stacks
COW_BASE = "base"
COW_NODE = f"{PREFIX}-cownode"
REPO_NAME = "bench"  # the export's repository name in the IQN: <prefix>:bench.<backend>
PORTAL_ADDR = "127.0.0.1"
PORTAL_PORT = 3260


class StackError(SkycacheError):
    """A stack could not be built or torn down."""


@dataclass
class BuiltStack:
    stack: Stack
    device: str  # what fio opens
    layers: list[str] = field(default_factory=list)  # human-readable, bottom up
    caches: list[tuple[str, str]] = field(default_factory=list)  # (role read|write, dm name)
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self._undo.append((what, undo))

    def teardown(self) -> list[str]:
        """Undo every layer, newest first; returns the errors (teardown goes on past them)."""
        errors = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except (SkycacheError, OSError) as exc:
                errors.append(f"{what}: {exc}")
                log.warning("teardown of %s failed: %s", what, exc)
        return errors


@dataclass
class Workspace:
    """Per-run repository and node storage shared by every condition."""

    runner: Runner
    directory: Path
    image_size: int
    mounted: str | None = None
    file_image: Path | None = None
    lvm_image: str | None = None
    node_vg: bool = False
    repo_vg: bool = False
    node_device: str | None = None  # the node cache VG's disk (None: a loop device)
    cow_base: str | None = None  # the base image's device in the COW repository
    cow_node: bool = False
    vm_counter: int = 0
    _made: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

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
    def local(self) -> bool:
        """Whether the workspace is on this machine (a fio server reached over ssh is not: its files
        are made and checked through the runner, and this machine's lab disks are never its disks)."""
        return isinstance(self.runner.target, LocalTarget)

    def _setup(self, stacks: list[Stack]) -> None:
        r = self.runner
        lab_disks = os.environ.get("SKYCACHE_LAB_DISKS", "").split() if self.local else []
        self._mkdir(self.directory)
        if lab_disks and self.directory == SCRATCH_MOUNT and not os.path.ismount(SCRATCH_MOUNT):
            # In the lab the guest's /tmp is RAM: back the images with the first scratch disk instead.
            r.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", lab_disks[0]])
            r.run(["mount", lab_disks[0], str(SCRATCH_MOUNT)])
            self.mounted = str(SCRATCH_MOUNT)
            self._made.append(("scratch mount", lambda: _quiet(r, ["umount", "-l", str(SCRATCH_MOUNT)])))
        backends = {s.backend for s in stacks}
        if "file" in backends:
            img = self.directory / FILE_IMAGE
            exists = (
                img.exists() if self.local else r.query(["test", "-e", str(img)], check=False).returncode == 0
            )
            if exists:
                raise StackError(f"{img} exists: a previous run did not clean up (remove it)")
            r.run(["truncate", "-s", str(self.image_size), str(img)])
            self.file_image = img
            self._made.append(("file image", lambda: self._remove(img)))
        if "lvm" in backends:
            # extents for the base LV, plus room for COW stores and LVM metadata
            lvm.create_loop_vg(r, REPO_VG, self.image_size * 2 + 64 * 2**20, self.directory)
            self.repo_vg = True
            self._made.append(("repository VG", lambda: lvm.remove_vg(r, REPO_VG)))
            lvm.create_lv(r, REPO_VG, BASE_LV, self.image_size)
            self.lvm_image = f"/dev/{REPO_VG}/{BASE_LV}"
        cow_stacks = [s for s in stacks if s.cow != "none"]
        if cow_stacks:
            self._setup_cow(cow_stacks)
        cache_bytes = max([_cache_need(s) for s in stacks if s.cow == "none"] or [0])
        if cache_bytes:
            disk = self.node_disk(cache_bytes + 64 * 2**20)
            if disk is not None:
                # The lab's second scratch disk stands for the worker node's local SSD.
                lvm.create_vg(r, NODE_VG, [disk])
                self.node_device = disk
            else:
                node_dir = self.cache_directory()
                self._mkdir(node_dir)
                lvm.create_loop_vg(r, NODE_VG, cache_bytes + 64 * 2**20, node_dir)
            self.node_vg = True
            self._made.append(("node VG", lambda: lvm.remove_vg(r, NODE_VG)))

    def _mkdir(self, path: Path) -> None:
        if not self.local:
            self.runner.run(["mkdir", "-p", "--", str(path)])
        elif not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)

    def _remove(self, path: Path) -> None:
        if self.local:
            path.unlink(missing_ok=True)
        else:
            self.runner.run(["rm", "-f", "--", str(path)])

    def _setup_cow(self, cow_stacks: list[Stack]) -> None:
        """VM-disk stacks go through the library's VM disks, which works on a skycache repository and node."""
        repo, image, node = _optional("repo"), _optional("image"), _optional("node")
        r = self.runner
        # base + one COW store (vmdisk sizes it to hold a full rewrite of the base) + thin metadata
        repo.plan_init_lvm(
            r, COW_REPO, loop_size=self.image_size * 3 + 256 * 2**20, directory=self.directory
        ).apply(r)
        self._made.append(("COW repository", lambda: lvm.remove_vg(r, COW_REPO)))
        ref = f"{COW_REPO}/{COW_BASE}"
        image.plan_create(r, ref, size=self.image_size).apply(r)
        self.cow_base = str(image.get_image(r, ref).path)
        need = max(_cache_need(s) for s in cow_stacks)
        if need:
            node_dir = self.cache_directory()
            self._mkdir(node_dir)
            node.plan_init(r, COW_NODE, loop_size=need + 64 * 2**20, directory=node_dir).apply(r)
            self.cow_node = True
            self._made.append(("COW node cache VG", lambda: lvm.remove_vg(r, COW_NODE)))

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
        for image in (self.file_image, self.lvm_image, self.cow_base):
            if image is None:
                continue
            if progress:
                progress(f"filling {image}")
            argv = ["fio", "--name=fill", f"--filename={image}", "--rw=write", "--bs=1m"]
            argv += [f"--size={self.image_size}", "--direct=1", "--ioengine=libaio", "--iodepth=8"]
            self.runner.run([*argv, "--output-format=terse"], timeout_s=3600)

    def image(self, stack: Stack) -> str:
        img = str(self.file_image) if stack.backend == "file" else self.lvm_image
        if img is None:
            raise StackError(f"no {stack.backend} image in this workspace")
        return img

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
            need += data + dmcache.metadata_bytes(data, CACHE_BLOCK)
    return need


def _quiet(runner: Runner, argv: list[str]) -> None:
    runner.run(argv, check=False)


def drop_page_cache(runner: Runner) -> None:
    """Empty the kernel's page cache, so buffered paths start cold too."""
    runner.run(["sync"])
    runner.run(["sysctl", "-q", "-w", "vm.drop_caches=3"], check=False)


# -- layers -------------------------------------------------------------------------------------


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(f"skycache.{module}")
    except ImportError:
        raise StackError(f"this stack needs skycache.{module}, which is not available") from None


def _iscsi_layer(ws: Workspace, built: BuiltStack, stack: Stack, origin: str) -> str:
    """Export ``origin`` from the repository with LIO (ACL for this node, CHAP) and attach it with
    open-iscsi over 127.0.0.1; returns the LUN's block device."""
    lio = _optional("lio")
    iscsi = _optional("iscsi")
    r = ws.runner
    kind = "block"
    if stack.backend == "file":
        # LIO's fileio backstore wants an explicit size for a regular file (rtslib-fb: "Path is to a
        # file, size needed") and the library's lio does not pass one: serve the file image through a
        # loop device instead (the usual way to export an image file as a block LUN).
        loop = loopdev.attach(r, origin)
        built.push("loop device", lambda: loopdev.detach(r, loop))
        built.layers.append(f"loop device {loop} over the image file")
        origin = loop
    if stack.repo_delay_ms:
        if stack.backend == "file":
            raise StackError("repo_delay_ms (dm-delay) needs backend = 'lvm'")
        # Seek-like latency of the repository disk (design.md §5): dm-delay under the export.
        ms = max(1, round(stack.repo_delay_ms))
        delay_line = dm.render_table([dm.delay(origin, dm.device_sectors(r, origin), ms)])
        origin = _dm(ws, built, f"{PREFIX}-delay", delay_line, "repository disk delay")
        built.layers.append(f"dm-delay {ms} ms on the repository disk")
    spec = lio.ExportSpec(
        repo=REPO_NAME,
        image=stack.backend,
        device=origin,
        kind=kind,
        initiators=(iscsi.initiator_name(),),
        listen=(PORTAL_ADDR, PORTAL_PORT),
    )
    lio.plan_add(r, spec).apply(r)
    built.push("iSCSI export", lambda: lio.plan_remove(r, REPO_NAME, stack.backend, missing_ok=True).apply(r))
    chap = lio.load_chap(spec.iqn)
    portal = iscsi.parse_portal(f"{PORTAL_ADDR}:{PORTAL_PORT}")
    device: str = iscsi.attach(r, spec.iqn, portal, chap=(chap.userid, chap.password) if chap else None)
    built.push("iSCSI session", lambda: iscsi.detach(r, spec.iqn))
    built.layers.append(f"LIO {kind} export, open-iscsi session on {portal} -> {device}")
    return device


def _zero_head(runner: Runner, device: str, nbytes: int = 2**20) -> None:
    # dm-cache and dm-writecache format their metadata only when its first block is zero: a fresh LV
    # on reused extents may hold the previous repetition's superblock (which would be a warm cache).
    runner.run(
        ["dd", "if=/dev/zero", f"of={device}", f"bs={nbytes}", "count=1", "oflag=direct", "status=none"]
    )


def _lv(ws: Workspace, built: BuiltStack, name: str, size: int) -> str:
    r = ws.runner
    lvm.create_lv(r, NODE_VG, name, size)
    built.push(f"LV {name}", lambda: lvm.remove_lv(r, NODE_VG, name, missing_ok=True))
    path = f"/dev/{NODE_VG}/{name}"
    _zero_head(r, path)
    return path


def _dm(ws: Workspace, built: BuiltStack, name: str, table: str, what: str, *, flush: bool = False) -> str:
    r = ws.runner
    dm.create(r, name, table)

    def undo() -> None:
        if flush:
            # Never drop unwritten data (design.md §7): write it back to the repository first.
            cachestatus.flush(r, name, timeout_s=900)
        dm.remove(r, name)

    built.push(what, undo)
    return dm.path(name)


def _read_cache(ws: Workspace, built: BuiltStack, stack: Stack, origin: str) -> str:
    assert stack.read_cache is not None
    data = parse_positive_size(stack.read_cache)
    meta = _lv(ws, built, f"{PREFIX}-rc-meta", dmcache.metadata_bytes(data, CACHE_BLOCK))
    cdata = _lv(ws, built, f"{PREFIX}-rc-data", data)
    table = dmcache.CacheTable(meta, cdata, origin, dm.device_sectors(ws.runner, origin), CACHE_BLOCK)
    name = f"{PREFIX}-rc"
    path = _dm(ws, built, name, table.line(), "read cache")
    built.caches.append(("read", name))
    built.layers.append(
        f"read cache dm-cache writethrough smq {stack.read_cache}, {CACHE_BLOCK // 1024}K blocks"
    )
    return path


def _write_cache(ws: Workspace, built: BuiltStack, stack: Stack, origin: str) -> str:
    assert stack.write_cache is not None
    data = parse_positive_size(stack.write_cache)
    name = f"{PREFIX}-wc"
    sectors = dm.device_sectors(ws.runner, origin)
    if stack.engine == "dmcache":
        meta = _lv(ws, built, f"{PREFIX}-wc-meta", dmcache.metadata_bytes(data, CACHE_BLOCK))
        cdata = _lv(ws, built, f"{PREFIX}-wc-data", data)
        line = dmcache.CacheTable(meta, cdata, origin, sectors, CACHE_BLOCK, mode="writeback").line()
        desc = f"write-back cache dm-cache writeback smq {stack.write_cache}"
    else:
        cdata = _lv(ws, built, f"{PREFIX}-wc-data", data)
        line = writecache.WritecacheTable(origin, cdata, sectors).line()
        desc = f"write-back cache dm-writecache {stack.write_cache}"
    path = _dm(ws, built, name, line, "write-back cache", flush=True)
    built.caches.append(("write", name))
    built.layers.append(desc)
    return path


def build(ws: Workspace, stack: Stack) -> BuiltStack:
    """Build ``stack`` on the workspace's image; on failure undo what was built and raise."""
    if stack.cow != "none":
        return _vm_disk(ws, stack)
    image = ws.image(stack)
    built = BuiltStack(stack, image, [f"{stack.backend} image {image} ({ws.image_size // 2**20} MiB)"])
    try:
        device = image
        if stack.transport == "iscsi":
            device = _iscsi_layer(ws, built, stack, device)
        if stack.read_cache is not None:
            device = _read_cache(ws, built, stack, device)
        if stack.write_cache is not None:
            device = _write_cache(ws, built, stack, device)
        built.device = device
    except BaseException:
        errors = built.teardown()
        if errors:
            log.warning("undo after a failed build left errors: %s", "; ".join(errors))
        raise
    return built


def _vm_disk(ws: Workspace, stack: Stack) -> BuiltStack:
    """The reference VM-disk stack (design.md §2) through skycache.storage.vmdisk: a fresh VM per repetition,
    deleted afterwards without sync (the benchmark's writes are thrown away, deliberately)."""
    vmdisk = _optional("vmdisk")
    if stack.read_cache is not None:
        # vmdisk's read cache is persistent per base and node: it cannot start cold per repetition.
        raise StackError("cow stacks with read_cache are not supported by the bench driver yet")
    r = ws.runner
    ws.vm_counter += 1
    vm_id = f"bench{ws.vm_counter}"
    req = vmdisk.CloneRequest(
        vm_id=vm_id,
        base_ref=f"{COW_REPO}/{COW_BASE}",
        portal=f"{PORTAL_ADDR}:{PORTAL_PORT}",
        cow=stack.cow,
        write_cache=parse_positive_size(stack.write_cache) if stack.write_cache else 0,
        write_engine=stack.engine or "writecache",
        cache_vg=COW_NODE if ws.cow_node else "",
    )
    built = BuiltStack(stack, "", [f"VM disk {vm_id} (skycache.storage.vmdisk): {stack.describe()}"])
    try:
        built.device = str(vmdisk.clone(r, req))
        built.push(f"VM disk {vm_id}", lambda: vmdisk.plan_delete(r, vm_id).apply(r))
        if stack.write_cache:
            built.caches.append(("write", f"skycache-wb-{vm_id}"))
    except BaseException:
        with contextlib.suppress(SkycacheError):
            vmdisk.plan_delete(r, vm_id).apply(r)
        raise
    return built


def cache_sample(runner: Runner, built: BuiltStack) -> list[dict[str, Any]]:
    """The caches' counters now: hits, misses and unwritten (dirty) blocks per cache."""
    out = []
    for role, name in built.caches:
        with contextlib.suppress(SkycacheError, CommandError):
            st = cachestatus.status(runner, name)
            if isinstance(st, cachestatus.CacheStatus):
                hits = st.read_hits + st.write_hits
                misses = st.read_misses + st.write_misses
            else:
                hits, misses = st.total_blocks - st.free_blocks, 0
            out.append(
                {"t_wall": time.time(), "role": role, "hits": hits, "misses": misses, "dirty": st.unwritten}
            )
    return out
