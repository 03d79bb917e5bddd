"""The open-iscsi initiator, through ``iscsiadm``: discovery, CHAP, login, device, logout, sessions.

The CHAP secret never goes on a command line: ``skycache-agent iscsi-node-auth`` writes it into the
node record from its stdin (:func:`chap_command`).

Logins and logouts to one portal are serialised with a file lock (iscsid handles one portal's
sessions in order anyway; two skycache processes racing produce exit 15 "session exists" or a
node-record update lost under the other's login). Known-transient exit codes are retried with
backoff (os-brick's list): 6 database/lock, 8 transport timeout, 28 busy, 29 try again. Exit 24
(authorisation failure) is final and reported as a refusal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from skycache.errors import Busy, InvalidInput, NotFound, SkycacheError
from skycache.numbers import portal_port
from skycache.plan import Action, Command, Wait
from skycache.runner import AGENT, CommandError, Retry, Runner, Secret

INITIATOR_FILE = PurePosixPath("/etc/iscsi/initiatorname.iscsi")
BY_PATH = PurePosixPath("/dev/disk/by-path")

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

AUTH_VALUE_MAX = 255  # open-iscsi's AUTH_STR_MAX_LEN (256) with its NUL

TRANSIENT = Retry(exit_codes=frozenset({ERR_IDBM, ERR_TRANS_TIMEOUT, ERR_BUSY, ERR_AGAIN}), attempts=5)


class LoginRefused(SkycacheError):
    """The target refused the login (ACL or CHAP)."""


def initiator_name(runner: Runner, path: PurePosixPath = INITIATOR_FILE) -> str:
    """The runner's host's initiator IQN (``InitiatorName=`` in /etc/iscsi/initiatorname.iscsi)."""
    text = runner.read_text(path)
    if text is None:
        raise NotFound(f"{path} does not exist (is open-iscsi installed?)")
    return parse_initiator_name(text, path)


def parse_initiator_name(text: str, path: PurePosixPath = INITIATOR_FILE) -> str:
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
    if not text.isprintable() or any(c.isspace() for c in text):  # would reach node records, configfs
        raise InvalidInput(f"portal {text!r} has a blank or a control character")
    addr, sep, port_text = text.rpartition(":")
    if not sep:
        addr, port_text = text, "3260"
    if not addr or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", addr):
        raise InvalidInput(f"portal {text!r} is not ADDR[:PORT]")
    return Portal(addr, portal_port(text, port_text))


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


def by_path(portal: Portal, iqn: str, lun: int = 0) -> PurePosixPath:
    """udev's persistent name of an iSCSI LUN (60-persistent-storage.rules)."""
    return BY_PATH / f"ip-{portal}-iscsi-{iqn}-lun-{lun}"


# -- the thin layer ---------------------------------------------------------------------------------


def _node(iqn: str, portal: Portal, iface: str | None) -> list[str]:
    return ["iscsiadm", "-m", "node", "-T", iqn, "-p", str(portal), *(["-I", iface] if iface else [])]


def sessions(runner: Runner) -> list[Session]:
    done = runner.query(["iscsiadm", "-m", "session", "-P", "3"], check=False)
    if done.returncode == ERR_NO_OBJS_FOUND or "No active sessions" in done.stderr:
        return []
    if done.returncode != 0:
        raise CommandError(list(done.argv), done.returncode, done.stdout, done.stderr)
    return parse_sessions(done.stdout)


# As long as iscsiadm's own login timeout (login_command) and a little more.
ISCSIADM_SETTLE_S = 150.0


def running_iscsiadm(runner: Runner) -> list[int]:
    """PIDs of the iscsiadm processes running now (``pgrep -x``: exit 1 is "none")."""
    done = runner.query(["pgrep", "-x", "iscsiadm"], check=False)
    if done.returncode not in (0, 1):
        raise CommandError(list(done.argv), done.returncode, done.stdout, done.stderr)
    return [int(pid) for pid in done.stdout.split() if pid.isdigit()]


def wait_for_iscsiadm(runner: Runner, *, timeout_s: float = ISCSIADM_SETTLE_S, poll_s: float = 0.2) -> None:
    """Wait until no iscsiadm runs, so that what the system records is final.

    A skycache killed during an attach leaves its iscsiadm child running (SIGKILL reaches only the
    process it is sent to): the discovery goes on to write the node record, the login to make the
    session, after a teardown that read the records before has finished. Measured in the lab: the
    teardown of the kill-mid-attach test then left the node record behind. Refuses (Busy) when one
    still runs after ``timeout_s``, rather than race it.
    """
    deadline = time.monotonic() + timeout_s
    while pids := running_iscsiadm(runner):
        if time.monotonic() >= deadline:
            raise Busy(
                f"iscsiadm (pid {', '.join(map(str, pids))}) still running after {timeout_s:g} s; "
                "a teardown now would race it: try again when it has finished"
            )
        time.sleep(poll_s)


def list_ifaces(runner: Runner) -> list[str]:
    done = runner.query(["iscsiadm", "-m", "iface"], check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def node_records(runner: Runner) -> list[tuple[str, str]]:
    """(portal, iqn) of every node record (``iscsiadm -m node``)."""
    done = runner.query(["iscsiadm", "-m", "node"], check=False)
    return [(t.portal, t.iqn) for t in parse_discovery(done.stdout)]


def offered_targets(
    runner: Runner, portal: Portal, *, iface: str | None = None, timeout_s: float = 30
) -> list[str]:
    """The targets a portal offers (SendTargets discovery, ``-o nonpersistent``: no node record is
    written, so it is a query); one line naming the portal when it does not answer."""
    argv = ["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", str(portal), "-o", "nonpersistent"]
    try:
        done = runner.query([*argv, *(["-I", iface] if iface else [])], retry=TRANSIENT, timeout_s=timeout_s)
    except CommandError as exc:
        raise SkycacheError(f"portal {portal} does not answer iSCSI discovery ({_reason(exc)})") from exc
    return [t.iqn for t in parse_discovery(done.stdout)]


def disk_holders(runner: Runner, disk: str) -> list[str]:
    """Kernel names of the devices stacked on an iSCSI disk (``sdb``), from the host's sysfs."""
    return runner.list_dir(f"/sys/block/{disk}/holders") or []


# -- actions for plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceLink:
    """A :class:`skycache.plan.Wait` probe: udev has made the LUN's by-path link."""

    link: str

    def describe(self) -> str:
        return f"udev has made {self.link}"

    def poll(self, runner: Runner) -> tuple[bool, str | None]:
        runner.query(["udevadm", "settle", "--timeout=10"], check=False)
        return runner.exists(self.link), None


def login_command(iqn: str, portal: Portal, iface: str | None = None) -> Command:
    return Command(
        (*_node(iqn, portal, iface), "--login"),
        retry=TRANSIENT,
        timeout_s=120,
        ok_codes=frozenset({0, ERR_SESS_EXISTS}),  # already logged in: what we wanted
        meanings=(
            (
                ERR_LOGIN_AUTH_FAILED,
                f"login to {iqn} at {portal} refused: authorization failure "
                "(initiator not in the ACL or wrong CHAP secret)",
            ),
        ),
    )


def logout_commands(iqn: str, portal: Portal | None = None, iface: str | None = None) -> tuple[Command, ...]:
    """Log out (exit 21, no session, is success) and delete the node record (it holds the CHAP secret)."""
    base = (
        "iscsiadm",
        "-m",
        "node",
        "-T",
        iqn,
        *(["-p", str(portal)] if portal else []),
        *(["-I", iface] if iface else []),
    )
    done_or_gone = frozenset({0, ERR_NO_OBJS_FOUND})
    return (
        Command((*base, "--logout"), retry=TRANSIENT, timeout_s=120, ok_codes=done_or_gone),
        Command((*base, "-o", "delete"), retry=TRANSIENT, ok_codes=done_or_gone),
    )


def check_chap(username: str, secret: Secret) -> None:
    """CHAP credentials open-iscsi's node record keeps as given (the secret itself never in the error):
    one line each, at most 255 characters, no control character, no leading or trailing blank."""
    for what, value in (("username", username), ("secret", secret.value)):
        if not value or len(value) > AUTH_VALUE_MAX:
            raise InvalidInput(f"CHAP {what} must have 1 to {AUTH_VALUE_MAX} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or value != value.strip():
            raise InvalidInput(f"CHAP {what} has a control character or leading/trailing blanks")


def chap_command(iqn: str, portal: Portal, chap: tuple[str, Secret], iface: str | None = None) -> Command:
    """Set CHAP in the node record of ``iqn`` at ``portal`` through ``skycache-agent iscsi-node-auth``.

    Not ``iscsiadm -o update -n node.session.auth.password -v SECRET``: that puts the secret on a
    command line, readable by every local user (``ps``, /proc/PID/cmdline) while iscsiadm runs. The
    agent writes the record's auth lines itself, under iscsiadm's lock, from the JSON on its stdin;
    the plan shows ``< (stdin)`` and the command log records the argv only.
    """
    check_chap(chap[0], chap[1])
    credentials = Secret(json.dumps({"username": chap[0], "password": chap[1].value}))
    argv = (AGENT, "iscsi-node-auth", iqn, str(portal), *(["--iface", iface] if iface else []))
    return Command(argv, stdin=credentials, timeout_s=60)


def attach_actions(
    records: Sequence[tuple[str, str]],
    iqn: str,
    portal: Portal,
    *,
    chap: tuple[str, Secret] | None,
    iface: str | None = None,
    timeout_s: float = 60,
) -> list[Action]:
    """Log in to ``iqn`` at ``portal`` (a node record of its own, CHAP when given) and wait until the
    LUN's by-path link exists; the device the later layers use is :func:`by_path`.

    No discovery: it would rewrite the node records of every target of the portal (another attach's
    CHAP settings among them) and needs nothing this plan does not know already.
    """
    node = _node(iqn, portal, iface)
    steps: list[Command] = []
    if (str(portal), iqn) not in records:
        steps.append(Command((*node, "-o", "new"), retry=TRANSIENT))
    if chap is not None:
        steps.append(chap_command(iqn, portal, chap, iface))
    link = str(by_path(portal, iqn))
    return [
        Action(
            f"log in to {iqn} at {portal}" + (" with CHAP" if chap else ""),
            (*steps, login_command(iqn, portal, iface), Wait(DeviceLink(link), timeout_s=timeout_s)),
            logout_commands(iqn, portal, iface),
        )
    ]


def detach_actions(
    runner: Runner, session_list: Sequence[Session], iqn: str, *, force: bool = False
) -> list[Action]:
    """Flush and log out every session to ``iqn``; refuses while a device sits on its disk."""
    actions: list[Action] = []
    for s in [s for s in session_list if s.iqn == iqn]:
        portal = parse_portal(s.portal)
        flushes: list[Command] = []
        for disk in s.disks:
            holders = disk_holders(runner, disk)
            if holders and not force:
                raise Busy(f"iSCSI disk /dev/{disk} of {iqn} is in use by {', '.join(holders)}")
            flushes.append(Command(("blockdev", "--flushbufs", f"/dev/{disk}"), ok_codes=frozenset({0, 1})))
        iface = s.iface if s.iface != "default" else None
        actions.append(
            Action(
                f"log out of {iqn} at {portal}" + (f" (iface {s.iface})" if iface else ""),
                (*flushes, *logout_commands(iqn, portal, iface)),
            )
        )
    return actions


def ensure_iface(runner: Runner, name: str, initiator: str) -> None:
    """An iscsiadm iface that logs in as ``initiator`` (a second identity on one host, for tests)."""
    if not name.startswith("skycache-"):
        raise InvalidInput(f"iface name {name!r} must start with 'skycache-'")
    runner.run(["iscsiadm", "-m", "iface", "-I", name, "-o", "new"], check=False)
    runner.run(
        ["iscsiadm", "-m", "iface", "-I", name, "-o", "update", "-n", "iface.initiatorname", "-v", initiator]
    )


def delete_iface_command(name: str) -> Command:
    if not name.startswith("skycache-"):
        raise InvalidInput(f"iface name {name!r} must start with 'skycache-'")
    return Command(
        ("iscsiadm", "-m", "iface", "-I", name, "-o", "delete"), ok_codes=frozenset({0, ERR_NO_OBJS_FOUND})
    )


# -- direct use (tests and scripts; verbs plan the actions above) -----------------------------------


def attach(
    runner: Runner,
    iqn: str,
    portal: Portal,
    *,
    chap: tuple[str, str] | None,
    iface: str | None = None,
    timeout_s: float = 60,
) -> str:
    """Log in and wait for the LUN; returns its by-path link. A failure logs out again."""
    from skycache.plan import Plan

    secret = (chap[0], Secret(chap[1])) if chap else None
    actions = attach_actions(node_records(runner), iqn, portal, chap=secret, iface=iface, timeout_s=timeout_s)
    Plan(f"attach {iqn}", actions).apply(runner)
    return str(by_path(portal, iqn))


def detach(runner: Runner, iqn: str, *, force: bool = False) -> list[str]:
    from skycache.plan import Plan

    actions = detach_actions(runner, sessions(runner), iqn, force=force)
    Plan(f"detach {iqn}", actions).apply(runner)
    return [a.description for a in actions]


def _reason(exc: CommandError) -> str:
    lines = (exc.stderr.strip() or exc.stdout.strip()).splitlines()
    tail = lines[-1] if lines else ""
    code = "timed out" if exc.timeout is not None else f"exit {exc.returncode}"
    return f"{code}: {tail}" if tail else code
