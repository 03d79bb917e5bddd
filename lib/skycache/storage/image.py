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
from pathlib import PurePosixPath
from typing import Any

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, NotOwned
from skycache.ownership import LVM_TAG, NAME_PREFIX, check_name
from skycache.plan import Action, Command, Plan
from skycache.runner import Runner, Secret
from skycache.storage.kernel import dm, iscsi, lio, lvm
from skycache.storage.repository import Repository, get_repo, list_repos
from skycache.storage.view import View
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


def image_file(directory: str | PurePosixPath, name: str) -> PurePosixPath:
    return PurePosixPath(directory) / f"{NAME_PREFIX}{name}.img"


def sidecar(directory: str | PurePosixPath, name: str) -> PurePosixPath:
    return PurePosixPath(directory) / f"{NAME_PREFIX}{name}.json"


# -- listing -----------------------------------------------------------------------------------------


def _exported_iqns(view: View) -> set[str]:
    try:
        return {e.iqn for e in view.lio.exports}
    except lio.LioError:
        return set()


def _lvm_images(view: View, repo: Repository, exported: set[str]) -> list[Image]:
    lvs = [lv for lv in view.lvs_of(repo.location) if not lv.hidden]
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


def _file_stats(runner: Runner, files: list[str]) -> dict[str, tuple[int, int]]:
    """path -> (size, permission bits) of files on the runner's host (one ``stat`` for all)."""
    if not files:
        return {}
    done = runner.query(["stat", "-c", "%s|%a|%n", "--", *files], check=False)
    out: dict[str, tuple[int, int]] = {}
    for line in done.stdout.splitlines():
        size, mode, name = line.split("|", 2)
        out[name] = (int(size), int(mode, 8))
    return out


def _file_images(view: View, repo: Repository, exported: set[str]) -> list[Image]:
    runner = view.runner
    d = PurePosixPath(repo.location)
    entries = runner.list_dir(d) or []
    names = [
        e[len(NAME_PREFIX) : -len(".img")]
        for e in entries
        if e.startswith(NAME_PREFIX) and e.endswith(".img")
    ]
    metas: dict[str, dict[str, Any]] = {}
    for name in names:
        data = state.read_json(runner, sidecar(d, name), {}) if f"{NAME_PREFIX}{name}.json" in entries else {}
        metas[name] = data if isinstance(data, dict) else {}
    stats = _file_stats(runner, [str(image_file(d, n)) for n in names])
    images = []
    for name in names:
        f = str(image_file(d, name))
        size, mode = stats.get(f, (0, 0))
        images.append(
            Image(
                repo=repo.name,
                name=name,
                backend="file",
                size=size,
                read_only=not (mode & 0o222),
                origin=str(metas[name].get("origin", "")),
                cow=str(metas[name].get("cow", "")),
                path=f,
                exported=lio.target_iqn(repo.name, name) in exported,
                clones=tuple(sorted(n for n in names if metas[n].get("origin") == name)),
            )
        )
    return images


def list_images(view: View, repo: str | None = None) -> list[Image]:
    repos = [get_repo(view, repo)] if repo else list_repos(view)
    exported = _exported_iqns(view)
    out: list[Image] = []
    for r in repos:
        out += _lvm_images(view, r, exported) if r.backend == "lvm" else _file_images(view, r, exported)
    return out


def get_image(view: View, ref: str) -> Image:
    repo_name, name = split_ref(ref)
    repo = get_repo(view, repo_name)
    for img in list_images(view, repo.name):
        if img.name == name:
            return img
    lv = view.lv(repo.location, name) if repo.backend == "lvm" else None
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
    if not runner.exists(source) or runner.list_dir(source) is not None:
        raise InvalidInput(f"source file {source!r} does not exist")
    # qemu-img would wait forever on a FIFO and read a device or /proc file: a regular file only
    # (stat on the target, which is where the file is).
    kind = runner.query(["stat", "-L", "-c", "%F", "--", source], check=False).stdout.strip()
    if kind not in ("regular file", "regular empty file"):
        raise InvalidInput(f"source file {source!r} is {kind or 'unreadable'}, not a regular file")
    resolved = runner.resolve(source) or source
    if resolved.startswith(("/proc/", "/sys/")):
        raise InvalidInput(f"source file {source!r} is under /proc or /sys, not an image file")
    done = runner.query(["qemu-img", "info", "--output=json", source], check=False)
    try:
        info = json.loads(done.stdout)
        fmt, size = str(info.get("format", "")), int(info["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(f"source file {source!r} is not an image qemu-img can read") from None
    if fmt not in ("raw", "qcow2"):
        raise InvalidInput(f"source file {source!r} is {fmt or 'of unknown format'}, not raw or qcow2")
    return SourceInfo(source, fmt, size)


def plan_create(view: View, ref: str, *, size: int | None = None, source: str | None = None) -> Plan:
    repo_name, name = split_ref(ref)
    repo = get_repo(view, repo_name)
    if size is None and source is None:
        raise InvalidInput("give --size SIZE or --from FILE")
    if size is not None and size <= 0:
        raise InvalidInput(f"size {size} is not positive")
    src = source_info(view.runner, source) if source else None
    if src and size is not None and size < src.virtual_size:
        raise InvalidInput(
            f"size {format_size(size)} is smaller than {source!r} ({format_size(src.virtual_size)})"
        )
    want = size if size is not None else (src.virtual_size if src else 0)
    if any(i.name == name for i in list_images(view, repo_name)):
        raise Busy(f"image {ref!r} already exists")
    if want > repo.free:
        raise InvalidInput(
            f"size {format_size(want)} is larger than the free space of {repo_name!r} "
            f"({format_size(repo.free)})"
        )
    plan = Plan(f"create image {ref}")
    if repo.backend == "lvm":
        vg = repo.location
        if view.lv(vg, name) is not None:
            raise Busy(f"image {ref!r} already exists")
        plan.add(lvm.lvcreate_action(view, vg, name, want, what="image LV"))
        if src:
            dev = f"/dev/{vg}/{name}"
            argv = ["qemu-img", "convert", "-n", "-f", src.format, "-O", "raw", src.path, dev]
            plan.add(Action.command(f"write {src.path} ({src.format}) into {dev}", argv, timeout_s=3600))
        return plan
    f = str(image_file(repo.location, name))
    if src:
        plan.add(
            Action.command(
                f"convert {src.path} ({src.format}) into sparse raw {f}",
                ["qemu-img", "convert", "-f", src.format, "-O", "raw", src.path, f],
                ["rm", "-f", "--", f],
                timeout_s=3600,
            )
        )
        if want > src.virtual_size:
            plan.add(Action.command(f"grow {f} to {format_size(want)}", ["truncate", "-s", str(want), f]))
    else:
        plan.add(
            Action.command(
                f"create sparse raw {f} ({format_size(want)})",
                ["truncate", "-s", str(want), f],
                ["rm", "-f", "--", f],
            )
        )
    return plan


# -- read-only bases ---------------------------------------------------------------------------------


def read_only_action(view: View, img: Image) -> Action | None:
    """Make a base read-only before anything is cloned from it (None when it already is)."""
    if img.read_only:
        return None
    if img.backend == "lvm":
        return lvm.read_only_action(view, img.path.split("/")[2], img.name, what="base")
    return Action.command(
        f"make base {img.ref} read-only", ["chmod", "a-w", img.path], ["chmod", "u+w", img.path]
    )


# -- clone -------------------------------------------------------------------------------------------


def plan_clone_image(
    view: View, base_ref: str, new_ref: str, cow: str, *, cow_size: int | None = None
) -> Plan:
    """An image clone in the base's repository: ``thin`` and ``snapshot`` are O(1), ``copy`` is O(size)."""
    if cow not in COW_KINDS:
        raise InvalidInput(f"--cow {cow!r} is not one of {', '.join(COW_KINDS)}")
    base = get_image(view, base_ref)
    repo_name, new = split_ref(new_ref)
    if repo_name != base.repo:
        raise InvalidInput(f"clone {new_ref!r} must be in the repository of its base ({base.repo!r})")
    repo = get_repo(view, repo_name)
    if any(i.name == new for i in list_images(view, repo_name)):
        raise Busy(f"image {new_ref!r} already exists")
    plan = Plan(f"clone {base_ref} -> {new_ref} ({cow})")
    ro = read_only_action(view, base)
    if ro:
        plan.add(ro)
    if repo.backend == "file":
        if cow != "copy":
            raise InvalidInput(f"file images can only be cloned with --cow copy, not {cow!r}")
        d = repo.location
        f, meta = str(image_file(d, new)), sidecar(d, new)
        if base.size > repo.free:
            raise InvalidInput(f"base {base_ref} ({format_size(base.size)}) does not fit in {repo_name!r}")
        plan.add(
            Action.command(
                f"copy {base.path} to {f}",
                ["cp", "--sparse=always", "--", base.path, f],
                ["rm", "-f", "--", f],
            )
        )
        plan.add(Action.command(f"make {f} writable", ["chmod", "0644", f]))
        plan.add(
            Action(
                f"record origin in {meta}",
                (state.write_command(meta, json.dumps({"origin": base.name, "cow": "copy"}) + "\n"),),
                (Command(("rm", "-f", "--", str(meta))),),
            )
        )
        return plan
    vg = repo.location
    if base.cow == "snapshot":
        raise InvalidInput(f"{base_ref} is a classic snapshot; LVM cannot clone a snapshot (use a copy)")
    if cow == "thin":
        if view.lv(vg, POOL) is None:
            pool_size = max(MIN_POOL, (repo.free // 4) // (4 << 20) * (4 << 20))
            if pool_size > repo.free:
                raise InvalidInput(
                    f"no room for a thin pool in {repo_name!r} ({format_size(repo.free)} free)"
                )
            plan.add(lvm.thin_pool_action(view, vg, POOL, pool_size))
        plan.extend(lvm.thin_snapshot_actions(view, vg, POOL, base.name, new))
    elif cow == "snapshot":
        size = cow_size or max(MIN_COW, base.size // 4)
        size = -(-size // (4 << 20)) * (4 << 20)
        if size > repo.free:
            raise InvalidInput(f"COW size {format_size(size)} is larger than the free space of {repo_name!r}")
        plan.add(lvm.snapshot_action(view, vg, base.name, new, size))
    else:
        if base.size > repo.free:
            raise InvalidInput(f"base {base_ref} ({format_size(base.size)}) does not fit in {repo_name!r}")
        plan.add(lvm.lvcreate_action(view, vg, new, base.size, tags=[FROM_TAG + base.name], what="image LV"))
        plan.add(
            Action.command(
                f"copy {base.path} to /dev/{vg}/{new}",
                [COPY_ARGV[0], f"if={base.path}", f"of=/dev/{vg}/{new}", *COPY_ARGV[1:]],
                timeout_s=3600,
            )
        )
    return plan


# -- delete ------------------------------------------------------------------------------------------


def plan_delete(view: View, ref: str, *, force: bool = False) -> Plan:
    """Delete an image; refused while clones or an export use it, unless ``force`` (they go first)."""
    img = get_image(view, ref)
    images = {i.name: i for i in list_images(view, img.repo)}
    plan = Plan(f"delete image {ref}")
    _add_delete(view, plan, img, images, force, set())
    return plan


def _add_delete(
    view: View, plan: Plan, img: Image, images: dict[str, Image], force: bool, seen: set[str]
) -> None:
    if img.name in seen:
        return
    seen.add(img.name)
    if img.clones and not force:
        raise Busy(f"image {img.ref} has clones ({', '.join(img.clones)}); delete them first or use --force")
    if img.exported and not force:
        raise Busy(f"image {img.ref} is exported; remove the export first or use --force")
    for clone in img.clones:
        _add_delete(view, plan, images[clone], images, force, seen)
    if img.exported:
        plan.extend(lio.remove_actions(view.lio, set(view.dm_info), lio.target_iqn(img.repo, img.name)))
    elif img.opened:
        raise Busy(f"image {img.ref} is open (in use on this host)")
    if img.backend == "lvm":
        plan.add(lvm.lvremove_action(view, img.path.split("/")[2], img.name, what="image LV"))
    else:
        d = PurePosixPath(img.path).parent
        plan.add(
            Action.command(f"remove {img.path}", ["rm", "-f", "--", img.path, str(sidecar(d, img.name))])
        )


# -- export / attach ---------------------------------------------------------------------------------


def export_spec(
    view: View,
    img: Image,
    *,
    initiators: list[str],
    read_only: bool = False,
    chap: bool = True,
    listen: tuple[str, int] = lio.DEFAULT_LISTEN,
    delay_ms: int = 0,
) -> lio.ExportSpec:
    return lio.ExportSpec(
        repo=img.repo,
        image=img.name,
        device=img.path,
        kind="block" if img.backend == "lvm" else "fileio",
        initiators=tuple(initiators or [view.initiator_name]),
        # A read-only base can only be exported read-only (the LV / file refuses writes anyway).
        read_only=read_only or img.read_only,
        chap=chap,
        listen=listen,
        delay_ms=delay_ms,
    )


def export_actions(view: View, img: Image, spec: lio.ExportSpec) -> list[Action]:
    return lio.add_actions(view.lio, spec, img.size // 512)


def plan_export(
    view: View,
    ref: str,
    *,
    initiators: list[str],
    read_only: bool = False,
    chap: bool = True,
    listen: tuple[str, int] = lio.DEFAULT_LISTEN,
    delay_ms: int = 0,
) -> Plan:
    for ini in initiators:  # before reading LVM or LIO: a bad name costs nothing
        lio.check_initiator(ini)
    img = get_image(view, ref)
    spec = export_spec(
        view, img, initiators=initiators, read_only=read_only, chap=chap, listen=listen, delay_ms=delay_ms
    )
    return Plan(f"export {ref} as {spec.iqn}", export_actions(view, img, spec))


def plan_unexport(view: View, ref: str) -> Plan:
    repo, name = split_ref(ref)
    iqn = lio.require_export(view.lio, set(view.dm_info), repo, name)
    return Plan(f"remove export {iqn}", lio.remove_actions(view.lio, set(view.dm_info), iqn))


def attach_actions(
    view: View,
    ref: str,
    portal: iscsi.Portal,
    *,
    iface: str | None = None,
    timeout_s: float = 60,
    chap_from: Runner | None = None,
) -> tuple[list[Action], str]:
    """Log in to the export of ``ref`` at ``portal``; the actions and the LUN's device link.

    The CHAP secret comes from the state directory of ``chap_from``'s host (the repository's, which
    made it), else of the attaching host. Read through a runner it travels as that command's output
    (``cat`` over ssh), and reaches the login as the agent's stdin: never an argv.
    """
    repo, name = split_ref(ref)
    iqn = lio.target_iqn(repo, name)
    chap = lio.load_chap(chap_from if chap_from is not None else view.runner, iqn)
    if chap is None and chap_from is not None:
        # Asked for the repository's secret: logging in without one would only be refused (exit 24).
        raise NotFound(f"no CHAP secret for {iqn} in {lio.secret_path(iqn)} on {chap_from.target.name}")
    secret = (chap.userid, Secret(chap.password)) if chap else None
    actions = iscsi.attach_actions(
        view.node_records, iqn, portal, chap=secret, iface=iface, timeout_s=timeout_s
    )
    return actions, str(iscsi.by_path(portal, iqn))


def plan_attach(
    view: View,
    ref: str,
    portal: iscsi.Portal,
    *,
    iface: str | None = None,
    timeout_s: float = 60,
    chap_from: Runner | None = None,
) -> tuple[Plan, str]:
    repo, name = split_ref(ref)
    iqn = lio.target_iqn(repo, name)
    session = view.session(iqn)
    if session is not None and session.disks:
        raise Busy(f"{ref} is already attached (/dev/{session.disks[0]})")
    if iqn not in iscsi.offered_targets(view.runner, portal, iface=iface):
        raise NotFound(f"portal {portal} does not offer {ref} ({iqn}): export it first")
    actions, device = attach_actions(view, ref, portal, iface=iface, timeout_s=timeout_s, chap_from=chap_from)
    return Plan(f"attach {ref} from {portal}", actions), device


def plan_detach(view: View, ref: str, *, force: bool = False) -> Plan:
    repo, name = split_ref(ref)
    iqn = lio.target_iqn(repo, name)
    return Plan(f"detach {ref}", iscsi.detach_actions(view.runner, view.sessions, iqn, force=force))


def plan_restore_exports(view: View) -> Plan:
    """Bring the saved exports back after a reboot: the LVs' shims first, then LIO's configuration.

    A block export's backstore sits on the shim ``skycache-exp-<repo>.<image>`` over the image LV
    ``/dev/<repo>/<image>`` (repositories are named like their VG), so the shims are rebuilt from LVM.
    """
    saved = state.read_json(view.runner, state.state_dir() / lio.SAVE_FILE)
    if not isinstance(saved, dict):
        raise NotFound(f"no saved export configuration at {state.state_dir() / lio.SAVE_FILE}")
    plan = Plan("restore the saved exports")
    for so in saved.get("lio", {}).get("storage_objects", []):
        dev = str(so.get("dev", ""))
        shim = PurePosixPath(dev).name
        if so.get("plugin") != "block" or not shim.startswith(NAME_PREFIX + "exp-") or view.dm_exists(shim):
            continue
        repo, _, name = shim[len(NAME_PREFIX + "exp-") :].partition(".")
        lv = lvm.require_owned_lv_in(view, repo, name)
        if not lv.active:
            plan.add(
                Action.command(f"activate {repo}/{name}", lvm.activate_argv(repo, name), retry=lvm.UDEV_RETRY)
            )
        table = [dm.linear(f"/dev/{repo}/{name}", lv.size // 512)]
        plan.add(dm.create_action(shim, table, "export shim", readonly=bool(so.get("readonly"))))
    plan.add(lio.restore_action())
    return plan
