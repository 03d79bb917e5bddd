"""Cache metrics of a measured fio run: counters sampled before, during and after it, and the tidy
columns made from them (docs/bench.md, "Cache metrics").

A sample is one reading of a stack's counters: each cache's ``dmsetup status`` (role ``read`` or
``write``) and, as role ``repo``, the read and write sectors of the devices through which the stack
reaches its repository, from ``/sys/dev/block/MAJ:MIN/stat`` (Documentation/block/stat.rst; sectors
there are always 512 bytes):

- iSCSI stacks: every iSCSI disk below the device fio opens (``lsblk --inverse``, transport
  ``iscsi``): the base image's LUN and, for a clone, the COW store's. Reads there crossed the network.
- local stacks: the device fio opens (an LVM image), or the block device holding the image file.

The columns of one repetition (NaN where the stack has no such cache or counter):

- ``rc_hit_ratio``: read hits / (read hits + read misses) of the read cache, deltas between the
  sample just before fio and the one just after it;
- ``rc_promotions``: blocks the read cache promoted over the measured run (delta);
- ``wb_dirty_end``: the write-back cache's unwritten blocks right after fio (dm-cache dirty blocks,
  dm-writecache used blocks);
- ``repo_read_bytes``: bytes read from the repository devices over the measured run (delta);
- ``wb_flush_s``, ``wb_flushed_bytes``: the timed flush of the write-back cache at teardown and the
  bytes written to the repository devices meanwhile (``wb_flush_dirty_bytes``: unwritten blocks x
  block size when the flush began, the estimate the counter is checked against).

:class:`Sampler` polls while fio runs, on its own thread, through the same runner.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skycache.errors import SkycacheError
from skycache.runner import CommandError, Runner
from skycache.storage.caches import cachestatus

log = logging.getLogger("skycache.bench.cachemetrics")

COLUMNS = (
    "rc_hit_ratio",
    "rc_promotions",
    "wb_dirty_end",
    "wb_flush_s",
    "wb_flushed_bytes",
    "wb_flush_dirty_bytes",
    "repo_read_bytes",
)
SAMPLE_INTERVAL_S = 0.5  # often enough for a line over a 30 s run; one dmsetup + one cat per cache each time
STAT_SECTOR = 512
_MAJMIN = re.compile(r"^\d+:\d+$")


class CounterError(SkycacheError):
    """A counter could not be read or did not have the documented layout."""


# -- block device counters ------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockStat:
    read_sectors: int
    write_sectors: int


def parse_block_stat(line: str) -> BlockStat:
    """One ``/sys/block/<dev>/stat`` line: read I/Os, read merges, read sectors, read ticks, write
    I/Os, write merges, write sectors, ... (stat.rst; older kernels print 11 fields, newer 15 or 17)."""
    fields = line.split()
    if len(fields) < 11 or not all(f.isdigit() for f in fields):
        raise CounterError(f"not a block device stat line: {line!r}")
    return BlockStat(read_sectors=int(fields[2]), write_sectors=int(fields[6]))


def block_stats(runner: Runner, devices: Sequence[str]) -> list[BlockStat]:
    """The counters of ``devices`` (``MAJ:MIN``), in order, from one ``cat``."""
    if not devices:
        return []
    for dev in devices:
        if not _MAJMIN.match(dev):
            raise CounterError(f"not a MAJ:MIN device number: {dev!r}")
    out = runner.query(["cat", *(f"/sys/dev/block/{d}/stat" for d in devices)]).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if len(lines) != len(devices):
        raise CounterError(f"{len(lines)} stat lines for {len(devices)} devices")
    return [parse_block_stat(ln) for ln in lines]


def parse_lsblk_iscsi(text: str) -> list[str]:
    """``lsblk --inverse --noheadings --raw -o MAJ:MIN,TRAN DEV``: the iSCSI disks, each once."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1] == "iscsi" and _MAJMIN.match(words[0]) and words[0] not in found:
            found.append(words[0])
    return found


def repo_devices(runner: Runner, transport: str, backend: str, device: str) -> list[str]:
    """The devices (``MAJ:MIN``) whose reads are reads from the repository (module docstring);
    empty when they cannot be found (the columns are then NaN, never a guess)."""
    try:
        if transport == "iscsi":
            argv = ["lsblk", "--inverse", "--noheadings", "--raw", "-o", "MAJ:MIN,TRAN", device]
            return _readable(runner, parse_lsblk_iscsi(runner.query(argv).stdout), device)
        if backend == "file":
            out = runner.query(["stat", "-L", "-c", "%Hd:%Ld", device]).stdout.strip()
        else:
            out = runner.query(["lsblk", "--nodeps", "--noheadings", "--raw", "-o", "MAJ:MIN", device]).stdout
            out = out.strip()
    except (SkycacheError, CommandError, OSError) as exc:
        log.warning("no repository counters for %s: %s", device, exc)
        return []
    return _readable(runner, [out] if _MAJMIN.match(out) else [], device)


def _readable(runner: Runner, devices: list[str], device: str) -> list[str]:
    """``devices`` when their counters can be read (a file on tmpfs has no block device behind it):
    checked once here, not warned about at every sample."""
    try:
        block_stats(runner, devices)
    except (SkycacheError, CommandError, OSError) as exc:
        log.warning("no repository counters for %s: %s", device, exc)
        return []
    return devices


# -- samples ------------------------------------------------------------------------------------


def cache_sample(runner: Runner, role: str, name: str) -> dict[str, Any] | None:
    """One cache's counters now (None when its status cannot be read: it is then just missing)."""
    try:
        st = cachestatus.status(runner, name)
    except (SkycacheError, CommandError):
        return None
    smp: dict[str, Any] = {"t_wall": time.time(), "role": role, "dirty": st.unwritten}
    if isinstance(st, cachestatus.CacheStatus):
        smp.update(hits=st.read_hits + st.write_hits, misses=st.read_misses + st.write_misses)
        smp.update(read_hits=st.read_hits, read_misses=st.read_misses, promotions=st.promotions)
        smp.update(demotions=st.demotions, block_bytes=st.cache_block_sectors * cachestatus.SECTOR)
    else:
        # dm-writecache has no hit/miss pair for the plot: "hits" is the blocks it holds
        smp.update(hits=st.total_blocks - st.free_blocks, misses=0, read_hits=st.read_hits)
    return smp


def take(runner: Runner, caches: Sequence[tuple[str, str]], repo: Sequence[str]) -> list[dict[str, Any]]:
    """A sample of every cache and of the repository devices (role ``repo``)."""
    out = [s for role, name in caches if (s := cache_sample(runner, role, name)) is not None]
    if repo:
        try:
            stats = block_stats(runner, repo)
        except (SkycacheError, CommandError) as exc:
            log.warning("repository counters: %s", exc)
        else:
            out.append(
                {
                    "t_wall": time.time(),
                    "role": "repo",
                    "read_bytes": sum(s.read_sectors for s in stats) * STAT_SECTOR,
                    "write_bytes": sum(s.write_sectors for s in stats) * STAT_SECTOR,
                }
            )
    return out


# -- columns ------------------------------------------------------------------------------------


def _by_key(samples: Sequence[Mapping[str, Any]], role: str) -> dict[str, Mapping[str, Any]]:
    """The last sample of ``role`` per host (a hosts run has one stack per fio server)."""
    return {str(s.get("host", "")): s for s in samples if s.get("role") == role}


def _delta_sum(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], role: str, key: str
) -> float:
    b, a = _by_key(before, role), _by_key(after, role)
    pairs = [(b[h], a[h]) for h in a if h in b and key in a[h] and key in b[h]]
    if not pairs:
        return math.nan
    return float(sum(float(y[key]) - float(x[key]) for x, y in pairs))


def measured(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The columns of the measured run from the samples just before and just after fio."""
    hits = _delta_sum(before, after, "read", "read_hits")
    misses = _delta_sum(before, after, "read", "read_misses")
    reads = hits + misses
    dirty = [float(s["dirty"]) for s in _by_key(after, "write").values() if "dirty" in s]
    return known(
        {
            "rc_hit_ratio": hits / reads if reads > 0 else math.nan,
            "rc_promotions": _delta_sum(before, after, "read", "promotions"),
            "wb_dirty_end": float(sum(dirty)) if dirty else math.nan,
            "repo_read_bytes": _delta_sum(before, after, "repo", "read_bytes"),
        }
    )


def known(columns: Mapping[str, float]) -> dict[str, float]:
    """The columns that have a value: conditions.jsonl stays plain JSON (no NaN); the tidy table
    gives the missing ones NaN."""
    return {k: v for k, v in columns.items() if math.isfinite(v)}


def merge_flushes(flushes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One repetition's flush columns from each site's flushes (times and bytes add up: sites are
    torn down one after another)."""
    out: dict[str, float] = {}
    for f in flushes:
        for k, v in f.items():
            out[k] = out.get(k, 0.0) + v
    return known(out)


# -- the sampler thread -------------------------------------------------------------------------


@dataclass
class Sampler:
    """Calls ``take`` every ``interval_s`` on its own thread until :meth:`stop`.

    The first error ends the sampling (recorded in ``error``; the samples so far are kept): a counter
    that cannot be read must not stop fio or the run, and must not be retried every half second.
    """

    take: Callable[[], list[dict[str, Any]]]
    interval_s: float = SAMPLE_INTERVAL_S
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="skycache-cache-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples += self.take()
            except Exception as exc:  # a thread's exception would otherwise be lost
                self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("cache sampler stopped: %s", self.error)
                return

    def stop(self) -> list[dict[str, Any]]:
        """Stop and wait for the thread (a sample under way finishes first); the samples taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
