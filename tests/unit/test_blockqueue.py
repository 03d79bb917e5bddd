"""blockqueue: the commands that set a LUN's write-cache flag and make its data durable (argv only:
the lab's test_vmdisk_lifecycle.py outage test runs them for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycache.errors import NotFound
from skycache.runner import Completed
from skycache.storage.kernel import blockqueue


class Recorder:
    dry_run = False

    def __init__(self, attr: Path | None = None) -> None:
        self.ran: list[tuple[list[str], str | None]] = []
        self.attr = attr

    def run(self, argv: list[str], *, stdin: str | None = None, **_: object) -> Completed:
        self.ran.append((list(argv), stdin))
        if argv[0] == "tee" and self.attr is not None and stdin is not None:
            self.attr.write_text(stdin)  # what the kernel would show after the write
        return Completed(tuple(argv), 0, "", "")


@pytest.fixture
def sys_root(tmp_path: Path) -> Path:
    """A /sys with disk sdb (8:16) whose queue says write back, and /dev/sdb to resolve."""
    sys_root = tmp_path / "sys"
    queue = sys_root / "block" / "sdb" / "queue"
    queue.mkdir(parents=True)
    (queue / "write_cache").write_text("write back\n")
    (sys_root / "dev" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / "8:16").symlink_to(sys_root / "block" / "sdb")
    return sys_root


def test_set_write_cache_writes_the_queue_attribute(sys_root: Path) -> None:
    r = Recorder()
    blockqueue.set_write_cache(r, "8:16", "write through", sys_root=sys_root)  # type: ignore[arg-type]
    assert r.ran == [(["tee", str(sys_root / "block/sdb/queue/write_cache")], "write through\n")]
    with pytest.raises(ValueError, match="nonsense"):
        blockqueue.set_write_cache(r, "8:16", "nonsense", sys_root=sys_root)  # type: ignore[arg-type]


def test_flush_of_a_write_through_lun_turns_the_flag_on_for_the_fsync(sys_root: Path) -> None:
    attr = sys_root / "block/sdb/queue/write_cache"
    attr.write_text("write through\n")
    r = Recorder(attr)
    blockqueue.flush(r, "8:16", sys_root=sys_root)  # type: ignore[arg-type]
    assert r.ran == [
        (["tee", str(attr)], "write back\n"),
        (["sync", "/dev/sdb"], None),
        (["tee", str(attr)], "write through\n"),
    ]
    assert blockqueue.write_cache("8:16", sys_root=sys_root) == "write through"


def test_flush_of_a_write_back_device_is_one_fsync(sys_root: Path) -> None:
    r = Recorder()
    blockqueue.flush(r, "8:16", sys_root=sys_root)  # type: ignore[arg-type]
    assert r.ran == [(["sync", "/dev/sdb"], None)]


def test_missing_device_is_named(sys_root: Path) -> None:
    with pytest.raises(NotFound, match="'9:9'"):
        blockqueue.write_cache("9:9", sys_root=sys_root)
    with pytest.raises(NotFound, match="/dev/nosuch"):
        blockqueue.write_cache("/dev/nosuch", sys_root=sys_root)
