"""A block device's volatile-write-cache flag (``queue/write_cache``) and a flush that reaches it.

Why skycache sets it: dm-writecache in SSD mode forwards every flush it receives to its origin
(kernel 5.7+, commit ee55b92a7391 "dm writecache: flush origin device when writing and cache is
full"; dm-cache sends flushes to its origin too). Under a VM disk the origin of the write-back cache
is the COW store's iSCSI LUN, so every flush the VM issues - and dm-snapshot's and dm-thin's own
metadata commits are flushes - waits for the repository. Seen in the lab: with the store's portal
disabled, a 4 MiB fio job stalled for the whole iSCSI replacement timeout (120 s) on its first
flush, and the flushes then failed with I/O errors, although every write was already in the local
write-back cache.

So the node marks the store LUN's queue "write through" while a write-back cache sits on it: the
block layer then completes flushes for it at once (it drops flushes for a device without a volatile
cache), and the write-back cache - persistent local storage that commits its own metadata on every
flush - is where the VM's flushes end. The price: what reaches the repository (write-back, and
dm-writecache's direct writes when it is full) is durable there only after a real flush, so every
skycache flush of a write-back cache ends with :func:`flush`, which turns the flag back on for one
fsync of the LUN (SYNCHRONIZE CACHE on the repository) and restores it.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from skycache.errors import NotFound
from skycache.plan import Command
from skycache.runner import AGENT, Runner

WriteCacheMode = Literal["write back", "write through"]
MODES: tuple[WriteCacheMode, ...] = ("write back", "write through")


def kernel_name(runner: Runner, device: str) -> str:
    """``sdb`` for ``/dev/sdb``, a symlink to it, or its ``major:minor`` (as dmsetup tables print),
    on the runner's host."""
    path = f"/sys/dev/block/{device}" if ":" in device and not device.startswith("/") else device
    resolved = runner.resolve(path)
    if resolved is None:
        raise NotFound(f"block device {device!r} does not exist")
    return PurePosixPath(resolved).name


def write_cache(runner: Runner, device: str) -> WriteCacheMode:
    """The block layer's view of the device: ``write back`` (flushes are sent) or ``write through``."""
    attr = f"/sys/block/{kernel_name(runner, device)}/queue/write_cache"
    text = runner.read_text(attr)
    if text is None:
        raise NotFound(f"{device!r} has no queue/write_cache attribute (not a whole disk?)")
    return "write through" if text.strip() == "write through" else "write back"


def set_write_cache_command(device: str, mode: WriteCacheMode) -> Command:
    """Set the flag (the node's view only: nothing is sent to the device or the iSCSI target).

    ``device`` may be a udev link that exists only once the plan has logged in: the agent resolves it
    when the command runs."""
    if mode not in MODES:
        raise ValueError(f"write cache mode must be one of {MODES}, not {mode!r}")
    return Command((AGENT, "set-write-cache", device, mode))


def flush_command(device: str) -> Command:
    """Make everything written to ``device`` durable on it: one fsync that the block layer turns into
    a real flush (SYNCHRONIZE CACHE over iSCSI), even while it is marked write through."""
    return Command((AGENT, "flush-device", device))
