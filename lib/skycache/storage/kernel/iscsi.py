"""The open-iscsi initiator, through ``iscsiadm``: discovery, CHAP, login, device, logout, sessions.

Logins and logouts to one portal are serialised with a file lock (iscsid handles one portal's
sessions in order anyway; two skycache processes racing produce exit 15 "session exists" or a
node-record update lost under the other's login). Known-transient exit codes are retried with
backoff (os-brick's list): 6 database/lock, 8 transport timeout, 28 busy, 29 try again. Exit 24
(authorisation failure) is final and reported as a refusal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skycache import state
from skycache.errors import Busy, InvalidInput, NotFound, SkycacheError
from skycache.runner import CommandError, Retry, Runner, Secret

INITIATOR_FILE = Path("/etc/iscsi/initiatorname.iscsi")
BY_PATH = Path("/dev/disk/by-path")

# include/iscsi_err.h of open-iscsi
ERR_TRANS = 4
ERR_LOGIN = 5
ERR_IDBM = 6
ERR_TRANS_TIMEOUT = 8
ERR_SESS_EXISTS = 15
ERR_NO_OBJS_FOUND = 21
ERR_LOGIN_AUTH_FAILED = 24
ERR_BUSY = 28
ERR_AGAIN = 29

TRANSIENT = Retry(exit_codes=frozenset({ERR_IDBM, ERR_TRANS_TIMEOUT, ERR_BUSY, ERR_AGAIN}), attempts=5)


class LoginRefused(SkycacheError):
    """The target refused the login (ACL or CHAP)."""


def initiator_name(path: Path = INITIATOR_FILE) -> str:
    """This node's initiator IQN (``InitiatorName=`` in /etc/iscsi/initiatorname.iscsi)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist (is open-iscsi installed?)") from None
    return parse_initiator_name(text, path)


def parse_initiator_name(text: str, path: Path = INITIATOR_FILE) -> str:
    for line in text.splitlines():
        if line.strip().startswith("InitiatorName="):
            return line.split("=", 1)[1].strip()
    raise NotFound(f"no InitiatorName in {path}")


@dataclass(frozen=True)
class Portal:
    address: str
    port: int = 3260

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


def parse_portal(text: str) -> Portal:
    """``ADDR[:PORT]``; names the bad value when it is not one."""
    addr, sep, port_text = text.rpartition(":")
    if not sep:
        addr, port_text = text, "3260"
    if not addr or not re.fullmatch(r"[A-Za-z0-9.-]+", addr):
        raise InvalidInput(f"portal {text!r} is not ADDR[:PORT]")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"portal {text!r} has an invalid port {port_text!r}")
    return Portal(addr, int(port_text))


# -- parsers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveredTarget:
    portal: str  # "ADDR:PORT"
    tpgt: int
    iqn: str


def parse_discovery(text: str) -> list[DiscoveredTarget]:
    """``iscsiadm -m discovery -t sendtargets``: ``127.0.0.1:3260,1 iqn...`` per line."""
    found = []
    for line in text.splitlines():
        m = re.match(r"^(\S+),(\d+)\s+(\S+)", line.strip())
        if m:
            found.append(DiscoveredTarget(m.group(1), int(m.group(2)), m.group(3)))
    return found


@dataclass(frozen=True)
class Session:
    sid: int
    iqn: str
    portal: str  # "ADDR:PORT"
    iface: str = "default"
    initiator: str = ""
    state: str = ""
    disks: tuple[str, ...] = ()  # kernel names: sda...


def parse_sessions(text: str) -> list[Session]:
    """``iscsiadm -m session -P 3`` (the detailed form: gives iface, initiator and disks)."""
    sessions: list[Session] = []
    cur: dict[str, object] = {}

    def flush() -> None:
        if "sid" in cur:
            sessions.append(
                Session(
                    sid=int(str(cur["sid"])),
                    iqn=str(cur.get("iqn", "")),
                    portal=str(cur.get("portal", "")),
                    iface=str(cur.get("iface", "default")),
                    initiator=str(cur.get("initiator", "")),
                    state=str(cur.get("state", "")),
                    disks=tuple(cur.get("disks", ())),  # type: ignore[arg-type]
                )
            )

    iqn = ""
    portal = ""
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"^Target:\s+(\S+)", line):
            flush()
            cur = {}
            iqn = m.group(1)
        elif m := re.match(r"^Current Portal:\s+(\S+?),\d+", line):
            flush()
            cur = {"iqn": iqn}
            portal = m.group(1)
            cur["portal"] = portal
        elif m := re.match(r"^Iface Name:\s+(\S+)", line):
            cur["iface"] = m.group(1)
        elif m := re.match(r"^Iface Initiatorname:\s+(\S+)", line):
            cur["initiator"] = m.group(1)
        elif m := re.match(r"^SID:\s+(\d+)", line):
            cur["sid"] = m.group(1)
        elif m := re.match(r"^iSCSI Session State:\s+(\S+)", line):
            cur["state"] = m.group(1)
        elif m := re.match(r"^Attached scsi disk\s+(\S+)", line):
            cur["disks"] = (*tuple(cur.get("disks", ())), m.group(1))  # type: ignore[arg-type]
    flush()
    return sessions


def by_path(portal: Portal, iqn: str, lun: int = 0) -> Path:
    """udev's persistent name of an iSCSI LUN (60-persistent-storage.rules)."""
    return BY_PATH / f"ip-{portal}-iscsi-{iqn}-lun-{lun}"


# -- the thin layer ----------------------------------------------------------------------------------


def _node(iqn: str, portal: Portal, iface: str | None) -> list[str]:
    return ["iscsiadm", "-m", "node", "-T", iqn, "-p", str(portal), *(["-I", iface] if iface else [])]


def sessions(runner: Runner) -> list[Session]:
    done = runner.query(["iscsiadm", "-m", "session", "-P", "3"], check=False)
    if done.returncode == ERR_NO_OBJS_FOUND or "No active sessions" in done.stderr:
        return []
    if done.returncode != 0:
        raise CommandError(list(done.argv), done.returncode, done.stdout, done.stderr)
    return parse_sessions(done.stdout)


def discover(
    runner: Runner, portal: Portal, *, iface: str | None = None, timeout_s: float = 30
) -> list[DiscoveredTarget]:
    argv = [
        "iscsiadm",
        "-m",
        "discovery",
        "-t",
        "sendtargets",
        "-p",
        str(portal),
        *(["-I", iface] if iface else []),
    ]
    try:
        # Discovery writes node records: it is a change (a plan shows it), but attach needs its answer.
        done = runner.query(argv, retry=TRANSIENT, timeout_s=timeout_s)
    except CommandError as exc:
        raise SkycacheError(f"portal {portal} does not answer iSCSI discovery ({_reason(exc)})") from exc
    return parse_discovery(done.stdout)


def set_chap(
    runner: Runner, iqn: str, portal: Portal, userid: str, password: str, *, iface: str | None = None
) -> None:
    for name, value in (
        ("node.session.auth.authmethod", "CHAP"),
        ("node.session.auth.username", userid),
        ("node.session.auth.password", Secret(password)),
    ):
        runner.run([*_node(iqn, portal, iface), "-o", "update", "-n", name, "-v", value], retry=TRANSIENT)


def login(runner: Runner, iqn: str, portal: Portal, *, iface: str | None = None) -> None:
    try:
        runner.run([*_node(iqn, portal, iface), "--login"], retry=TRANSIENT, timeout_s=120)
    except CommandError as exc:
        if exc.returncode == ERR_SESS_EXISTS:
            return  # already logged in: what we wanted
        if exc.returncode == ERR_LOGIN_AUTH_FAILED:
            raise LoginRefused(
                f"login to {iqn} at {portal} refused: authorization failure "
                "(initiator not in the ACL or wrong CHAP secret)"
            ) from exc
        raise SkycacheError(f"login to {iqn} at {portal} failed ({_reason(exc)})") from exc


def logout(runner: Runner, iqn: str, portal: Portal | None = None, *, iface: str | None = None) -> None:
    """Log out (exit 21, no session, is success) and delete the node record (it holds the CHAP secret)."""
    base = [
        "iscsiadm",
        "-m",
        "node",
        "-T",
        iqn,
        *(["-p", str(portal)] if portal else []),
        *(["-I", iface] if iface else []),
    ]
    done = runner.run([*base, "--logout"], retry=TRANSIENT, check=False, timeout_s=120)
    if done.returncode not in (0, ERR_NO_OBJS_FOUND):
        raise SkycacheError(f"logout from {iqn} failed: {done.stderr.strip().splitlines()[-1:]}")
    runner.run([*base, "-o", "delete"], retry=TRANSIENT, check=False)


def wait_for_device(
    runner: Runner,
    portal: Portal,
    iqn: str,
    *,
    lun: int = 0,
    timeout_s: float = 60,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The LUN's block device (``/dev/sdX``) once udev has made its by-path link."""
    link = by_path(portal, iqn, lun)
    deadline = time.monotonic() + timeout_s
    while True:
        runner.query(["udevadm", "settle", "--timeout=10"], check=False)
        if link.exists():
            return str(link.resolve())
        # Fall back on the session's own record (udev rules may be missing on a minimal host).
        for s in sessions(runner):
            if s.iqn == iqn and s.portal == str(portal) and s.disks and Path("/dev", s.disks[0]).exists():
                return f"/dev/{s.disks[0]}"
        if time.monotonic() > deadline:
            raise SkycacheError(f"no block device appeared for {iqn} at {portal} within {timeout_s:g}s")
        sleep(0.5)


def attach(
    runner: Runner,
    iqn: str,
    portal: Portal,
    *,
    chap: tuple[str, str] | None,
    iface: str | None = None,
    timeout_s: float = 60,
) -> str:
    """Discover, set CHAP, log in (serialised per portal), wait for the disk; returns its path.

    A failure after the login logs out again, so nothing is left half-attached.
    """
    with state.file_lock(f"iscsi-{portal}"):
        found = discover(runner, portal, iface=iface)
        if not any(t.iqn == iqn for t in found):
            raise NotFound(f"portal {portal} does not offer target {iqn}")
        if chap:
            set_chap(runner, iqn, portal, chap[0], chap[1], iface=iface)
        try:
            login(runner, iqn, portal, iface=iface)
        except SkycacheError:
            runner.run([*_node(iqn, portal, iface), "-o", "delete"], check=False)
            raise
        try:
            return wait_for_device(runner, portal, iqn, timeout_s=timeout_s)
        except BaseException:
            logout(runner, iqn, portal, iface=iface)
            raise


def detach(runner: Runner, iqn: str, *, force: bool = False) -> list[str]:
    """Flush and log out every session to ``iqn``; refuses while a device sits on its disk."""
    done: list[str] = []
    for s in [s for s in sessions(runner) if s.iqn == iqn]:
        portal = parse_portal(s.portal)
        with state.file_lock(f"iscsi-{portal}"):
            for disk in s.disks:
                holders = sorted(p.name for p in Path("/sys/block", disk, "holders").glob("*"))
                if holders and not force:
                    raise Busy(f"iSCSI disk /dev/{disk} of {iqn} is in use by {', '.join(holders)}")
                runner.run(["blockdev", "--flushbufs", f"/dev/{disk}"], check=False)
            logout(runner, iqn, portal, iface=s.iface if s.iface != "default" else None)
        done.append(f"{iqn} at {portal}")
    return done


def ensure_iface(runner: Runner, name: str, initiator: str) -> None:
    """An iscsiadm iface that logs in as ``initiator`` (a second identity on one host, for tests)."""
    if not name.startswith("skycache-"):
        raise InvalidInput(f"iface name {name!r} must start with 'skycache-'")
    runner.run(["iscsiadm", "-m", "iface", "-I", name, "-o", "new"], check=False)
    runner.run(
        ["iscsiadm", "-m", "iface", "-I", name, "-o", "update", "-n", "iface.initiatorname", "-v", initiator]
    )


def delete_iface(runner: Runner, name: str) -> None:
    if name.startswith("skycache-"):
        runner.run(["iscsiadm", "-m", "iface", "-I", name, "-o", "delete"], check=False)


def list_ifaces(runner: Runner) -> list[str]:
    done = runner.query(["iscsiadm", "-m", "iface"], check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def node_records(runner: Runner) -> list[tuple[str, str]]:
    """(portal, iqn) of every node record (``iscsiadm -m node``)."""
    done = runner.query(["iscsiadm", "-m", "node"], check=False)
    return [(t.portal, t.iqn) for t in parse_discovery(done.stdout)]


def _reason(exc: CommandError) -> str:
    lines = (exc.stderr.strip() or exc.stdout.strip()).splitlines()
    tail = lines[-1] if lines else ""
    code = "timed out" if exc.timeout is not None else f"exit {exc.returncode}"
    return f"{code}: {tail}" if tail else code
