"""Devices the user names for skycache to take (``repo init --device``, ``node init --device``).

skycache changes only what it created (docs/storage.md, "Safety"); a disk the user names is the one
exception, so it is checked first, at planning time, from the View's facts
(:mod:`skycache.storage.kernel.blockdev`): a device that does not exist or is not a block device is
refused outright; one with a filesystem, a partition table, an LVM or other signature, a mount, swap,
a partition or a device stacked on it is refused by name with every reason found, unless the user
forces it. A forced device is named in the plan's notes, so ``--dry-run`` shows what is overridden.
"""

from __future__ import annotations

from collections.abc import Sequence

from skycache.errors import Busy, InvalidInput
from skycache.storage.kernel import blockdev
from skycache.storage.view import View


def check_free(view: View, devices: Sequence[str], *, force: bool = False) -> list[str]:
    """Refuse devices in use (or not devices at all); with ``force``, the notes that say what a plan
    overrides (empty when every device is free)."""
    seen: dict[str, str] = {}
    notes: list[str] = []
    for path in devices:
        dev = view.block_device(path)
        fatal = blockdev.unusable(dev)
        if fatal is not None:
            raise InvalidInput(f"device {path!r} {fatal}")
        canonical = view.runner.resolve(path) or path
        if canonical in seen:
            raise InvalidInput(f"device {path!r} is given twice (also as {seen[canonical]!r})")
        seen[canonical] = path
        found = blockdev.problems(dev)
        if not found:
            continue
        if not force:
            raise Busy(f"device {path!r} is not free: {'; '.join(found)} (--force takes it anyway)")
        notes.append(f"--force: {path} is taken although {'; '.join(found)}")
    return notes
