"""Images in a repository: create (empty or from a raw/qcow2 file), list, delete, clone, export, attach.

LVM images are tagged LVs in the repository VG; file images are ``skycache-NAME.img`` (raw, sparse)
in the repository directory, with a ``skycache-NAME.json`` sidecar naming their origin. A base is
made read-only before it is cloned (``lvchange -p r`` / mode 0444), so a clone can never change it.

Clones: ``thin`` = dm-thin snapshot with the base as external read-only origin (pool
``skycache-pool`` in the VG, made on first use); ``snapshot`` = classic LVM snapshot (dm-snapshot
with a COW store); ``copy`` = a full copy (the only kind for file images). thin and snapshot are O(1)
in the size of the base; copy is O(size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skycache.errors import Busy, InvalidInput, NotFound, NotOwned
from skycache.ownership import LVM_TAG, NAME_PREFIX, check_name
from skycache.plan import Action, Plan, legacy_action
from skycache.runner import Runner, render
from skycache.storage.kernel import iscsi, lio, lvm
from skycache.storage.repository import Repository, get_repo, list_repos
from skycache.units import format_size

POOL = "skycache-pool"
FROM_TAG = "skycache-from."  # + base name: the origin of a copy clone
COW_KINDS = ("thin", "snapshot", "copy")
LVM_RESERVED_PREFIXES = ("snapshot", "pvmove")
LVM_RESERVED_PARTS = (
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_wcorig", "_mlog", "_mimage", "_pmspare",
    "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin",
)  # fmt: skip
MIN_POOL = 256 << 20
MIN_COW = 64 << 20
COPY_ARGV = ("dd", "bs=4M", "iflag=direct", "oflag=direct", "conv=fsync", "status=none")


@dataclass(frozen=True)
class Image:
    repo: str
    name: str
    backend: str
    size: int
    read_only: bool
    origin: str
    cow: str  # "thin" | "snapshot" | "copy" | "" (not a clone)
    path: str  # block device or file
    exported: bool
    clones: tuple[str, ...]
    opened: bool = False

    @property
    def ref(self) -> str:
        return f"{self.repo}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.ref,
            "backend": self.backend,
            "size": self.size,
            "read_only": self.read_only,
            "origin": self.origin,
            "cow": self.cow,
            "clones": list(self.clones),
            "exported": self.exported,
            "path": self.path,
        }


def split_ref(ref: str) -> tuple[str, str]:
    """``REPO/NAME`` -> (repo, name); names the bad value when it is not one."""
    repo, sep, name = ref.partition("/")
    if not sep or not repo or not name or "/" in name:
        raise InvalidInput(f"image {ref!r} is not REPO/NAME")
    check_name(repo, what="repository name")
    check_image_name(name)
    return repo, name


def check_image_name(name: str) -> str:
    check_name(name, what="image name")
    if name.startswith(NAME_PREFIX):
        raise InvalidInput(f"image name {name!r} is invalid: names starting {NAME_PREFIX!r} are reserved")
    # LVM reserves these for its own sub-LVs (lvm(8), "Names starting "snapshot" are reserved").
    if name.startswith(LVM_RESERVED_PREFIXES) or any(part in name for part in LVM_RESERVED_PARTS):
        raise InvalidInput(
            f"image name {name!r} is invalid: LVM reserves it (snapshot*, pvmove*, *_tdata...)"
        )
    return name


def image_file(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{NAME_PREFIX}{name}.img"


def sidecar(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{NAME_PREFIX}{name}.json"


# -- listing -----------------------------------------------------------------------------------------


def _exported_keys() -> set[str]:
    try:
        return {e.iqn for e in lio.list_exports()}
    except lio.LioError:
        return set()


def _lvm_images(runner: Runner, repo: Repository, exported: set[str]) -> list[Image]:
    lvs = [lv for lv in lvm.list_lvs(runner, repo.location) if not lv.hidden]
    by_name = {lv.name: lv for lv in lvs}
    images: list[Image] = []
    origins: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for lv in lvs:
        copy_of = next((t[len(FROM_TAG) :] for t in lv.tags if t.startswith(FROM_TAG)), "")
        if lv.segtype == "thin" and lv.origin:
            origins[lv.name], kinds[lv.name] = lv.origin, "thin"
        elif lv.attr.startswith("s") and lv.origin:
            origins[lv.name], kinds[lv.name] = lv.origin, "snapshot"
        elif copy_of:
            origins[lv.name], kinds[lv.name] = copy_of, "copy"
    for lv in lvs:
        if not lv.owned or lv.name.startswith(NAME_PREFIX) or lv.is_thin_pool:
            continue
        origin = origins.get(lv.name, "")
        size = lv.size
        if kinds.get(lv.name) == "snapshot" and origin in by_name:
            size = by_name[origin].size  # lvs reports a classic snapshot's COW size as its size
        images.append(
            Image(
                repo=repo.name,
                name=lv.name,
                backend="lvm",
                size=size,
                read_only=lv.read_only,
                origin=origin,
                cow=kinds.get(lv.name, ""),
                path=f"/dev/{lv.vg}/{lv.name}",
                exported=lio.target_iqn(repo.name, lv.name) in exported,
                clones=tuple(sorted(n for n, o in origins.items() if o == lv.name)),
                opened=lv.opened,
            )
        )
    return images


def _file_images(repo: Repository, exported: set[str]) -> list[Image]:
    d = Path(repo.location)
    metas: dict[str, dict[str, Any]] = {}
    names = []
    for f in sorted(d.glob(f"{NAME_PREFIX}*.img")):
        name = f.name[len(NAME_PREFIX) : -len(".img")]
        names.append(name)
        try:
            metas[name] = json.loads(sidecar(d, name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            metas[name] = {}
    images = []
    for name in names:
        f = image_file(d, name)
        st = f.stat()
        images.append(
            Image(
                repo=repo.name,
                name=name,
                backend="file",
                size=st.st_size,
                read_only=not (st.st_mode & 0o222),
                origin=str(metas[name].get("origin", "")),
                cow=str(metas[name].get("cow", "")),
                path=str(f),
                exported=lio.target_iqn(repo.name, name) in exported,
                clones=tuple(sorted(n for n in names if metas[n].get("origin") == name)),
            )
        )
    return images


def list_images(runner: Runner, repo: str | None = None) -> list[Image]:
    repos = [get_repo(runner, repo)] if repo else list_repos(runner)
    exported = _exported_keys()
    out: list[Image] = []
    for r in repos:
        out += _lvm_images(runner, r, exported) if r.backend == "lvm" else _file_images(r, exported)
    return out


def get_image(runner: Runner, ref: str) -> Image:
    repo_name, name = split_ref(ref)
    repo = get_repo(runner, repo_name)
    for img in list_images(runner, repo.name):
        if img.name == name:
            return img
    lv = lvm.find_lv(runner, repo.location, name) if repo.backend == "lvm" else None
    if lv is not None and LVM_TAG not in lv.tags:
        raise NotOwned(f"logical volume {repo.location}/{name} was not created by skycache")
    raise NotFound(f"image {ref!r} does not exist")


# -- create ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceInfo:
    path: str
    format: str
    virtual_size: int


def source_info(runner: Runner, source: str) -> SourceInfo:
    p = Path(source)
    if not p.is_file():
        raise InvalidInput(f"source file {source!r} does not exist")
    done = runner.query(["qemu-img", "info", "--output=json", str(p)])
    info = json.loads(done.stdout)
    fmt = str(info.get("format", ""))
    if fmt not in ("raw", "qcow2"):
        raise InvalidInput(f"source file {source!r} is {fmt or 'of unknown format'}, not raw or qcow2")
    return SourceInfo(str(p), fmt, int(info["virtual-size"]))


def plan_create(runner: Runner, ref: str, *, size: int | None = None, source: str | None = None) -> Plan:
    repo_name, name = split_ref(ref)
    repo = get_repo(runner, repo_name)
    if size is None and source is None:
        raise InvalidInput("give --size SIZE or --from FILE")
    if size is not None and size <= 0:
        raise InvalidInput(f"size {size} is not positive")
    src = source_info(runner, source) if source else None
    if src and size is not None and size < src.virtual_size:
        raise InvalidInput(
            f"size {format_size(size)} is smaller than {source!r} ({format_size(src.virtual_size)})"
        )
    want = size if size is not None else (src.virtual_size if src else 0)
    plan = Plan(f"create image {ref}")
    if repo.backend == "lvm":
        vg = repo.location
        if lvm.find_lv(runner, vg, name) is not None:
            raise Busy(f"image {ref!r} already exists")
        if want > repo.free:
            raise InvalidInput(
                f"size {format_size(want)} is larger than the free space of {repo_name!r} "
                f"({format_size(repo.free)})"
            )
        dev = f"/dev/{vg}/{name}"
        plan.add(
            legacy_action(
                f"create LV {vg}/{name} ({format_size(want)})",
                lambda r: lvm.create_lv(r, vg, name, want),
                lambda r: lvm.remove_lv(r, vg, name, missing_ok=True),
                (render(lvm.lvcreate_argv(vg, name, want)),),
            )
        )
        if src:
            argv = ["qemu-img", "convert", "-n", "-f", src.format, "-O", "raw", src.path, dev]
            plan.add(Action.command(f"write {src.path} ({src.format}) into {dev}", argv))
    else:
        f = image_file(repo.location, name)
        if f.exists():
            raise Busy(f"image {ref!r} already exists")
        if want > repo.free:
            raise InvalidInput(
                f"size {format_size(want)} is larger than the free space of {repo_name!r} "
                f"({format_size(repo.free)})"
            )
        if src:
            plan.add(
                Action.command(
                    f"convert {src.path} ({src.format}) into sparse raw {f}",
                    ["qemu-img", "convert", "-f", src.format, "-O", "raw", src.path, str(f)],
                    ["rm", "-f", "--", str(f)],
                )
            )
            if want > src.virtual_size:
                plan.add(
                    Action.command(f"grow {f} to {format_size(want)}", ["truncate", "-s", str(want), str(f)])
                )
        else:
            plan.add(
                Action.command(
                    f"create sparse raw {f} ({format_size(want)})",
                    ["truncate", "-s", str(want), str(f)],
                    ["rm", "-f", "--", str(f)],
                )
            )
    return plan


# -- read-only bases ---------------------------------------------------------------------------------


def _read_only_action(img: Image) -> Action | None:
    if img.read_only:
        return None
    if img.backend == "lvm":
        vg, name = img.path.split("/")[2], img.name
        return legacy_action(
            f"make base {img.ref} read-only",
            lambda r: lvm.set_read_only(r, vg, name, True),
            lambda r: lvm.set_read_only(r, vg, name, False),
            (render(lvm.permission_argv(vg, name, read_only=True)),),
        )
    return Action.command(
        f"make base {img.ref} read-only", ["chmod", "a-w", img.path], ["chmod", "u+w", img.path]
    )


# -- clone -------------------------------------------------------------------------------------------


def plan_clone(runner: Runner, base_ref: str, new_ref: str, cow: str, *, cow_size: int | None = None) -> Plan:
    if cow not in COW_KINDS:
        raise InvalidInput(f"--cow {cow!r} is not one of {', '.join(COW_KINDS)}")
    base = get_image(runner, base_ref)
    repo_name, new = split_ref(new_ref)
    if repo_name != base.repo:
        raise InvalidInput(f"clone {new_ref!r} must be in the repository of its base ({base.repo!r})")
    repo = get_repo(runner, repo_name)
    if any(i.name == new for i in list_images(runner, repo_name)):
        raise Busy(f"image {new_ref!r} already exists")
    plan = Plan(f"clone {base_ref} -> {new_ref} ({cow})")
    ro = _read_only_action(base)
    if ro:
        plan.add(ro)
    if repo.backend == "file":
        if cow != "copy":
            raise InvalidInput(f"file images can only be cloned with --cow copy, not {cow!r}")
        d = repo.location
        f, meta = image_file(d, new), sidecar(d, new)
        if base.size > repo.free:
            raise InvalidInput(f"base {base_ref} ({format_size(base.size)}) does not fit in {repo_name!r}")
        plan.add(
            Action.command(
                f"copy {base.path} to {f}",
                ["cp", "--sparse=always", "--", base.path, str(f)],
                ["rm", "-f", "--", str(f)],
            )
        )
        plan.add(Action.command(f"make {f} writable", ["chmod", "0644", str(f)]))

        def write_meta(r: Runner) -> None:
            meta.write_text(json.dumps({"origin": base.name, "cow": "copy"}) + "\n")

        plan.add(
            legacy_action(f"record origin in {meta}", write_meta, lambda r: meta.unlink(missing_ok=True))
        )
        return plan
    vg = repo.location
    if base.cow == "snapshot":
        raise InvalidInput(f"{base_ref} is a classic snapshot; LVM cannot clone a snapshot (use a copy)")
    if cow == "thin":
        if lvm.find_lv(runner, vg, POOL) is None:
            pool_size = max(MIN_POOL, (repo.free // 4) // (4 << 20) * (4 << 20))
            if pool_size > repo.free:
                raise InvalidInput(
                    f"no room for a thin pool in {repo_name!r} ({format_size(repo.free)} free)"
                )
            plan.add(
                legacy_action(
                    f"create thin pool {vg}/{POOL} ({format_size(pool_size)})",
                    lambda r: lvm.create_thin_pool(r, vg, POOL, pool_size),
                    lambda r: lvm.remove_lv(r, vg, POOL, missing_ok=True),
                    (render(lvm.thin_pool_argv(vg, POOL, pool_size)),),
                )
            )
        plan.add(
            legacy_action(
                f"thin snapshot {vg}/{new} of {vg}/{base.name} (external origin)",
                lambda r: lvm.snapshot_thin(r, vg, POOL, base.name, new),
                lambda r: lvm.remove_lv(r, vg, new, missing_ok=True),
                (render(lvm.thin_snapshot_argv(vg, POOL, base.name, new)),),
            )
        )
    elif cow == "snapshot":
        size = cow_size or max(MIN_COW, base.size // 4)
        size = -(-size // (4 << 20)) * (4 << 20)
        if size > repo.free:
            raise InvalidInput(f"COW size {format_size(size)} is larger than the free space of {repo_name!r}")
        plan.add(
            legacy_action(
                f"LVM snapshot {vg}/{new} of {vg}/{base.name} (COW store {format_size(size)})",
                lambda r: lvm.snapshot_classic(r, vg, base.name, new, size),
                lambda r: lvm.remove_lv(r, vg, new, missing_ok=True),
                (render(lvm.snapshot_argv(vg, base.name, new, size)),),
            )
        )
    else:
        if base.size > repo.free:
            raise InvalidInput(f"base {base_ref} ({format_size(base.size)}) does not fit in {repo_name!r}")
        extra = ["--addtag", FROM_TAG + base.name]
        plan.add(
            legacy_action(
                f"create LV {vg}/{new} ({format_size(base.size)})",
                lambda r: lvm.create_lv(r, vg, new, base.size, extra=extra),
                lambda r: lvm.remove_lv(r, vg, new, missing_ok=True),
                (render(lvm.lvcreate_argv(vg, new, base.size, extra=extra)),),
            )
        )
        plan.add(
            Action.command(
                f"copy {base.path} to /dev/{vg}/{new}",
                [COPY_ARGV[0], f"if={base.path}", f"of=/dev/{vg}/{new}", *COPY_ARGV[1:]],
            )
        )
    return plan


# -- delete ------------------------------------------------------------------------------------------


def plan_delete(runner: Runner, ref: str, *, force: bool = False) -> Plan:
    """Delete an image; refused while clones or an export use it, unless ``force`` (they go first)."""
    img = get_image(runner, ref)
    images = {i.name: i for i in list_images(runner, img.repo)}
    plan = Plan(f"delete image {ref}")
    _add_delete(runner, plan, img, images, force, set())
    return plan


def _add_delete(
    runner: Runner, plan: Plan, img: Image, images: dict[str, Image], force: bool, seen: set[str]
) -> None:
    if img.name in seen:
        return
    seen.add(img.name)
    if img.clones and not force:
        raise Busy(f"image {img.ref} has clones ({', '.join(img.clones)}); delete them first or use --force")
    if img.exported and not force:
        raise Busy(f"image {img.ref} is exported; remove the export first or use --force")
    for clone in img.clones:
        _add_delete(runner, plan, images[clone], images, force, seen)
    if img.exported:
        plan.extend(lio.plan_remove(runner, img.repo, img.name).actions)
    elif img.opened:
        raise Busy(f"image {img.ref} is open (in use on this host)")
    if img.backend == "lvm":
        vg = img.path.split("/")[2]
        plan.add(
            legacy_action(
                f"remove LV {vg}/{img.name}",
                lambda r: lvm.remove_lv(r, vg, img.name, missing_ok=True),
                shown=(render(lvm.lvremove_argv(vg, img.name)),),
            )
        )
    else:
        d = Path(img.path).parent
        plan.add(
            Action.command(f"remove {img.path}", ["rm", "-f", "--", img.path, str(sidecar(d, img.name))])
        )


# -- export / attach ---------------------------------------------------------------------------------


def plan_export(
    runner: Runner,
    ref: str,
    *,
    initiators: list[str],
    read_only: bool = False,
    chap: bool = True,
    listen: tuple[str, int] = lio.DEFAULT_LISTEN,
) -> Plan:
    img = get_image(runner, ref)
    spec = lio.ExportSpec(
        repo=img.repo,
        image=img.name,
        device=img.path,
        kind="block" if img.backend == "lvm" else "fileio",
        initiators=tuple(initiators or [iscsi.initiator_name()]),
        # A read-only base can only be exported read-only (the LV / file refuses writes anyway).
        read_only=read_only or img.read_only,
        chap=chap,
        listen=listen,
    )
    return lio.plan_add(runner, spec)


def plan_unexport(runner: Runner, ref: str) -> Plan:
    repo, name = split_ref(ref)
    return lio.plan_remove(runner, repo, name)


def attach(
    runner: Runner, ref: str, portal: iscsi.Portal, *, iface: str | None = None, timeout_s: float = 60
) -> str:
    """Log in to the export of ``ref`` at ``portal`` (CHAP secret from the state dir); device path."""
    repo, name = split_ref(ref)
    iqn = lio.target_iqn(repo, name)
    chap = lio.load_chap(iqn)
    return iscsi.attach(
        runner,
        iqn,
        portal,
        chap=(chap.userid, chap.password) if chap else None,
        iface=iface,
        timeout_s=timeout_s,
    )


def detach(runner: Runner, ref: str, *, force: bool = False) -> list[str]:
    repo, name = split_ref(ref)
    return iscsi.detach(runner, lio.target_iqn(repo, name), force=force)
