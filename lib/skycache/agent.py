"""``skycache-agent``: skycache's helper on the host it manages, for changes no standard tool makes.

The library changes a host only through commands its runner executes there, so that a plan can list
them and a remote host gets exactly what a local one gets. Most are standard tools (lvcreate, dmsetup,
iscsiadm); the few changes that have none are this program's operations:

- ``write-file PATH [--mode 0600]``: the content on stdin, written atomically (temp file, fsync,
  rename) and private from the first byte (the state directory's notes and CHAP secrets).
- ``set-write-cache DEVICE MODE``: a block device's ``queue/write_cache`` flag (sysfs), for a device
  given as a path (a udev link is fine) or as ``major:minor``.
- ``flush-device DEVICE``: an fsync of the device that reaches it even while it is marked "write
  through" (the flag is set to "write back" for the fsync and restored; kernel.blockqueue says why).
- ``lio-create``: an iSCSI export (backstore, target, TPG, portal, LUN, ACLs, CHAP), the spec as
  JSON on stdin (the CHAP secret travels there, never in argv); everything made is removed again
  when a step fails. ``lio-delete IQN [--backstore NAME]``, ``lio-remove-backstore NAME``.
- ``iscsi-node-auth IQN ADDR:PORT [--iface NAME]``: CHAP settings (``authmethod = CHAP``, username,
  password) written into open-iscsi's node record of that target and portal, the credentials as JSON
  on stdin. ``iscsiadm -o update -n node.session.auth.password -v SECRET`` would put the secret on a
  command line, which any local user reads in ``ps`` while it runs; this keeps it out of every argv.
- ``lio-list --prefix P`` (read-only): the exports under an IQN prefix and the ``skycache-*``
  backstores, as JSON. ``lio-save PATH --prefix P`` and ``lio-restore PATH --prefix P``: the owned
  part of the LIO configuration (rtslib's dump), to bring exports back after a reboot.

LIO is driven through rtslib-fb (configfs). Errors print one line on stderr and exit 1; usage errors
exit 2. The program imports nothing but the standard library and, for the ``lio-*`` operations,
rtslib-fb, so it starts fast wherever skycache is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

NAME_PREFIX = "skycache-"
WRITE_CACHE_MODES = ("write back", "write through")


class AgentError(Exception):
    """A failed operation: the message is the one line the agent prints."""


# -- files and sysfs ----------------------------------------------------------------------------------


def private_dirs(root: Path, directory: Path) -> None:
    """Make ``directory`` and the missing directories between ``root`` and it 0700 whatever the
    caller's umask, and refuse any of them (``root`` included) that other users may write: they
    could plant or swap the files written there (CHAP secrets, the registry of repositories)."""
    if directory != root and not directory.is_relative_to(root):
        raise AgentError(f"{directory} is not under the private directory {root}")
    chain = [root, *reversed([d for d in directory.parents if d.is_relative_to(root) and d != root])]
    chain += [directory] if directory != root else []
    root.parent.mkdir(parents=True, exist_ok=True)  # above the state directory: the system's own
    for d in chain:
        if not d.exists():
            with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
                d.mkdir(mode=0o700)
                d.chmod(0o700)  # mkdir's mode is masked by the umask; chmod is not
        if not d.is_dir():
            raise AgentError(f"{d} is not a directory")
        mode = d.stat().st_mode & 0o7777
        if mode & 0o022:
            raise AgentError(f"directory {d} is writable by others (mode {mode:04o}): chmod 0700 it")


def write_file(path: Path, data: str, mode: int, private_root: Path | None = None) -> None:
    """``private_root``: the state directory, when ``path`` is in it (see :func:`private_dirs`)."""
    if private_root is not None:
        private_dirs(private_root, path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_atomic(path, data, mode, path.with_name(f".{path.name}.tmp-{os.getpid()}"))


def _write_atomic(path: Path, data: str, mode: int, tmp: Path) -> None:
    """Write ``path`` whole: ``tmp`` (same filesystem) created with ``mode``, fsync, rename."""
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def kernel_name(device: str, sys_root: Path = Path("/sys")) -> str:
    """``sdb`` for ``/dev/sdb``, a link to it, or ``8:16``."""
    if ":" in device and not device.startswith("/"):
        link = sys_root / "dev" / "block" / device
        if not link.exists():
            raise AgentError(f"no block device {device!r}")
        return link.resolve().name
    p = Path(device)
    if not p.exists():
        raise AgentError(f"block device {device!r} does not exist")
    return p.resolve().name


def write_cache_attr(device: str, sys_root: Path = Path("/sys")) -> Path:
    attr = sys_root / "block" / kernel_name(device, sys_root) / "queue" / "write_cache"
    if not attr.exists():
        raise AgentError(f"{device!r} has no queue/write_cache attribute (not a whole disk?)")
    return attr


def set_write_cache(device: str, mode: str, sys_root: Path = Path("/sys")) -> None:
    if mode not in WRITE_CACHE_MODES:
        raise AgentError(f"write cache mode {mode!r} is not one of {', '.join(WRITE_CACHE_MODES)}")
    write_cache_attr(device, sys_root).write_text(mode + "\n")


def flush_device(device: str, sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> None:
    attr = write_cache_attr(device, sys_root)
    before = attr.read_text().strip()
    node = dev_root / kernel_name(device, sys_root)
    if before == "write through":
        attr.write_text("write back\n")
    try:
        fd = os.open(node, os.O_RDONLY)
        try:
            os.fsync(fd)  # the block layer sends a flush (SYNCHRONIZE CACHE over iSCSI)
        finally:
            os.close(fd)
    finally:
        if before == "write through":
            attr.write_text("write through\n")


# -- open-iscsi node records --------------------------------------------------------------------------
#
# What iscsiadm itself does (open-iscsi 2.1.8, usr/idbm.c, as Debian 12 builds it with ISCSI_DB_ROOT
# /etc/iscsi): a node record is a text file of "name = value" lines between "# BEGIN RECORD <version>"
# and "# END RECORD", rewritten whole under the lock /run/lock/iscsi/lock.write (idbm_lock: link(2)
# of lock to lock.write, retried every 10 ms). `-o new -p ADDR:PORT` without a TPGT writes the
# "old style" file nodes/IQN/ADDR,PORT; discovery writes nodes/IQN/ADDR,PORT,TPGT/IFACE. idbm_rec_read
# tries the old style first. Reading a record, each line is stripped, the name runs to the first
# blank or '=', the value is the rest (so a value cannot keep leading/trailing blanks or hold a line
# break), and setting node.session.auth.password also sets its (never written) _length.

ISCSI_NODES = Path("/etc/iscsi/nodes")
ISCSI_LOCK_DIR = Path("/run/lock/iscsi")
IDBM_LOCK_TIMEOUT_S = 30.0  # iscsiadm waits 3000 x 10 ms for the same lock
AUTH_VALUE_MAX = 255  # AUTH_STR_MAX_LEN (256) with its NUL
END_RECORD = "# END RECORD"
_RECORD_NAME = re.compile(r"^\s*([^\s=#][^\s=]*)\s*=")
_AUTH = "node.session.auth."


def check_auth_value(what: str, value: object) -> str:
    """A CHAP username or secret that open-iscsi's record reads back unchanged (never echoed)."""
    if not isinstance(value, str) or not value:
        raise AgentError(f"CHAP {what} must be a non-empty string")
    if len(value) > AUTH_VALUE_MAX:
        raise AgentError(f"CHAP {what} is longer than {AUTH_VALUE_MAX} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or value != value.strip():
        raise AgentError(f"CHAP {what} has a control character or leading/trailing blanks")
    return value


def set_record_auth(text: str, username: str, password: str) -> str:
    """The record with its CHAP lines set (in place, or before "# END RECORD"); other lines kept."""
    values = {
        f"{_AUTH}authmethod": "CHAP",
        f"{_AUTH}username": username,
        f"{_AUTH}password": password,
    }
    out: list[str] = []
    done: set[str] = set()
    for line in text.splitlines():
        m = _RECORD_NAME.match(line)
        name = m.group(1) if m else None
        if name == f"{_AUTH}password_length":
            continue  # a stale length read after the password would override the right one
        if name in values:
            if name not in done:
                out.append(f"{name} = {values[name]}")
                done.add(name)
            continue  # a duplicate: the last one read would win
        out.append(line)
    missing = [f"{k} = {v}" for k, v in values.items() if k not in done]
    end = next((i for i in range(len(out) - 1, -1, -1) if out[i].strip() == END_RECORD), len(out))
    out[end:end] = missing
    return "\n".join(out) + "\n"


def _record_iface(text: str) -> str:
    for line in text.splitlines():
        m = _RECORD_NAME.match(line)
        if m and m.group(1) == "iface.iscsi_ifacename":
            return line.split("=", 1)[1].strip()
    return "default"


def node_record_files(nodes: Path, iqn: str, portal: str, iface: str) -> list[Path]:
    """The record files iscsiadm reads for (iqn, portal, iface): old style, then new style."""
    addr, sep, port = portal.rpartition(":")
    if not sep or not addr or not port.isdigit() or "/" in addr:
        raise AgentError(f"portal {portal!r} is not ADDR:PORT")
    for what, name in (("target", iqn), ("iface", iface)):
        if not name or "/" in name or name.startswith("."):
            raise AgentError(f"{what} name {name!r} is not a node record name")
    base = nodes / iqn
    found: list[Path] = []
    old = base / f"{addr},{port}"
    if old.is_file() and not old.is_symlink() and _record_iface(old.read_text()) == iface:
        found.append(old)
    for d in sorted(base.glob(f"{glob_escape(addr)},{port},*")):
        rec = d / iface
        if d.is_dir() and rec.is_file() and not rec.is_symlink():
            found.append(rec)
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


@contextlib.contextmanager
def idbm_lock(lock_dir: Path, timeout_s: float = IDBM_LOCK_TIMEOUT_S) -> Iterator[None]:
    """iscsiadm's own lock on its node database (idbm_lock), so no iscsiadm rewrites a record
    between this read and write."""
    lock_dir.mkdir(mode=0o770, parents=True, exist_ok=True)
    lock, held = lock_dir / "lock", lock_dir / "lock.write"
    os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o666))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.link(lock, held)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise AgentError(f"iscsiadm's node database is locked ({held} for {timeout_s:g} s)") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        held.unlink(missing_ok=True)


def _replace(path: Path, data: str, tmp_dir: Path) -> None:
    """Write ``path`` whole (temp file, fsync, rename), 0600 from the first byte. The temp file lives in
    ``tmp_dir`` (the target's directory, same filesystem) under a name without a comma, which
    iscsiadm's directory walk skips (idbm_for_each_portal takes only "ADDR,PORT[,TPGT]" entries)."""
    _write_atomic(path, data, 0o600, tmp_dir / f".skycache-auth-{os.getpid()}")


def iscsi_node_auth(
    iqn: str,
    portal: str,
    iface: str,
    credentials: str,
    *,
    nodes: Path | None = None,
    lock_dir: Path | None = None,
) -> list[Path]:
    """Set CHAP in every node record of (iqn, portal, iface); ``credentials`` is the JSON from stdin."""
    try:
        creds = json.loads(credentials)
    except json.JSONDecodeError:
        raise AgentError("the credentials on stdin are not JSON") from None  # never echo them
    if not isinstance(creds, dict):
        raise AgentError("the credentials on stdin are not a JSON object")
    username = check_auth_value("username", creds.get("username"))
    password = check_auth_value("secret", creds.get("password"))
    root = nodes if nodes is not None else ISCSI_NODES
    with idbm_lock(lock_dir if lock_dir is not None else ISCSI_LOCK_DIR):
        records = node_record_files(root, iqn, portal, iface)
        if not records:
            raise AgentError(f"no node record of {iqn} at {portal} (iface {iface}) under {root}")
        for rec in records:
            _replace(rec, set_record_auth(rec.read_text(), username, password), root / iqn)
    return records


# -- LIO through rtslib-fb ---------------------------------------------------------------------------


@contextlib.contextmanager
def _rtslib() -> Iterator[Any]:
    with warnings.catch_warnings():
        # "Cannot set dbroot ... Target devices have already been registered": harmless.
        warnings.simplefilter("ignore")
        try:
            import rtslib_fb
        except ImportError as exc:
            raise AgentError("rtslib-fb is not installed (pip install rtslib-fb)") from exc
        try:
            yield rtslib_fb
        except rtslib_fb.RTSLibError as exc:
            raise AgentError(f"LIO: {exc}") from exc
        except OSError as exc:
            raise AgentError(f"LIO (configfs): {exc}") from exc


def lio_create(spec: dict[str, Any]) -> None:
    """Backstore, target, TPG 1, portal, LUN 0 and one ACL per initiator (CHAP when given)."""
    so_name, iqn, kind = str(spec["storage_object"]), str(spec["iqn"]), str(spec["kind"])
    read_only = bool(spec.get("read_only"))
    chap = spec.get("chap")
    with _rtslib() as rts:
        if kind == "block":
            so = rts.BlockStorageObject(so_name, dev=spec["device"], readonly=read_only)
        elif kind == "fileio":
            # rtslib needs the size of a file backstore (it cannot tell it from a path).
            size = Path(spec["device"]).stat().st_size
            so = rts.FileIOStorageObject(so_name, dev=spec["device"], size=size, write_back=False)
        else:
            raise AgentError(f"backstore kind {kind!r} is not block or fileio")
        try:
            target = rts.Target(rts.FabricModule("iscsi"), iqn, mode="create")
            tpg = rts.TPG(target, 1, mode="create")
            rts.NetworkPortal(tpg, spec["listen"][0], int(spec["listen"][1]), mode="create")
            lun = rts.LUN(tpg, 0, so)
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("demo_mode_write_protect", "1")
            tpg.set_attribute("authentication", "1" if chap else "0")
            for ini in spec["initiators"]:
                acl = rts.NodeACL(tpg, ini, mode="create")
                if chap:
                    acl.chap_userid = chap["userid"]
                    acl.chap_password = chap["password"]
                rts.MappedLUN(acl, 0, lun, write_protect=read_only)
            tpg.enable = True
        except BaseException:
            with contextlib.suppress(Exception):
                rts.Target(rts.FabricModule("iscsi"), iqn, mode="lookup").delete()
            with contextlib.suppress(Exception):
                so.delete()
            raise


def lio_delete(iqn: str, backstore: str | None) -> None:
    if backstore is not None and not backstore.startswith(NAME_PREFIX):
        raise AgentError(f"backstore {backstore!r} was not created by skycache")
    with _rtslib() as rts:
        for target in list(rts.FabricModule("iscsi").targets):
            if target.wwn == iqn:
                target.delete()
        if backstore:
            for so in list(rts.RTSRoot().storage_objects):
                if so.name == backstore:
                    so.delete()


def lio_list(prefix: str) -> dict[str, Any]:
    """Targets under ``prefix`` (with what the library needs to know of them) and owned backstores."""
    exports: list[dict[str, Any]] = []
    with _rtslib() as rts:
        try:
            targets = list(rts.FabricModule("iscsi").targets)
        except rts.RTSLibError:
            targets = []  # the iscsi fabric is not loaded: nothing is exported
        for target in targets:
            if not str(target.wwn).startswith(prefix + ":"):
                continue
            entry: dict[str, Any] = {
                "iqn": target.wwn,
                "storage_object": "",
                "plugin": "",
                "device": "",
                "initiators": [],
                "read_only": False,
                "chap": False,
                "portals": [],
                "luns": 0,
                "enabled": False,
            }
            for tpg in target.tpgs:
                entry["enabled"] = entry["enabled"] or bool(tpg.enable)
                entry["chap"] = entry["chap"] or tpg.get_attribute("authentication") == "1"
                entry["portals"] += [f"{p.ip_address}:{p.port}" for p in tpg.network_portals]
                for lun in tpg.luns:
                    entry["luns"] += 1
                    so = lun.storage_object
                    entry.update(storage_object=so.name, plugin=so.plugin, device=so.udev_path)
                    if so.plugin == "block":
                        entry["read_only"] = entry["read_only"] or bool(so.readonly)
                for acl in tpg.node_acls:
                    entry["initiators"].append(acl.node_wwn)
                    entry["read_only"] = entry["read_only"] or any(m.write_protect for m in acl.mapped_luns)
            exports.append(entry)
        backstores = [
            {"plugin": so.plugin, "name": so.name}
            for so in rts.RTSRoot().storage_objects
            if str(so.name).startswith(NAME_PREFIX)
        ]
    return {"exports": exports, "backstores": backstores}


def owned_config(dump: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The owned part of an rtslib ``RTSRoot.dump()``: targets under ``prefix``, skycache-* backstores."""
    return {
        "storage_objects": [
            so for so in dump.get("storage_objects", []) if so["name"].startswith(NAME_PREFIX)
        ],
        "targets": [t for t in dump.get("targets", []) if str(t.get("wwn", "")).startswith(prefix + ":")],
    }


def lio_save(path: Path, prefix: str) -> None:
    with _rtslib() as rts:
        config = owned_config(rts.RTSRoot().dump(), prefix)
    text = json.dumps({"version": 2, "lio": config}, indent=2, sort_keys=True) + "\n"
    write_file(path, text, 0o600, private_root=path.parent)  # the state directory: kept private


def lio_restore(path: Path, prefix: str) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AgentError(f"no saved export configuration at {path}") from None
    except json.JSONDecodeError as exc:
        raise AgentError(f"saved export configuration {path} is not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("version") != 2:
        raise AgentError(f"saved export configuration {path} has an unknown format")
    lio = owned_config(data.get("lio", {}), prefix)
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
                raise AgentError(f"LIO restore: {errors[0]}")
    return [f"target {t['wwn']}" for t in config["targets"]]


# -- the program -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skycache-agent", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="op", required=True)
    p = sub.add_parser("write-file")
    p.add_argument("path", type=Path)
    p.add_argument("--mode", default="0600")
    p.add_argument("--private-dir", type=Path, help="PATH is in this directory: keep it private")
    p = sub.add_parser("set-write-cache")
    p.add_argument("device")
    p.add_argument("mode")
    p = sub.add_parser("flush-device")
    p.add_argument("device")
    p = sub.add_parser("iscsi-node-auth")
    p.add_argument("iqn")
    p.add_argument("portal")
    p.add_argument("--iface", default="default")
    sub.add_parser("lio-create")
    p = sub.add_parser("lio-delete")
    p.add_argument("iqn")
    p.add_argument("--backstore")
    p = sub.add_parser("lio-remove-backstore")
    p.add_argument("name")
    for op in ("lio-list", "lio-save", "lio-restore"):
        p = sub.add_parser(op)
        if op != "lio-list":
            p.add_argument("path", type=Path)
        p.add_argument("--prefix", required=True)
    return parser


def main(argv: list[str], stdin: str, out: TextIO, err: TextIO) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage error
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    try:
        if args.op == "write-file":
            write_file(args.path, stdin, int(args.mode, 8), args.private_dir)
        elif args.op == "set-write-cache":
            set_write_cache(args.device, args.mode)
        elif args.op == "flush-device":
            flush_device(args.device)
        elif args.op == "iscsi-node-auth":
            for rec in iscsi_node_auth(args.iqn, args.portal, args.iface, stdin):
                out.write(f"CHAP set in {rec}\n")
        elif args.op == "lio-create":
            lio_create(json.loads(stdin))
        elif args.op == "lio-delete":
            lio_delete(args.iqn, args.backstore)
        elif args.op == "lio-remove-backstore":
            if not args.name.startswith(NAME_PREFIX):
                raise AgentError(f"backstore {args.name!r} was not created by skycache")
            with _rtslib() as rts:
                for so in list(rts.RTSRoot().storage_objects):
                    if so.name == args.name:
                        so.delete()
        elif args.op == "lio-list":
            out.write(json.dumps(lio_list(args.prefix)) + "\n")
        elif args.op == "lio-save":
            lio_save(args.path, args.prefix)
        elif args.op == "lio-restore":
            out.write("".join(f"{line}\n" for line in lio_restore(args.path, args.prefix)))
    except (AgentError, OSError, ValueError, KeyError, TypeError) as exc:
        err.write(f"skycache-agent: {args.op}: {exc}\n")
        return 1
    return 0


def run_inprocess(argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    """The agent in this process, as the local runner calls it (same exit code and output)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdin or "", out, err)
    return subprocess.CompletedProcess([AGENT_NAME, *argv], code, out.getvalue(), err.getvalue())


AGENT_NAME = "skycache-agent"


def cli() -> None:  # the console script
    sys.exit(main(sys.argv[1:], sys.stdin.read() if not sys.stdin.isatty() else "", sys.stdout, sys.stderr))


if __name__ == "__main__":
    cli()
