"""Disks at risk (issue 18): a device the user names is refused at planning time when it is not a
block device or anything is on it, by name and reason, unless forced; the forced plan says so.

The facts are recorded real outputs of lsblk and wipefs (tests/unit/data/storage/blockdev/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeRunner
from typer.testing import CliRunner

from skycache.errors import Busy, InvalidInput
from skycache.storage import devices, node, repository
from skycache.storage.kernel import blockdev
from skycache.storage.view import View

DATA = Path(__file__).parent / "data" / "storage" / "blockdev"


def text(name: str) -> str:
    return (DATA / name).read_text()


def disk(
    path: str,
    lsblk: str,
    wipefs: str = "wipefs_zram0_empty.json",
    *,
    holders: tuple[str, ...] = (),
    wipefs_rc: int = 0,
) -> FakeRunner:
    """A fake host on which ``path`` exists and lsblk/wipefs answer with recorded output."""
    fake = FakeRunner()
    fake.files[path] = ""
    kname = Path(path).name
    for h in holders:
        fake.files[f"/sys/class/block/{kname}/holders/{h}"] = ""
    fake.reply(*blockdev.lsblk_argv(path), stdout=text(lsblk))
    if wipefs_rc == 0:
        fake.reply(*blockdev.wipefs_argv(path), stdout=text(wipefs))
    else:
        fake.reply(*blockdev.wipefs_argv(path), stderr=text(wipefs), rc=wipefs_rc)
    return fake


def test_argv_of_the_reads() -> None:
    assert blockdev.lsblk_argv("/dev/vdb") == [
        "lsblk", "--json", "-p", "-o", "NAME,TYPE,FSTYPE,MOUNTPOINTS,PTTYPE", "--", "/dev/vdb"
    ]  # fmt: skip
    assert blockdev.wipefs_argv("/dev/vdb") == ["wipefs", "--no-act", "--json", "--", "/dev/vdb"]


def test_parsers_on_recorded_output() -> None:
    n = blockdev.parse_lsblk(text("lsblk_vda_root.json"))
    assert n is not None and (n.name, n.type, n.mountpoints) == ("/dev/vda", "disk", ("/",))
    assert blockdev.parse_lsblk(text("lsblk_null.json")) is None
    (sig,) = blockdev.parse_wipefs(text("wipefs_loop_ext4.json"))
    assert (sig.type, sig.offset, sig.label) == ("ext4", "0x438", "skyrec")
    assert [s.type for s in blockdev.parse_wipefs(text("wipefs_dos.json"))] == ["dos"]
    assert [s.type for s in blockdev.parse_wipefs(text("wipefs_swap.json"))] == ["swap"]
    assert blockdev.parse_wipefs(text("wipefs_zram0_empty.json")) == ()


def test_reads_go_through_the_runner_read_only() -> None:
    fake = disk("/dev/loop0", "lsblk_loop_ext4.json", "wipefs_loop_ext4.json", holders=("dm-3",))
    dev = View(fake).block_device("/dev/loop0")
    assert dev.is_block and dev.holders == ("dm-3",)
    assert fake.ran("run") == []  # nothing that changes the host
    assert fake.ran("query") == [
        "lsblk --json -p -o NAME,TYPE,FSTYPE,MOUNTPOINTS,PTTYPE -- /dev/loop0",
        "wipefs --no-act --json -- /dev/loop0",
    ]


@pytest.mark.parametrize(
    ("lsblk", "wipefs", "reason"),
    [
        ("lsblk_loop_ext4.json", "wipefs_loop_ext4.json", "signature ext4 (offset 0x438, label 'skyrec')"),
        ("lsblk_zram0_free.json", "wipefs_dos.json", "signature dos (offset 0x1fe)"),
        ("lsblk_zram0_free.json", "wipefs_swap.json", "signature swap (offset 0xff6)"),
    ],
)
def test_a_signature_is_refused_by_name(lsblk: str, wipefs: str, reason: str) -> None:
    fake = disk("/dev/vdb", lsblk, wipefs)
    with pytest.raises(Busy, match="device '/dev/vdb' is not free") as err:
        repository.plan_init_lvm(View(fake), "r1", devices=["/dev/vdb"])
    assert reason in str(err.value) and "--force" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_mounted_disk_is_refused_even_when_its_signatures_cannot_be_read() -> None:
    fake = disk("/dev/vda", "lsblk_vda_root.json", "wipefs_vda_eperm.stderr", wipefs_rc=1)
    with pytest.raises(Busy) as err:
        repository.plan_init_lvm(View(fake), "r1", devices=["/dev/vda"])
    msg = str(err.value)
    assert "/dev/vda is mounted at /" in msg
    assert "its signatures could not be read (wipefs: error: /dev/vda: probing initialization failed" in msg


def test_not_a_block_device_or_missing_is_refused_even_forced() -> None:
    fake = FakeRunner()
    fake.files["/dev/null"] = ""
    lsblk = blockdev.lsblk_argv("/dev/null")
    fake.reply(*lsblk, stdout=text("lsblk_null.json"), stderr=text("lsblk_null.stderr"), rc=32)
    with pytest.raises(InvalidInput, match=r"'/dev/null' is not a block device \(lsblk: /dev/null: not a"):
        repository.plan_init_lvm(View(fake), "r1", devices=["/dev/null"], force=True)
    with pytest.raises(InvalidInput, match="device '/dev/nosuch' does not exist"):
        node.plan_init(View(FakeRunner()), "n1", devices=["/dev/nosuch"], force=True)
    assert [c for c in fake.calls if c.argv[0] == "wipefs"] == []  # not probed: not a device


def test_holders_partitions_and_swap_are_reasons() -> None:
    dev = blockdev.BlockDevice(
        "/dev/sdb",
        exists=True,
        node=blockdev.Node(
            "/dev/sdb",
            "disk",
            pttype="gpt",
            children=(
                blockdev.Node("/dev/sdb1", "part", fstype="ext4", pttype="gpt", mountpoints=("/boot",)),
                blockdev.Node("/dev/sdb2", "part", mountpoints=("[SWAP]",)),
            ),
        ),
        holders=("dm-0",),
    )
    assert blockdev.problems(dev) == [
        "/dev/sdb1 is mounted at /boot",
        "/dev/sdb2 is active swap",
        "partition /dev/sdb1 is on it",
        "partition /dev/sdb2 is on it",
        "dm-0 is stacked on it (holders)",
        "udev records a gpt partition table on it",
    ]


def test_a_free_disk_is_taken_without_notes() -> None:
    fake = disk("/dev/zram0", "lsblk_zram0_free.json")
    plan = node.plan_init(View(fake), "n1", devices=["/dev/zram0"])
    assert plan.notes == []
    assert plan.commands()[0] == "pvcreate -y /dev/zram0"


def test_forced_plan_names_what_it_overrides() -> None:
    fake = disk("/dev/loop0", "lsblk_loop_ext4.json", "wipefs_loop_ext4.json")
    plan = repository.plan_init_lvm(View(fake), "r1", devices=["/dev/loop0"], force=True)
    assert plan.commands()[0] == "pvcreate -y /dev/loop0"
    (note,) = plan.notes
    assert note.startswith("--force: /dev/loop0 is taken although signature ext4")
    assert any(line == f"  note: {note}" for line in plan.describe())


def test_the_same_disk_twice_is_refused() -> None:
    fake = disk("/dev/zram0", "lsblk_zram0_free.json")
    fake.links["/dev/disk/by-id/z"] = "/dev/zram0"
    fake.files["/dev/disk/by-id/z"] = ""
    fake.reply(*blockdev.lsblk_argv("/dev/disk/by-id/z"), stdout=text("lsblk_zram0_free.json"))
    fake.reply(*blockdev.wipefs_argv("/dev/disk/by-id/z"), stdout=text("wipefs_zram0_empty.json"))
    with pytest.raises(InvalidInput, match="given twice"):
        devices.check_free(View(fake), ["/dev/zram0", "/dev/disk/by-id/z"])


def test_cli_refuses_and_force_shows_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from skycache.cli import node as node_cli
    from skycache.cli import storage as storage_cli
    from skycache.cli.main import app

    fake = disk("/dev/loop0", "lsblk_loop_ext4.json", "wipefs_loop_ext4.json")
    monkeypatch.setattr(storage_cli, "cli_runner", lambda: fake)
    monkeypatch.setattr(node_cli, "cli_runner", lambda: fake)
    cli = CliRunner()
    refused = cli.invoke(app, ["repo", "init", "r1", "--device", "/dev/loop0", "--dry-run"])
    assert isinstance(refused.exception, Busy) and "pvcreate" not in refused.output
    args = ["node", "init", "--cache-vg", "n1", "--device", "/dev/loop0", "--force", "--dry-run"]
    forced = cli.invoke(app, args)
    assert forced.exit_code == 0, forced.output
    assert "note: --force: /dev/loop0 is taken although signature ext4" in forced.output
    assert fake.ran("run") == []
