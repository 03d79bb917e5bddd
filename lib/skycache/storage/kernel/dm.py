"""device-mapper: table builders, output parsers and a thin layer that runs ``dmsetup``.

Every other stack module (caches, snapshots, shims, delay/flakey emulation) builds on this one. The
builders and parsers are pure functions over strings; only the functions taking a ``runner`` touch
the system. Device names skycache creates always carry the ``skycache-`` prefix
(:func:`skycache.ownership.require_marked_name`); removal and changes refuse any other name.

Units: device-mapper tables count 512-byte sectors (Documentation/admin-guide/device-mapper/*).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from skycache.errors import Busy, InvalidInput, NotFound
from skycache.ownership import is_marked_name, require_marked_name
from skycache.plan import Action, Command
from skycache.runner import CommandError, Retry, Runner

SECTOR = 512
MAPPER_DIR = "/dev/mapper"

# `dmsetup remove` fails with "Device or resource busy" while udev (blkid, lvm's rules) still holds
# the node open just after a change; waiting a little is enough. A real holder keeps it failing.
REMOVE_RETRY = Retry(exit_codes=frozenset(), attempts=6, first_delay_s=0.5, stderr_contains=("busy",))


# -- tables ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One line of a dm table: ``START LENGTH TARGET ARGS...`` (start and length in sectors)."""

    start: int
    length: int
    target: str
    args: tuple[str, ...] = ()

    def line(self) -> str:
        return " ".join([str(self.start), str(self.length), self.target, *self.args])


Table = tuple[Segment, ...]


def render_table(table: Sequence[Segment]) -> str:
    """The text ``dmsetup create --table`` / ``load`` expects (one segment per line)."""
    if not table:
        raise InvalidInput("a device-mapper table needs at least one segment")
    return "\n".join(seg.line() for seg in table)


def bytes_to_sectors(nbytes: int) -> int:
    if nbytes % SECTOR:
        raise InvalidInput(f"size {nbytes} bytes is not a multiple of {SECTOR}-byte sectors")
    return nbytes // SECTOR


def _positive(length: int) -> int:
    if length <= 0:
        raise InvalidInput(f"device-mapper length {length} sectors must be positive")
    return length


def linear(device: str, length: int, *, offset: int = 0, start: int = 0) -> Segment:
    """``linear DEV OFFSET``: map ``length`` sectors of ``device`` from ``offset``."""
    return Segment(start, _positive(length), "linear", (device, str(offset)))


def snapshot(
    origin: str, cow: str, length: int, *, persistent: bool = True, chunk_sectors: int = 8
) -> Segment:
    """``snapshot ORIGIN COW P|N CHUNK``: a copy-on-write view of ``origin`` whose changes go to ``cow``.

    Persistent (``P``) keeps the exception table on the COW device, so the snapshot can be
    re-assembled from it later (that is how the repository materialises a VM's disk).
    """
    return Segment(
        0, _positive(length), "snapshot", (origin, cow, "P" if persistent else "N", str(chunk_sectors))
    )


def snapshot_origin(origin: str, length: int) -> Segment:
    """``snapshot-origin ORIGIN``: writes to the origin first copy the old chunks to its snapshots."""
    return Segment(0, _positive(length), "snapshot-origin", (origin,))


def thin(pool: str, dev_id: int, length: int, *, external_origin: str | None = None) -> Segment:
    """``thin POOL DEV_ID [EXTERNAL_ORIGIN]``: a thin volume; unprovisioned reads go to the origin."""
    args = (pool, str(dev_id)) + ((external_origin,) if external_origin else ())
    return Segment(0, _positive(length), "thin", args)


def delay(device: str, length: int, read_ms: int, *, write_ms: int | None = None, offset: int = 0) -> Segment:
    """``delay DEV OFFSET MS [DEV OFFSET MS]``: fixed extra latency (seek emulation for repo disks)."""
    if read_ms < 0 or (write_ms is not None and write_ms < 0):
        raise InvalidInput(f"delay {read_ms}/{write_ms} ms must not be negative")
    args: tuple[str, ...] = (device, str(offset), str(read_ms))
    if write_ms is not None:
        args += (device, str(offset), str(write_ms))
    return Segment(0, _positive(length), "delay", args)


def flakey(
    device: str,
    length: int,
    up_s: int,
    down_s: int,
    *,
    features: Sequence[str] = (),
    offset: int = 0,
) -> Segment:
    """``flakey DEV OFFSET UP DOWN [N FEATURES...]``: fail I/O for ``down_s`` every cycle."""
    if up_s < 0 or down_s < 0:
        raise InvalidInput(f"flakey intervals {up_s}/{down_s} s must not be negative")
    args: tuple[str, ...] = (device, str(offset), str(up_s), str(down_s))
    if features:
        args += (str(len(features)), *features)
    return Segment(0, _positive(length), "flakey", args)


def error(length: int) -> Segment:
    """``error``: every I/O fails (replaces a table whose device went away)."""
    return Segment(0, _positive(length), "error")


# -- parsers -----------------------------------------------------------------------------------------

_NO_DEVICES = "No devices found"
_LS_RE = re.compile(r"^(\S+)\s+\((\d+)[:,]\s*(\d+)\)\s*$")
_DEPS_RE = re.compile(r"^(?:(\S+):\s*)?(\d+) dependencies\s*:?\s*(.*)$")


def parse_segment(line: str) -> Segment:
    words = line.split()
    if len(words) < 3:
        raise ValueError(f"not a device-mapper table line: {line!r}")
    return Segment(int(words[0]), int(words[1]), words[2], tuple(words[3:]))


def parse_table(text: str, *, name: str | None = None) -> dict[str, Table]:
    """``dmsetup table`` (``NAME: START LEN TARGET ARGS``) or, with ``name``, ``dmsetup table NAME``.

    Also parses ``dmsetup status`` output, which has the same shape.
    """
    tables: dict[str, list[Segment]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NO_DEVICES):
            continue
        if name is not None:
            tables.setdefault(name, []).append(parse_segment(line))
            continue
        dev, sep, rest = line.partition(":")
        if not sep:
            raise ValueError(f"not a 'dmsetup table' line: {line!r}")
        segments = tables.setdefault(dev, [])
        if rest.strip():  # a device a killed process left without a table prints "NAME: " only
            segments.append(parse_segment(rest.strip()))
    return {k: tuple(v) for k, v in tables.items()}


def parse_ls(text: str) -> dict[str, tuple[int, int]]:
    """``dmsetup ls``: device name -> (major, minor)."""
    devices: dict[str, tuple[int, int]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NO_DEVICES):
            continue
        m = _LS_RE.match(line)
        if not m:
            raise ValueError(f"not a 'dmsetup ls' line: {line!r}")
        devices[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return devices


def parse_deps(text: str, *, name: str | None = None) -> dict[str, tuple[str, ...]]:
    """``dmsetup deps -o devname``: device name -> names of the devices it sits on.

    dm devices under it appear by their dm name, other block devices by kernel name (``loop0``).
    """
    deps: dict[str, tuple[str, ...]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NO_DEVICES):
            continue
        m = _DEPS_RE.match(line)
        if not m:
            raise ValueError(f"not a 'dmsetup deps' line: {line!r}")
        dev = m.group(1) or name
        if dev is None:
            raise ValueError(f"'dmsetup deps' line without a device name: {line!r}")
        deps[dev] = tuple(re.findall(r"\(([^()]+)\)", m.group(3)))
    return deps


def removal_order(names: Iterable[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Order ``names`` so that every device comes before the devices it sits on (holders first).

    ``deps`` maps a device to the names of the devices under it (:func:`parse_deps`). Ties keep
    name order, so the result is deterministic.
    """
    wanted = sorted(set(names))
    below = {d: {x for x in deps.get(d, ()) if x in wanted} for d in wanted}
    holders_left = {d: sum(1 for h in wanted if d in below[h]) for d in wanted}
    order: list[str] = []
    ready = [d for d in wanted if holders_left[d] == 0]
    while ready:
        dev = ready.pop(0)
        order.append(dev)
        for lower in sorted(below[dev]):
            holders_left[lower] -= 1
            if holders_left[lower] == 0:
                ready.append(lower)
        ready.sort()
    if len(order) != len(wanted):  # a cycle cannot happen in dm; keep the rest rather than lose it
        order += [d for d in wanted if d not in order]
    return order


# -- the thin layer that runs dmsetup ----------------------------------------------------------------


def path(name: str) -> str:
    return f"{MAPPER_DIR}/{name}"


def _table_arg(table: Sequence[Segment] | str) -> str:
    return table if isinstance(table, str) else render_table(table)


def create_argv(
    name: str, table: Sequence[Segment] | str, *, readonly: bool = False, uuid: str | None = None
) -> list[str]:
    argv = ["dmsetup", "create", name]
    if readonly:
        argv.append("--readonly")
    if uuid:
        argv += ["--uuid", uuid]
    return [*argv, "--table", _table_arg(table)]


def kernel_reason(dmesg_text: str) -> str | None:
    """The kernel's last device-mapper error in ``dmesg`` output, without its timestamp.

    dmsetup only reports ``ioctl ... failed: Invalid argument``; the target's constructor says why
    (e.g. ``thin-pool: ...``) in the kernel log.
    """
    lines = [ln for ln in dmesg_text.splitlines() if "device-mapper:" in ln]
    # "device-mapper: table: 253:8: thin-pool: <why>" beats the generic "ioctl: error adding target".
    specific = [ln for ln in lines if "device-mapper: table:" in ln]
    pick = (specific or lines)[-1:]
    return re.sub(r"^\[[^\]]*\]\s*", "", pick[0]).strip() if pick else None


def _with_kernel_reason(runner: Runner, exc: CommandError) -> CommandError:
    """``exc`` with the kernel's reason appended when dmsetup's ioctl failed (else ``exc`` itself)."""
    if "ioctl" not in exc.stderr:
        return exc
    reason = kernel_reason(runner.query(["dmesg"], check=False).stdout)
    if reason is None:
        return exc
    return CommandError(exc.argv, exc.returncode, exc.stdout, f"{exc.stderr.rstrip()}\nkernel: {reason}")


def create(
    runner: Runner,
    name: str,
    table: Sequence[Segment] | str,
    *,
    readonly: bool = False,
    uuid: str | None = None,
) -> str:
    """Create ``name`` (must be ``skycache-...``) with ``table``; returns ``/dev/mapper/NAME``.

    When the kernel refuses the table, the error carries the target's own reason from the kernel log.
    """
    require_marked_name(name, what="device-mapper device")
    if exists(runner, name):
        raise Busy(f"device-mapper device {name!r} already exists")
    try:
        runner.run(create_argv(name, table, readonly=readonly, uuid=uuid))
    except CommandError as exc:
        raise _with_kernel_reason(runner, exc) from exc
    return path(name)


def remove(runner: Runner, name: str, *, force: bool = False, missing_ok: bool = True) -> None:
    """Remove ``name``, retrying while udev still holds it open.

    ``force`` replaces the table with ``error`` first (dmsetup remove --force), which lets a device
    with an open count (a dead iSCSI disk under it, say) go away; data in it is lost.
    """
    require_marked_name(name, what="device-mapper device")
    if not exists(runner, name):
        if missing_ok:
            return
        raise NotFound(f"device-mapper device {name!r} does not exist")
    argv = ["dmsetup", "remove", *(["--force"] if force else []), name]
    try:
        runner.run(argv, retry=REMOVE_RETRY)
    except CommandError as exc:
        if "busy" in exc.stderr.lower():
            raise Busy(f"device-mapper device {name!r} is in use (open or held by another device)") from exc
        raise


def suspend(runner: Runner, name: str, *, noflush: bool = False) -> None:
    require_marked_name(name, what="device-mapper device")
    runner.run(["dmsetup", "suspend", *(["--noflush"] if noflush else []), name])


def resume(runner: Runner, name: str) -> None:
    require_marked_name(name, what="device-mapper device")
    runner.run(["dmsetup", "resume", name])


def reload(runner: Runner, name: str, table: Sequence[Segment] | str) -> None:
    """Load ``table`` as the inactive table; it takes effect at the next :func:`resume`."""
    require_marked_name(name, what="device-mapper device")
    try:
        runner.run(["dmsetup", "reload", name, "--table", _table_arg(table)])
    except CommandError as exc:
        raise _with_kernel_reason(runner, exc) from exc


def message(runner: Runner, name: str, sector: int, *words: str) -> str:
    require_marked_name(name, what="device-mapper device")
    return runner.run(["dmsetup", "message", name, str(sector), *words]).stdout


def exists(runner: Runner, name: str) -> bool:
    return runner.query(["dmsetup", "info", name], check=False).returncode == 0


def table(runner: Runner, name: str) -> Table:
    out = _query_named(runner, ["dmsetup", "table", name], name)
    return parse_table(out, name=name).get(name, ())


def status(runner: Runner, name: str) -> Table:
    """``dmsetup status NAME`` as segments (the target-specific status words are in ``args``)."""
    out = _query_named(runner, ["dmsetup", "status", name], name)
    return parse_table(out, name=name).get(name, ())


def _query_named(runner: Runner, argv: list[str], name: str) -> str:
    done = runner.query(argv, check=False)
    if done.returncode != 0:
        raise NotFound(f"device-mapper device {name!r} does not exist")
    return done.stdout


@dataclass(frozen=True)
class Info:
    name: str
    major: int
    minor: int
    open_count: int
    segments: int
    attr: str  # e.g. "L--w": live table, not suspended, writable
    uuid: str

    @property
    def suspended(self) -> bool:
        return len(self.attr) > 1 and self.attr[1] == "s"


INFO_FIELDS = "name,major,minor,open,segments,attr,uuid"


def parse_info(text: str) -> dict[str, Info]:
    """``dmsetup info -c --noheadings --separator '|' -o name,major,minor,open,segments,attr,uuid``."""
    infos: dict[str, Info] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NO_DEVICES):
            continue
        parts = line.split("|")
        if len(parts) != 7:
            raise ValueError(f"not a 'dmsetup info -c' line: {line!r}")
        name, major, minor, opened, segs, attr, uuid = parts
        infos[name] = Info(name, int(major), int(minor), int(opened), int(segs), attr, uuid)
    return infos


def info(runner: Runner, name: str | None = None) -> dict[str, Info]:
    argv = ["dmsetup", "info", "-c", "--noheadings", "--separator", "|", "-o", INFO_FIELDS]
    done = runner.query([*argv, *([name] if name else [])], check=False)
    if done.returncode != 0:
        if name:
            raise NotFound(f"device-mapper device {name!r} does not exist")
        raise CommandError(done.argv, done.returncode, done.stdout, done.stderr)
    return parse_info(done.stdout)


def ls(runner: Runner) -> dict[str, tuple[int, int]]:
    return parse_ls(runner.query(["dmsetup", "ls"]).stdout)


def deps(runner: Runner, name: str | None = None) -> dict[str, tuple[str, ...]]:
    out = runner.query(["dmsetup", "deps", "-o", "devname", *([name] if name else [])]).stdout
    return parse_deps(out, name=name)


def all_tables(runner: Runner) -> dict[str, Table]:
    return parse_table(runner.query(["dmsetup", "table"]).stdout)


def all_status(runner: Runner) -> dict[str, Table]:
    """``dmsetup status`` of every device, as segments (the target's status words in ``args``)."""
    return parse_table(runner.query(["dmsetup", "status"]).stdout)


LVM_UUID_PREFIX = "LVM-"


def owned_devices(runner: Runner) -> list[str]:
    """Owned (``skycache-*``) dm devices in a safe removal order: holders before what they hold.

    Devices LVM made for logical volumes are left out (their dm uuid starts with ``LVM-``; an LV in a
    VG named ``skycache-x`` maps to ``skycache--x-lv``): they are removed with lvremove, not dmsetup.
    """
    infos = info(runner)
    owned = [n for n, i in infos.items() if is_marked_name(n) and not i.uuid.startswith(LVM_UUID_PREFIX)]
    return removal_order(owned, deps(runner))


def holders_of(name: str, deps: Mapping[str, Sequence[str]]) -> list[str]:
    """The dm devices stacked directly on ``name`` (from :func:`deps`: who lists it below itself)."""
    return sorted(d for d, below in deps.items() if name in below)


# -- commands and actions for plans ----------------------------------------------------------------


def remove_command(name: str, *, force: bool = False) -> Command:
    """``dmsetup remove [--force] NAME``, retried while udev still holds the node (REMOVE_RETRY).

    ``force`` replaces the table with ``error`` first, which lets a device with an open count (a dead
    iSCSI disk under it, say) go away; data in it is lost.
    """
    require_marked_name(name, what="device-mapper device")
    return Command(("dmsetup", "remove", *(["--force"] if force else []), name), retry=REMOVE_RETRY)


def create_action(name: str, table: Sequence[Segment] | str, what: str, *, readonly: bool = False) -> Action:
    """Create ``name`` with ``table``; the undo removes it."""
    require_marked_name(name, what="device-mapper device")
    return Action(
        f"create {what} {name}",
        (Command(tuple(create_argv(name, table, readonly=readonly))),),
        (remove_command(name, force=True),),
    )


def remove_action(name: str, what: str = "dm device", *, force: bool = False) -> Action:
    return Action(f"remove {what} {name}", (remove_command(name, force=force),))


def message_command(name: str, sector: int, *words: str) -> Command:
    require_marked_name(name, what="device-mapper device")
    return Command(("dmsetup", "message", name, str(sector), *words))


def suspend_command(name: str) -> Command:
    require_marked_name(name, what="device-mapper device")
    return Command(("dmsetup", "suspend", name))


def resume_command(name: str) -> Command:
    require_marked_name(name, what="device-mapper device")
    return Command(("dmsetup", "resume", name))


def device_sectors(runner: Runner, device: str) -> int:
    """The size of any block device in 512-byte sectors."""
    return int(runner.query(["blockdev", "--getsz", device]).stdout.strip())
