"""Issue 18, disks at risk, on a real kernel: ``repo init --device`` on a disk that has a filesystem
is refused at planning time and the disk is left exactly as it was (checksum before and after); a
mounted disk, /dev/null and a missing path are refused too; with ``--force`` the repository is made
and the plan said what it overrode."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage import sk, sk_json

from skycache.runner import Runner

DISK_MIB = 64


def whole_sha(runner: Runner, device: str, scratch: Path) -> str:
    """sha256 of every byte of ``device`` (it is small)."""
    out = scratch / "device-safety-readback"
    runner.run(["dd", f"if={device}", f"of={out}", "bs=1M", "iflag=direct", "status=none"])
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


@pytest.fixture
def ext4_disk(runner: Runner, scratch_dir: Path) -> Iterator[str]:
    """A loop disk of 64 MiB with an ext4 filesystem on it (not skycache's: its own backing file)."""
    backing = scratch_dir / "device-safety.img"
    runner.run(["truncate", "-s", f"{DISK_MIB}M", str(backing)])
    loop = runner.run(["losetup", "--find", "--show", str(backing)]).stdout.strip()
    try:
        runner.run(["mkfs.ext4", "-q", "-F", "-L", "dsafe", loop])
        yield loop
    finally:
        sk(runner, "repo", "delete", "dsafe", check=False)
        runner.run(["vgremove", "-y", "-f", "dsafe"], check=False)
        runner.run(["pvremove", "-y", loop], check=False)
        runner.run(["umount", "-l", str(scratch_dir / "device-safety-mnt")], check=False)
        runner.run(["losetup", "-d", loop], check=False)
        backing.unlink(missing_ok=True)


def test_a_disk_with_a_filesystem_is_refused_and_unchanged(
    runner: Runner, ext4_disk: str, scratch_dir: Path
) -> None:
    before = whole_sha(runner, ext4_disk, scratch_dir)
    for args in (("--dry-run",), ()):
        refused = sk(runner, "repo", "init", "dsafe", "--device", ext4_disk, *args, check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"skycache: error: device '{ext4_disk}' is not free: ")
        assert "signature ext4" in line and "--force" in line
        assert "pvcreate" not in refused.stdout
    assert whole_sha(runner, ext4_disk, scratch_dir) == before
    assert "dsafe" not in runner.query(["vgs", "--noheadings", "-o", "vg_name"]).stdout.split()
    node = sk(runner, "node", "init", "--cache-vg", "dsafe", "--device", ext4_disk, check=False)
    assert node.returncode == 1 and "is not free" in node.stderr
    assert whole_sha(runner, ext4_disk, scratch_dir) == before


def test_mounted_null_and_missing_devices_are_refused(
    runner: Runner, ext4_disk: str, scratch_dir: Path
) -> None:
    mnt = scratch_dir / "device-safety-mnt"
    mnt.mkdir(exist_ok=True)
    runner.run(["mount", ext4_disk, str(mnt)])
    try:
        refused = sk(runner, "repo", "init", "dsafe", "--device", ext4_disk, "--dry-run", check=False)
        assert refused.returncode == 1 and f"{ext4_disk} is mounted at {mnt}" in refused.stderr
    finally:
        runner.run(["umount", str(mnt)])
    for device, why in (("/dev/null", "is not a block device"), ("/dev/nosuch", "does not exist")):
        done = sk(runner, "repo", "init", "dsafe", "--device", device, "--force", "--dry-run", check=False)
        assert done.returncode == 2 and f"device '{device}' {why}" in done.stderr, done.stderr


def test_force_takes_the_disk_and_the_plan_says_so(runner: Runner, ext4_disk: str) -> None:
    shown = sk(runner, "repo", "init", "dsafe", "--device", ext4_disk, "--force", "--dry-run")
    assert f"note: --force: {ext4_disk} is taken although signature ext4" in shown.stdout
    assert f"$ pvcreate -y {ext4_disk}" in shown.stdout
    sk(runner, "repo", "init", "dsafe", "--device", ext4_disk, "--force")
    (repo,) = [r for r in sk_json(runner, "repo", "list") if r["name"] == "dsafe"]
    assert repo["backend"] == "lvm"
    sigs = json.loads(runner.query(["wipefs", "--no-act", "--json", "--", ext4_disk]).stdout)["signatures"]
    assert [s["type"] for s in sigs] == ["LVM2_member"]  # pvcreate -y wiped the ext4 signature
    sk(runner, "repo", "delete", "dsafe")
