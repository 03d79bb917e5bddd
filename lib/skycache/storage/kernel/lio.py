"""iSCSI export through LIO, with rtslib-fb (targetcli's library; configfs underneath).

One export = one target ``<iqn_prefix>:<repo>.<image>`` with TPG 1, a portal, LUN 0 and one ACL per
allowed initiator. Block devices (LVs) are exported through a dm-linear shim
``skycache-exp-<repo>.<image>``: LIO's block backstore opens its device exclusively, so exporting the
LV directly would keep repository-side dm devices (materialising a snapshot) from opening it
(design.md §2). Files use the fileio backstore.

CHAP is on by default: a generated secret per target, stored 0600 under the state directory
(:mod:`skycache.state`), never logged or printed unless asked for. The owned part of the LIO
configuration is saved atomically after every change and restored by :func:`restore`.
"""

from __future__ import annotations

import contextlib
import secrets as pysecrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, NotOwned, SkycacheError
from skycache.ownership import NAME_PREFIX, iqn_prefix, is_owned_iqn
from skycache.plan import Plan, legacy_action
from skycache.runner import Runner
from skycache.storage.kernel import dm

CHAP_USER = "skycache"
# A repository serves the nodes of a testbed: listen on every address unless told otherwise.
DEFAULT_LISTEN = ("0.0.0.0", 3260)  # noqa: S104
SAVE_FILE = "lio.json"
SAVE_VERSION = 1


class LioError(SkycacheError):
    pass


@contextlib.contextmanager
def _rtslib() -> Iterator[Any]:
    """Import rtslib lazily (its import touches configfs) and turn its errors into one line."""
    try:
        with warnings.catch_warnings():
            # "Cannot set dbroot ... Target devices have already been registered": harmless.
            warnings.simplefilter("ignore")
            import rtslib_fb
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise LioError("rtslib-fb is not installed (pip install rtslib-fb)") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield rtslib_fb
    except rtslib_fb.RTSLibError as exc:
        raise LioError(f"LIO: {exc}") from exc
    except OSError as exc:
        raise LioError(f"LIO (configfs): {exc}") from exc


# -- names -------------------------------------------------------------------------------------------


def export_key(repo: str, image: str) -> str:
    """``repo.image``: repository names contain no '.', so the split is unambiguous."""
    if "." in repo:
        raise InvalidInput(f"repository name {repo!r} must not contain '.'")
    return f"{repo}.{image}"


def target_iqn(repo: str, image: str) -> str:
    return f"{iqn_prefix()}:{export_key(repo, image)}"


def storage_object_name(repo: str, image: str) -> str:
    return f"{NAME_PREFIX}{export_key(repo, image)}"


def shim_name(repo: str, image: str) -> str:
    return f"{NAME_PREFIX}exp-{export_key(repo, image)}"


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` (port 3260 by default) for portals; refuses anything else by name."""
    addr, sep, port_text = text.rpartition(":")
    if not sep:
        addr, port_text = text, "3260"
    if not addr or not all(c.isalnum() or c in ".-" for c in addr):
        raise InvalidInput(f"portal {text!r} is not ADDR[:PORT]")
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidInput(f"portal {text!r} has an invalid port {port_text!r}") from None
    if not 0 < port < 65536:
        raise InvalidInput(f"portal {text!r} has an invalid port {port}")
    return addr, port


# -- CHAP secrets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chap:
    userid: str
    password: str = field(repr=False)


def secret_path(iqn: str) -> Path:
    return state.secrets_dir() / (iqn.replace(":", "_") + ".chap")


def load_chap(iqn: str) -> Chap | None:
    data = state.read_json(secret_path(iqn), None)
    if not data:
        return None
    return Chap(str(data["userid"]), str(data["password"]))


def new_chap() -> Chap:
    # 24 hex characters: within the 12..16-byte minimum of some initiators and LIO's 255 limit.
    return Chap(CHAP_USER, pysecrets.token_hex(12))


def store_chap(iqn: str, chap: Chap) -> None:
    state.write_json_private(secret_path(iqn), {"iqn": iqn, "userid": chap.userid, "password": chap.password})


# -- the export spec and plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSpec:
    repo: str
    image: str
    device: str  # block device (LV path) or image file
    kind: str  # "block" | "fileio"
    initiators: tuple[str, ...]
    read_only: bool = False
    chap: bool = True
    listen: tuple[str, int] = DEFAULT_LISTEN

    @property
    def iqn(self) -> str:
        return target_iqn(self.repo, self.image)


@dataclass(frozen=True)
class Export:
    iqn: str
    storage_object: str
    plugin: str
    device: str
    initiators: tuple[str, ...]
    read_only: bool
    chap: bool
    portals: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """For --json: no secret in here, ever."""
        return {
            "iqn": self.iqn,
            "storage_object": self.storage_object,
            "backstore": self.plugin,
            "device": self.device,
            "initiators": list(self.initiators),
            "read_only": self.read_only,
            "chap": self.chap,
            "portals": list(self.portals),
        }


def _check_initiator(iqn: str) -> str:
    if not (iqn.startswith("iqn.") or iqn.startswith("eui.") or iqn.startswith("naa.")) or any(
        c.isspace() for c in iqn
    ):
        raise InvalidInput(f"initiator {iqn!r} is not an iSCSI name (iqn.YYYY-MM.domain:...)")
    return iqn


def plan_add(runner: Runner, spec: ExportSpec) -> Plan:
    """Plan the export: shim (block only), backstore, target + TPG + portal + LUN + ACLs, save."""
    for ini in spec.initiators:
        _check_initiator(ini)
    if not spec.initiators:
        raise InvalidInput("an export needs at least one initiator for its ACL")
    if find_export(spec.iqn) is not None:
        raise Busy(f"{spec.repo}/{spec.image} is already exported as {spec.iqn}")
    plan = Plan(f"export {spec.repo}/{spec.image} as {spec.iqn}")
    backing = spec.device
    if spec.kind == "block":
        shim = shim_name(spec.repo, spec.image)
        sectors = dm.device_sectors(runner, spec.device)
        table = [dm.linear(spec.device, sectors)]
        plan.add(
            legacy_action(
                f"create dm-linear shim {shim} over {spec.device}",
                lambda r: dm.create(r, shim, table, readonly=spec.read_only),
                lambda r: dm.remove(r, shim),
                (dm.render_create(shim, table, readonly=spec.read_only),),
            )
        )
        backing = dm.path(shim)
    elif spec.kind != "fileio":
        raise InvalidInput(f"backstore kind {spec.kind!r} is not block or fileio")
    chap_note = "CHAP on (secret stored 0600)" if spec.chap else "CHAP off"
    plan.add(
        legacy_action(
            f"create LIO {spec.kind} backstore and target {spec.iqn} on "
            f"{spec.listen[0]}:{spec.listen[1]} for {', '.join(spec.initiators)}; {chap_note}"
            + ("; read-only" if spec.read_only else ""),
            lambda r: _create_target(spec, backing),
            lambda r: _delete_target(spec.iqn, storage_object_name(spec.repo, spec.image)),
        )
    )
    plan.add(legacy_action("save the LIO configuration", lambda r: save(r)))
    return plan


def _create_target(spec: ExportSpec, backing: str) -> None:
    so_name = storage_object_name(spec.repo, spec.image)
    chap = new_chap() if spec.chap else None
    with _rtslib() as rts:
        if spec.kind == "block":
            so = rts.BlockStorageObject(so_name, dev=backing, readonly=spec.read_only)
        else:
            # rtslib needs the size of a file backstore (it cannot tell it from a path).
            size = Path(backing).stat().st_size
            so = rts.FileIOStorageObject(so_name, dev=backing, size=size, write_back=False)
        try:
            fabric = rts.FabricModule("iscsi")
            target = rts.Target(fabric, spec.iqn, mode="create")
            tpg = rts.TPG(target, 1, mode="create")
            rts.NetworkPortal(tpg, spec.listen[0], spec.listen[1], mode="create")
            lun = rts.LUN(tpg, 0, so)
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("demo_mode_write_protect", "1")
            tpg.set_attribute("authentication", "1" if chap else "0")
            for ini in spec.initiators:
                acl = rts.NodeACL(tpg, ini, mode="create")
                if chap:
                    acl.chap_userid = chap.userid
                    acl.chap_password = chap.password
                rts.MappedLUN(acl, 0, lun, write_protect=spec.read_only)
            tpg.enable = True
        except BaseException:
            with contextlib.suppress(Exception):
                rts.Target(rts.FabricModule("iscsi"), spec.iqn, mode="lookup").delete()
            with contextlib.suppress(Exception):
                so.delete()
            raise
    if chap:
        store_chap(spec.iqn, chap)


def _delete_target(iqn: str, so_name: str | None) -> None:
    with _rtslib() as rts:
        for target in rts.FabricModule("iscsi").targets:
            if target.wwn == iqn:
                target.delete()
        if so_name:
            for so in rts.RTSRoot().storage_objects:
                if so.name == so_name:
                    so.delete()
    secret_path(iqn).unlink(missing_ok=True)


def plan_remove(runner: Runner, repo: str, image: str, *, missing_ok: bool = False) -> Plan:
    iqn = target_iqn(repo, image)
    exp = find_export(iqn)
    shim = shim_name(repo, image)
    plan = Plan(f"remove export {iqn}")
    if exp is None and not dm.exists(runner, shim):
        if missing_ok:
            return plan
        raise NotFound(f"{repo}/{image} is not exported")
    if exp is not None:
        plan.add(
            legacy_action(
                f"delete LIO target {iqn} and backstore {exp.storage_object}",
                lambda r: _delete_target(iqn, exp.storage_object),
            )
        )
    if dm.exists(runner, shim):
        plan.add(
            legacy_action(
                f"remove dm shim {shim}", lambda r: dm.remove(r, shim), shown=(f"dmsetup remove {shim}",)
            )
        )
    plan.add(legacy_action("save the LIO configuration", lambda r: save(r)))
    return plan


def remove_iqn(runner: Runner, iqn: str) -> None:
    """Remove an owned target by IQN, its backstore, shim and secret (teardown, crash leftovers)."""
    if not is_owned_iqn(iqn):
        raise NotOwned(f"target {iqn!r} was not created by skycache (IQN prefix {iqn_prefix()!r})")
    exp = find_export(iqn)
    _delete_target(iqn, exp.storage_object if exp else None)
    key = iqn.split(":", 1)[1]
    shim = f"{NAME_PREFIX}exp-{key}"
    dm.remove(runner, shim)
    save(runner)


# -- listing -----------------------------------------------------------------------------------------


def list_exports() -> list[Export]:
    """Owned targets, from configfs."""
    out: list[Export] = []
    with _rtslib() as rts:
        try:
            targets = list(rts.FabricModule("iscsi").targets)
        except rts.RTSLibError:
            return []  # iscsi fabric not loaded: nothing exported
        for target in targets:
            if not is_owned_iqn(target.wwn):
                continue
            so_name, plugin, device, ro = "", "", "", False
            initiators: list[str] = []
            auth = False
            portals: list[str] = []
            for tpg in target.tpgs:
                auth = auth or tpg.get_attribute("authentication") == "1"
                portals += [f"{p.ip_address}:{p.port}" for p in tpg.network_portals]
                for lun in tpg.luns:
                    so = lun.storage_object
                    so_name, plugin, device = so.name, so.plugin, so.udev_path
                    if plugin == "block":
                        ro = ro or bool(so.readonly)
                for acl in tpg.node_acls:
                    initiators.append(acl.node_wwn)
                    ro = ro or any(m.write_protect for m in acl.mapped_luns)
            out.append(
                Export(target.wwn, so_name, plugin, device, tuple(initiators), ro, auth, tuple(portals))
            )
    return out


def find_export(iqn: str) -> Export | None:
    for exp in list_exports():
        if exp.iqn == iqn:
            return exp
    return None


def owned_storage_objects() -> list[tuple[str, str]]:
    """(plugin, name) of every backstore named ``skycache-*`` (exported or left over by a crash)."""
    with _rtslib() as rts:
        return [
            (so.plugin, so.name) for so in rts.RTSRoot().storage_objects if so.name.startswith(NAME_PREFIX)
        ]


def remove_storage_object(name: str) -> None:
    if not name.startswith(NAME_PREFIX):
        raise NotOwned(f"backstore {name!r} was not created by skycache")
    with _rtslib() as rts:
        for so in rts.RTSRoot().storage_objects:
            if so.name == name:
                so.delete()


# -- save and restore --------------------------------------------------------------------------------


def save_path() -> Path:
    return state.state_dir() / SAVE_FILE


def owned_config(dump: dict[str, Any]) -> dict[str, Any]:
    """The owned part of an rtslib ``RTSRoot.dump()``: targets under our IQN prefix, skycache-* backstores."""
    return {
        "storage_objects": [
            so for so in dump.get("storage_objects", []) if so["name"].startswith(NAME_PREFIX)
        ],
        "targets": [t for t in dump.get("targets", []) if is_owned_iqn(t.get("wwn", ""))],
    }


def save(runner: Runner) -> Path:
    """Write the owned LIO config and the shim tables atomically (0600: it holds CHAP secrets)."""
    with _rtslib() as rts:
        lio = owned_config(rts.RTSRoot().dump())
    shims: dict[str, dict[str, Any]] = {}
    for so in lio["storage_objects"]:
        dev = str(so.get("dev", ""))
        name = Path(dev).name
        if (
            so.get("plugin") == "block"
            and dev.startswith(dm.MAPPER_DIR)
            and name.startswith(NAME_PREFIX + "exp-")
        ):
            segs = dm.table(runner, name) if dm.exists(runner, name) else ()
            shims[name] = {
                "table": dm.render_table(segs) if segs else "",
                "readonly": bool(so.get("readonly")),
            }
    path = save_path()
    state.write_json_private(path, {"version": SAVE_VERSION, "lio": lio, "shims": shims})
    return path


def restore(runner: Runner) -> list[str]:
    """Recreate shims and owned targets from the saved config (after a reboot). Returns what was done."""
    data = state.read_json(save_path(), None)
    if not data:
        raise NotFound(f"no saved export configuration at {save_path()}")
    if data.get("version") != SAVE_VERSION:
        raise InvalidInput(
            f"saved export configuration {save_path()} has unknown version {data.get('version')!r}"
        )
    done: list[str] = []
    for name, shim in data.get("shims", {}).items():
        if not shim.get("table") or dm.exists(runner, name):
            continue
        for seg in shim["table"].splitlines():
            _activate_lv_path(runner, dm.parse_segment(seg).args[0])
        dm.create(runner, name, shim["table"], readonly=bool(shim.get("readonly")))
        done.append(f"shim {name}")
    lio = owned_config(data.get("lio", {}))
    with _rtslib() as rts:
        root = rts.RTSRoot()
        have_so = {so.name for so in root.storage_objects}
        have_t = {t.wwn for t in root.targets}
        config = {
            "storage_objects": [so for so in lio["storage_objects"] if so["name"] not in have_so],
            "targets": [t for t in lio["targets"] if t["wwn"] not in have_t],
        }
        if config["storage_objects"] or config["targets"]:
            errors = root.restore(config, clear_existing=False, abort_on_error=True)
            if errors:
                raise LioError(f"LIO restore: {errors[0]}")
        done += [f"target {t['wwn']}" for t in config["targets"]]
    return done


def _activate_lv_path(runner: Runner, device: str) -> None:
    """Shims point at /dev/VG/LV; after a reboot the LV may be inactive."""
    parts = Path(device).parts
    if Path(device).exists() or len(parts) != 4 or parts[1] != "dev":
        return
    runner.run(["lvchange", "-a", "y", "-K", f"{parts[2]}/{parts[3]}"])
