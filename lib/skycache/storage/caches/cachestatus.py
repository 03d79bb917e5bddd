"""Status of dm-cache and dm-writecache devices: typed records, dirty counts, and flushing.

Pure parsers turn one ``dmsetup status`` line into a frozen record; the thin layer below them runs
``dmsetup`` through the runner. Formats follow the kernel's
Documentation/admin-guide/device-mapper/cache.rst and writecache.rst (checked against Debian's 6.1
kernel in the lab; recorded lines are in tests/unit/data/cache/).

Flushing is what makes a write-back cache safe to drop (docs/caches.md; docs/architecture.md, "Safety"):

- dm-writecache: the ``cleaner`` message makes the target write back everything and stop caching new
  writes; it is clean when free blocks == total blocks, nothing is under writeback and the error
  indicator is 0.
- dm-cache: the table is reloaded with the ``cleaner`` policy (it writes back every dirty block and
  promotes nothing); clean means dirty == 0 with metadata mode ``rw`` and no ``needs_check``.

A flush ends with a flush of the origin device itself (``skycache-agent flush-device``): the
written-back blocks are then durable on the repository, also when the node marks the origin LUN
"write through" (why it does: kernel.blockqueue's docstring). A flush is a sequence of plan steps
(:func:`flush_steps`): the commands that start it, a wait until the cache is clean, the origin flush.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from skycache.errors import NotFound, SkycacheError
from skycache.ownership import require_marked_name
from skycache.plan import Action, Command, Plan, Step, Wait
from skycache.runner import AGENT, CommandError, Runner

SECTOR = 512


class StatusParseError(SkycacheError):
    """A ``dmsetup status`` line did not have the documented layout."""


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStatus:
    """One dm-cache status line (cache.rst, "Status")."""

    length_sectors: int
    metadata_block_sectors: int
    metadata_used: int
    metadata_total: int
    cache_block_sectors: int
    cache_used: int
    cache_total: int
    read_hits: int
    read_misses: int
    write_hits: int
    write_misses: int
    demotions: int
    promotions: int
    dirty: int
    features: tuple[str, ...]
    core_args: tuple[tuple[str, str], ...]
    policy: str
    policy_args: tuple[str, ...]
    metadata_mode: str  # "rw" or "ro"
    needs_check: bool

    kind = "cache"

    @property
    def io_mode(self) -> str:
        """writethrough, writeback or passthrough (the kernel's default is writethrough)."""
        for mode in ("writeback", "passthrough", "writethrough"):
            if mode in self.features:
                return mode
        return "writethrough"

    @property
    def clean(self) -> bool:
        return self.dirty == 0 and self.metadata_mode == "rw" and not self.needs_check

    @property
    def unwritten(self) -> int:
        return self.dirty

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(kind=self.kind, io_mode=self.io_mode, clean=self.clean, unwritten=self.unwritten)
        return d


@dataclass(frozen=True)
class WritecacheStatus:
    """One dm-writecache status line (writecache.rst, "Status").

    Kernels before 5.15 print only the first four numbers; the statistics are then 0.
    """

    length_sectors: int
    error: int
    total_blocks: int
    free_blocks: int
    writeback_blocks: int
    read_blocks: int = 0
    read_hits: int = 0
    write_blocks: int = 0
    write_hits_uncommitted: int = 0
    write_hits_committed: int = 0
    write_bypass: int = 0
    write_allocated: int = 0
    write_freelist_blocked: int = 0
    flush_requests: int = 0
    discarded_blocks: int = 0

    kind = "writecache"

    @property
    def unwritten(self) -> int:
        """Blocks whose data is not yet on the origin (every used block: written-back blocks are freed)."""
        return self.total_blocks - self.free_blocks

    @property
    def clean(self) -> bool:
        return self.error == 0 and self.free_blocks == self.total_blocks and self.writeback_blocks == 0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(kind=self.kind, clean=self.clean, unwritten=self.unwritten)
        return d


AnyCacheStatus = CacheStatus | WritecacheStatus


# -- pure parsers ---------------------------------------------------------------------------------


def _int(tok: str, line: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise StatusParseError(f"unexpected field {tok!r} in status line {line!r}") from None


def _ratio(tok: str, line: str) -> tuple[int, int]:
    used, sep, total = tok.partition("/")
    if not sep:
        raise StatusParseError(f"expected used/total, got {tok!r} in status line {line!r}")
    return _int(used, line), _int(total, line)


def _split_target(line: str, expected: str) -> tuple[int, list[str]]:
    """``<start> <length> <target> <fields...>`` -> (length, fields); checks the target type."""
    toks = line.split()
    if len(toks) < 3:
        raise StatusParseError(f"status line too short: {line!r}")
    if toks[2] != expected:
        raise StatusParseError(f"not a {expected} target: {line!r}")
    return _int(toks[1], line), toks[3:]


def parse_cache_status(line: str) -> CacheStatus:
    """Parse ``dmsetup status`` of a dm-cache device (one line, with the start/length/target prefix)."""
    length, f = _split_target(line.strip(), "cache")
    if f and f[0] == "Fail":
        # The target prints just "Fail" when its metadata device failed (cache_status in dm-cache-target.c).
        raise StatusParseError(f"dm-cache reports failure: {line!r}")
    try:
        meta_bs = _int(f[0], line)
        meta_used, meta_total = _ratio(f[1], line)
        cache_bs = _int(f[2], line)
        cache_used, cache_total = _ratio(f[3], line)
        counters = [_int(t, line) for t in f[4:11]]
        i = 11
        nfeat = _int(f[i], line)
        features = tuple(f[i + 1 : i + 1 + nfeat])
        i += 1 + nfeat
        ncore = _int(f[i], line)
        core = f[i + 1 : i + 1 + ncore]
        i += 1 + ncore
        policy = f[i]
        npol = _int(f[i + 1], line)
        policy_args = tuple(f[i + 2 : i + 2 + npol])
        i += 2 + npol
        mode = f[i]
        needs = f[i + 1] if len(f) > i + 1 else "-"
    except IndexError:
        raise StatusParseError(f"dm-cache status line too short: {line!r}") from None
    if len(core) % 2:
        raise StatusParseError(f"dm-cache core args are not key/value pairs: {line!r}")
    return CacheStatus(
        length_sectors=length,
        metadata_block_sectors=meta_bs,
        metadata_used=meta_used,
        metadata_total=meta_total,
        cache_block_sectors=cache_bs,
        cache_used=cache_used,
        cache_total=cache_total,
        read_hits=counters[0],
        read_misses=counters[1],
        write_hits=counters[2],
        write_misses=counters[3],
        demotions=counters[4],
        promotions=counters[5],
        dirty=counters[6],
        features=features,
        core_args=tuple((core[j], core[j + 1]) for j in range(0, len(core), 2)),
        policy=policy,
        policy_args=policy_args,
        metadata_mode=mode,
        needs_check=needs == "needs_check",
    )


def parse_writecache_status(line: str) -> WritecacheStatus:
    """Parse ``dmsetup status`` of a dm-writecache device."""
    length, f = _split_target(line.strip(), "writecache")
    nums = [_int(t, line) for t in f]
    if len(nums) < 4:
        raise StatusParseError(f"dm-writecache status line too short: {line!r}")
    nums += [0] * (14 - len(nums))
    return WritecacheStatus(length, *nums[:14])


def parse_status(line: str) -> AnyCacheStatus:
    """Parse a status line of either target, by its target type."""
    toks = line.split()
    target = toks[2] if len(toks) > 2 else ""
    if target == "cache":
        return parse_cache_status(line)
    if target == "writecache":
        return parse_writecache_status(line)
    raise StatusParseError(f"not a cache or writecache target: {line!r}")


def cleaner_table(table_line: str) -> str:
    """The dm-cache table line with its policy replaced by ``cleaner`` (no policy args).

    Table: ``<start> <len> cache <meta> <cache> <origin> <block size> <#features> <features>*
    <policy> <#policy args> <policy args>*`` (cache.rst, "Constructor").
    """
    toks = table_line.split()
    if len(toks) < 9 or toks[2] != "cache":
        raise StatusParseError(f"not a dm-cache table: {table_line!r}")
    nfeat = _int(toks[7], table_line)
    policy_at = 8 + nfeat
    if len(toks) < policy_at + 2:
        raise StatusParseError(f"dm-cache table too short: {table_line!r}")
    return " ".join([*toks[:policy_at], "cleaner", "0"])


# -- the thin layer that runs dmsetup -----------------------------------------------------------


def status(runner: Runner, dm_name: str) -> AnyCacheStatus:
    """The parsed status of one dm-cache/dm-writecache device (single-target tables only)."""
    try:
        out = runner.query(["dmsetup", "status", dm_name]).stdout
    except CommandError as exc:
        if "No such device" in exc.stderr or "not exist" in exc.stderr:
            raise NotFound(f"dm device {dm_name!r} does not exist") from exc
        raise
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise StatusParseError(f"dm device {dm_name!r} has {len(lines)} targets; expected one")
    return parse_status(lines[0])


def dirty_count(runner: Runner, dm_name: str) -> int:
    """Blocks not yet written to the origin: dm-cache dirty blocks, or dm-writecache used blocks."""
    return status(runner, dm_name).unwritten


def table_line(runner: Runner, dm_name: str) -> str:
    """The device's one-target table line, as ``dmsetup table`` prints it (to restore after a flush)."""
    return _table(runner, dm_name)


def _table(runner: Runner, dm_name: str) -> str:
    lines = [ln for ln in runner.query(["dmsetup", "table", dm_name]).stdout.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise StatusParseError(f"dm device {dm_name!r} has {len(lines)} targets; expected one")
    return lines[0]


def origin_of(table_line: str) -> str:
    """The origin device (``major:minor`` as dmsetup prints it) of a dm-writecache or dm-cache table
    line: ``0 N writecache s ORIGIN CACHE ...`` / ``0 N cache META DATA ORIGIN ...``."""
    words = table_line.split()
    if len(words) >= 5 and words[2] == "writecache":
        return words[4]
    if len(words) >= 6 and words[2] == "cache":
        return words[5]
    raise StatusParseError(f"not a dm-writecache or dm-cache table: {table_line!r}")


def block_bytes(table_line: str) -> int:
    """The cache block size in bytes of a dm-cache or dm-writecache table line: ``0 N cache META DATA
    ORIGIN BLOCK_SECTORS ...`` (sectors) / ``0 N writecache s|p ORIGIN CACHE BLOCK_BYTES ...``
    (bytes), as cache.rst and writecache.rst give the constructors."""
    words = table_line.split()
    if len(words) >= 7 and words[2] == "writecache":
        return _int(words[6], table_line)
    if len(words) >= 7 and words[2] == "cache":
        return _int(words[6], table_line) * SECTOR
    raise StatusParseError(f"not a dm-writecache or dm-cache table: {table_line!r}")


@dataclass(frozen=True)
class CacheClean:
    """A :class:`skycache.plan.Wait` probe: the write-back cache has written every block back.

    Raises when the target reports an error or needs_check: the cache is then NOT clean and must not
    be discarded.
    """

    name: str

    def describe(self) -> str:
        return f"{self.name} has no unwritten block"

    def poll(self, runner: Runner) -> tuple[bool, str | None]:
        st = status(runner, self.name)
        if isinstance(st, WritecacheStatus) and st.error:
            raise SkycacheError(f"dm-writecache {self.name!r} reports error {st.error}; cache not flushed")
        if isinstance(st, CacheStatus) and (st.needs_check or st.metadata_mode != "rw"):
            raise SkycacheError(
                f"dm-cache {self.name!r} metadata is {st.metadata_mode}"
                f"{' and needs_check' if st.needs_check else ''}; cache not flushed"
            )
        return st.clean, f"{self.name}: {st.unwritten} blocks to write back"


def start_flush_commands(name: str, table_line: str) -> tuple[Command, ...]:
    """Switch the device into write-everything-back mode (from its current table line).

    dm-writecache: ``flush`` commits pending writes; ``cleaner`` then writes every block back and
    stops new caching. dm-cache: the table is reloaded with the ``cleaner`` policy; suspend writes
    nothing back by itself (no data loss), resume activates the cleaner table.
    """
    require_marked_name(name, what="dm device")
    target = table_line.split()[2] if len(table_line.split()) > 2 else ""
    if target == "writecache":
        return (
            Command(("dmsetup", "message", name, "0", "flush")),
            Command(("dmsetup", "message", name, "0", "cleaner")),
        )
    if target != "cache":
        raise StatusParseError(f"{name} is not a dm-cache or dm-writecache device: {table_line!r}")
    words = table_line.split()
    nfeat = _int(words[7], table_line)
    if words[8 + nfeat] == "cleaner":
        return ()
    return (
        Command(("dmsetup", "reload", name, "--table", cleaner_table(table_line))),
        Command(("dmsetup", "suspend", name)),
        Command(("dmsetup", "resume", name)),
    )


def flush_device_command(origin: str) -> Command:
    """A flush that reaches ``origin`` (``major:minor``) even while it is marked write through."""
    return Command((AGENT, "flush-device", origin))


def flush_steps(
    name: str, table_line: str, *, timeout_s: float = 600, durable_on: str | None = None
) -> tuple[Step, ...]:
    """Write back every dirty block of ``name``, wait until it is clean, then flush the device the
    data must be durable on (kernel.blockqueue says why that needs its own flush): the cache's origin,
    or ``durable_on`` when the origin is itself a dm device over it (a read cache over a LUN)."""
    return (
        *start_flush_commands(name, table_line),
        Wait(CacheClean(name), timeout_s=timeout_s),
        flush_device_command(durable_on or origin_of(table_line)),
    )


def resume_caching_commands(name: str, table_line: str) -> tuple[Command, ...]:
    """Undo the mode a flush left behind: load the table the device had before the flush again.
    dm-cache gets its smq policy back and dm-writecache leaves cleaner mode; the contents are kept
    (both reopen their metadata), so this is safe once the flush has finished."""
    require_marked_name(name, what="dm device")
    return (
        Command(("dmsetup", "reload", name, "--table", table_line)),
        Command(("dmsetup", "suspend", name)),
        Command(("dmsetup", "resume", name)),
    )


def flush(
    runner: Runner,
    dm_name: str,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float = 600,
) -> None:
    """Flush ``dm_name`` now (tests and scripts; verbs put :func:`flush_steps` in their plans).

    ``on_progress`` gets the unwritten block count before the flush starts, then each time it changes.
    """
    require_marked_name(dm_name, what="dm device")
    first = status(runner, dm_name).unwritten
    if on_progress is not None:
        on_progress(first)

    def progress(note: str) -> None:
        count = int(note.rsplit(": ", 1)[1].split()[0])
        if on_progress is not None and count != first:
            on_progress(count)

    steps = flush_steps(dm_name, _table(runner, dm_name), timeout_s=timeout_s)
    Plan(f"flush {dm_name}", [Action(f"flush {dm_name}", steps)]).apply(runner, progress)
