"""iSCSI export through LIO: names, specs, and the actions that make and remove exports.

One export = one target ``<iqn_prefix>:<repo>.<image>`` with TPG 1, a portal, LUN 0 and one ACL per
allowed initiator. Block devices (LVs) are exported through a dm-linear shim
``skycache-exp-<repo>.<image>``: LIO's block backstore opens its device exclusively, so exporting the
LV directly would keep repository-side dm devices (materialising a snapshot) from opening it
(docs/storage.md, "Exports"). Files use the fileio backstore.

configfs is driven by rtslib-fb on the repository host itself, through ``skycache-agent``'s ``lio-*``
operations run by the runner (:mod:`skycache.agent`): a plan lists them like any other command, and a
runner with a remote target manages a remote repository's exports.

CHAP is on by default: a secret generated when the export is planned, handed to the agent on stdin and
stored 0600 in the repository's state directory, never in argv, logs or ``--json`` output. The owned
part of the LIO configuration is saved after every change (``lio-save``) and restored by
:func:`restore_action` after a reboot.
"""

from __future__ import annotations

import json
import re
import secrets as pysecrets
from dataclasses import dataclass, field
from typing import Any

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, SkycacheError
from skycache.numbers import portal_port
from skycache.ownership import NAME_PREFIX, iqn_prefix, is_owned_iqn
from skycache.plan import Action, Command
from skycache.runner import AGENT, Runner, Secret
from skycache.storage.kernel import dm

CHAP_USER = "skycache"
# A repository serves the nodes of a testbed: listen on every address unless told otherwise.
DEFAULT_LISTEN = ("0.0.0.0", 3260)  # noqa: S104
SAVE_FILE = "lio.json"


class LioError(SkycacheError):
    pass


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


def shim_of_iqn(iqn: str) -> str:
    return f"{NAME_PREFIX}exp-{iqn.split(':', 1)[1]}"


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` (port 3260 by default) for portals; refuses anything else by name."""
    if not text.isprintable() or any(c.isspace() for c in text):  # would reach node records, configfs
        raise InvalidInput(f"portal {text!r} has a blank or a control character")
    addr, sep, port_text = text.rpartition(":")
    if not sep:
        addr, port_text = text, "3260"
    if not addr or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", addr):
        raise InvalidInput(f"portal {text!r} is not ADDR[:PORT]")
    return addr, portal_port(text, port_text)


# -- CHAP secrets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chap:
    userid: str
    password: str = field(repr=False)


def secret_path(iqn: str) -> str:
    return str(state.secrets_dir() / (iqn.replace(":", "_") + ".chap"))


def load_chap(runner: Runner, iqn: str) -> Chap | None:
    """The export's CHAP credentials from the state directory of the runner's host."""
    data = state.read_json(runner, secret_path(iqn))
    if not isinstance(data, dict) or "password" not in data:
        return None
    return Chap(str(data.get("userid", CHAP_USER)), str(data["password"]))


def new_chap() -> Chap:
    # 24 hex characters: within the 12..16-byte minimum of some initiators and LIO's 255 limit.
    return Chap(CHAP_USER, pysecrets.token_hex(12))


# -- records -----------------------------------------------------------------------------------------


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
    # Seek-like latency of the repository disk (docs/lab.md, "Emulating the testbed"): the shim is a
    # dm-delay of this many milliseconds instead of a dm-linear. Block exports only.
    delay_ms: int = 0

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
    luns: int = 1
    enabled: bool = True

    @property
    def complete(self) -> bool:
        """A target a killed process left half-made has no LUN or is not enabled."""
        return self.luns > 0 and self.enabled and bool(self.storage_object)

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


@dataclass(frozen=True)
class LioState:
    exports: tuple[Export, ...]
    backstores: tuple[tuple[str, str], ...]  # (plugin, name) of every skycache-* backstore

    def find(self, iqn: str) -> Export | None:
        return next((e for e in self.exports if e.iqn == iqn), None)


def parse_list(text: str) -> LioState:
    """The JSON ``skycache-agent lio-list`` prints."""
    try:
        data = json.loads(text)
        exports = tuple(
            Export(
                str(e["iqn"]),
                str(e["storage_object"]),
                str(e["plugin"]),
                str(e["device"]),
                tuple(str(i) for i in e["initiators"]),
                bool(e["read_only"]),
                bool(e["chap"]),
                tuple(str(p) for p in e["portals"]),
                int(e.get("luns", 1)),
                bool(e.get("enabled", True)),
            )
            for e in data["exports"]
        )
        backstores = tuple((str(b["plugin"]), str(b["name"])) for b in data["backstores"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LioError(f"skycache-agent lio-list printed no export list ({exc})") from None
    return LioState(exports, backstores)


def read_state(runner: Runner) -> LioState:
    """Owned targets and backstores of the runner's host, from configfs (through the agent)."""
    done = runner.query([AGENT, "lio-list", "--prefix", iqn_prefix()], check=False)
    if done.returncode != 0:
        raise LioError(done.stderr.strip() or f"skycache-agent lio-list failed with exit {done.returncode}")
    return parse_list(done.stdout)


def list_exports(runner: Runner) -> list[Export]:
    return [e for e in read_state(runner).exports if is_owned_iqn(e.iqn)]


def find_export(runner: Runner, iqn: str) -> Export | None:
    return read_state(runner).find(iqn)


# -- actions -----------------------------------------------------------------------------------------


def check_initiator(iqn: str) -> str:
    """An initiator name for an ACL: an iSCSI name (iqn., eui., naa.) without blanks or control characters."""
    if not (iqn.startswith("iqn.") or iqn.startswith("eui.") or iqn.startswith("naa.")) or any(
        c.isspace() or not c.isprintable() for c in iqn
    ):
        raise InvalidInput(f"initiator {iqn!r} is not an iSCSI name (iqn.YYYY-MM.domain:...)")
    return iqn


def save_command() -> Command:
    """Save the owned LIO configuration into the repository's state directory (0600)."""
    return Command((AGENT, "lio-save", str(state.state_dir() / SAVE_FILE), "--prefix", iqn_prefix()))


def save_action() -> Action:
    return Action("save the LIO configuration", (save_command(),))


def delete_target_command(iqn: str, backstore: str | None) -> Command:
    return Command((AGENT, "lio-delete", iqn, *(["--backstore", backstore] if backstore else [])))


def add_actions(
    lio_state: LioState, spec: ExportSpec, device_sectors: int, chap: Chap | None = None
) -> list[Action]:
    """The export: shim (block only), backstore + target + TPG + portal + LUN + ACLs, CHAP secret, save.

    ``device_sectors`` is the size of a block device (the shim maps all of it); ignored for files.
    ``chap``: the credentials to set (a plan that also logs in passes the ones it will use); a new
    secret when CHAP is on and none is given.
    """
    for ini in spec.initiators:
        check_initiator(ini)
    if not spec.initiators:
        raise InvalidInput("an export needs at least one initiator for its ACL")
    if lio_state.find(spec.iqn) is not None:
        raise Busy(f"{spec.repo}/{spec.image} is already exported as {spec.iqn}")
    so_name = storage_object_name(spec.repo, spec.image)
    if any(name == so_name for _, name in lio_state.backstores):
        raise Busy(f"LIO backstore {so_name} already exists (teardown --all removes leftovers)")
    actions: list[Action] = []
    backing = spec.device
    if spec.delay_ms < 0:
        raise InvalidInput(f"export delay {spec.delay_ms} ms must not be negative")
    if spec.kind == "block":
        shim = shim_name(spec.repo, spec.image)
        if spec.delay_ms:
            table = [dm.delay(spec.device, device_sectors, spec.delay_ms)]
            what = f"dm-delay shim ({spec.delay_ms} ms)"
        else:
            table = [dm.linear(spec.device, device_sectors)]
            what = "dm-linear shim"
        actions.append(
            Action(
                f"create {what} {shim} over {spec.device}",
                (Command(tuple(dm.create_argv(shim, table, readonly=spec.read_only))),),
                (dm.remove_command(shim),),
            )
        )
        backing = dm.path(shim)
    elif spec.kind != "fileio":
        raise InvalidInput(f"backstore kind {spec.kind!r} is not block or fileio")
    elif spec.delay_ms:
        raise InvalidInput("an export delay needs a block image (LVM repository), not a file")
    if not spec.chap:
        chap = None
    elif chap is None:
        chap = new_chap()
    request = {
        "iqn": spec.iqn,
        "storage_object": so_name,
        "kind": spec.kind,
        "device": backing,
        "read_only": spec.read_only,
        "initiators": list(spec.initiators),
        "listen": list(spec.listen),
        "chap": {"userid": chap.userid, "password": chap.password} if chap else None,
    }
    chap_note = "CHAP on (secret stored 0600)" if spec.chap else "CHAP off"
    actions.append(
        Action(
            f"create LIO {spec.kind} backstore and target {spec.iqn} on "
            f"{spec.listen[0]}:{spec.listen[1]} for {', '.join(spec.initiators)}; {chap_note}"
            + ("; read-only" if spec.read_only else ""),
            (Command((AGENT, "lio-create"), stdin=Secret(json.dumps(request))),),
            (delete_target_command(spec.iqn, so_name),),
        )
    )
    if chap is not None:
        record = json.dumps({"iqn": spec.iqn, "userid": chap.userid, "password": chap.password})
        actions.append(
            Action(
                f"store the CHAP secret of {spec.iqn} (0600)",
                (state.write_command(secret_path(spec.iqn), Secret(record)),),
                (Command(("rm", "-f", "--", secret_path(spec.iqn))),),
            )
        )
    actions.append(save_action())
    return actions


def remove_actions(
    lio_state: LioState, dm_names: set[str], iqn: str, *, with_save: bool = True
) -> list[Action]:
    """Remove the export of ``iqn``: target and backstore, shim, secret; then save."""
    if not is_owned_iqn(iqn):
        raise InvalidInput(f"target {iqn!r} was not created by skycache (IQN prefix {iqn_prefix()!r})")
    exp = lio_state.find(iqn)
    shim = shim_of_iqn(iqn)
    so_name = NAME_PREFIX + iqn.split(":", 1)[1]
    has_so = any(name == so_name for _, name in lio_state.backstores)
    actions: list[Action] = []
    if exp is not None or has_so:
        actions.append(
            Action(
                f"delete LIO target {iqn}" + (f" and backstore {so_name}" if has_so else ""),
                (delete_target_command(iqn, so_name if has_so else None),),
            )
        )
    if shim in dm_names:
        actions.append(Action(f"remove dm shim {shim}", (dm.remove_command(shim),)))
    if actions:
        actions.append(
            Action(f"forget the CHAP secret of {iqn}", (Command(("rm", "-f", "--", secret_path(iqn))),))
        )
        if with_save:
            actions.append(save_action())
    return actions


def require_export(lio_state: LioState, dm_names: set[str], repo: str, image: str) -> str:
    iqn = target_iqn(repo, image)
    if lio_state.find(iqn) is None and shim_name(repo, image) not in dm_names:
        raise NotFound(f"{repo}/{image} is not exported")
    return iqn


def restore_action() -> Action:
    """Bring the saved owned exports back (after a reboot; shims must be up first)."""
    path = str(state.state_dir() / SAVE_FILE)
    return Action(
        f"restore the saved LIO configuration from {path}",
        (Command((AGENT, "lio-restore", path, "--prefix", iqn_prefix())),),
    )
