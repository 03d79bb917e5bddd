"""A LUN's write-cache flag: read through the runner (blockqueue), changed by skycache-agent.

The lab's test_vmdisk_lifecycle.py outage test runs them on a real iSCSI LUN.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeRunner

from skycache import agent
from skycache.errors import NotFound
from skycache.storage.kernel import blockqueue


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


def test_agent_sets_the_queue_attribute_and_refuses_other_modes(sys_root: Path) -> None:
    agent.set_write_cache("8:16", "write through", sys_root)
    assert (sys_root / "block/sdb/queue/write_cache").read_text() == "write through\n"
    with pytest.raises(agent.AgentError, match="nonsense"):
        agent.set_write_cache("8:16", "nonsense", sys_root)
    with pytest.raises(agent.AgentError, match="'9:9'"):
        agent.set_write_cache("9:9", "write back", sys_root)


def test_agent_flush_of_a_write_through_lun_turns_the_flag_on_for_the_fsync_and_back(
    sys_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attr = sys_root / "block/sdb/queue/write_cache"
    attr.write_text("write through\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sdb").write_bytes(b"\0" * 512)
    seen: list[str] = []
    real_fsync = agent.os.fsync

    def fsync(fd: int) -> None:
        seen.append(attr.read_text().strip())  # the flag while the fsync runs
        real_fsync(fd)

    monkeypatch.setattr(agent.os, "fsync", fsync)
    agent.flush_device("8:16", sys_root, tmp_path / "dev")
    assert seen == ["write back"] and attr.read_text().strip() == "write through"


def test_blockqueue_reads_the_flag_through_the_runner() -> None:
    fake = FakeRunner(
        files={"/sys/block/sdb/queue/write_cache": "write through\n"},
        links={
            "/sys/dev/block/8:16": "/sys/devices/platform/host0/block/sdb",
            "/dev/disk/by-path/x": "/dev/sdb",
        },
    )
    assert blockqueue.write_cache(fake, "8:16") == "write through"
    assert blockqueue.write_cache(fake, "/dev/disk/by-path/x") == "write through"
    with pytest.raises(NotFound, match="'9:9'"):
        blockqueue.write_cache(fake, "9:9")


def test_blockqueue_commands_are_agent_operations() -> None:
    assert blockqueue.set_write_cache_command("/dev/disk/by-path/x", "write through").render() == (
        "skycache-agent set-write-cache /dev/disk/by-path/x 'write through'"
    )
    assert blockqueue.flush_command("8:16").render() == "skycache-agent flush-device 8:16"
    with pytest.raises(ValueError, match="nonsense"):
        blockqueue.set_write_cache_command("/dev/sdb", "nonsense")  # type: ignore[arg-type]
