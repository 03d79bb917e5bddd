"""The library manages a remote host through its runner alone: no local file, sysfs or configfs.

Repository init, image create and clone, export, attach and a VM-disk clone with both caches are
planned and applied against a recording runner whose target is a host reached over ssh. The fake
answers the queries with the reports a host would give (LVM JSON, iscsiadm, skycache-agent) and
plays the files the plans write there; meanwhile every local file access outside Python's own
installation and the test's temporary directory fails the test, and rtslib (configfs) cannot be
imported at all.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeRunner

from skycache.plan import Action, Plan, Wait
from skycache.runner import SshTarget
from skycache.storage import image, node, repository
from skycache.storage.kernel import iscsi
from skycache.storage.view import View
from skycache.storage.vmdisk import clone

MiB = 1 << 20
PREFIX = "iqn.2026-11.org.skycache"
ALLOWED = tuple(
    {sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), "/proc/self", "/dev/null", "/dev/urandom"}
)


def report(key: str, rows: list[dict[str, Any]]) -> str:
    return json.dumps({"report": [{key: rows}]})


def vg(name: str, tags: str, size: int = 1 << 30, free: int = 900 * MiB) -> dict[str, Any]:
    return {"vg_name": name, "vg_size": str(size), "vg_free": str(free), "vg_tags": tags, "pv_count": "1",
            "lv_count": "0", "vg_extent_size": str(4 * MiB)}  # fmt: skip


def lv(
    vg_name: str, name: str, size: int, attr: str = "-wi-a-----", tags: str = "skycache", **kw: str
) -> dict[str, Any]:
    return {"vg_name": vg_name, "lv_name": name, "lv_size": str(size), "lv_attr": attr, "lv_tags": tags,
            "origin": kw.get("origin", ""), "pool_lv": "", "lv_path": f"/dev/{vg_name}/{name}",
            "lv_dm_path": f"/dev/mapper/{vg_name}-{name}", "segtype": kw.get("segtype", "linear"),
            "data_percent": "", "lv_uuid": f"uuid-{name}"}  # fmt: skip


def export(iqn: str) -> dict[str, Any]:
    return {
        "iqn": iqn,
        "storage_object": "skycache-" + iqn.split(":")[1],
        "plugin": "block",
        "device": "/dev/mapper/x",
        "initiators": [f"{PREFIX}.lab:node1"],
        "read_only": False,
        "chap": True,
        "portals": ["0.0.0.0:3260"],
    }


@pytest.fixture
def no_local_access(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Fail on any local file access a planner could make (tmp_path and Python itself excepted)."""
    touched: list[str] = []
    allowed = (*ALLOWED, str(tmp_path), *sys.path)

    def check(path: object) -> None:
        p = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else ""
        if p and os.path.isabs(p) and not p.startswith(tuple(a for a in allowed if a)):
            touched.append(p)
            raise AssertionError(f"local access to {p} while managing a remote host")

    def wrap(fn: Any) -> Any:
        def guarded(path: Any, *a: Any, **k: Any) -> Any:
            check(path)
            return fn(path, *a, **k)

        return guarded

    for mod, name in (
        (os, "stat"),
        (os, "lstat"),
        (os, "listdir"),
        (os, "scandir"),
        (os, "open"),
        (builtins, "open"),
        (io, "open"),
    ):
        monkeypatch.setattr(mod, name, wrap(getattr(mod, name)))
    monkeypatch.setitem(sys.modules, "rtslib_fb", None)  # configfs: any import fails
    yield touched


def remote_host() -> FakeRunner:
    fake = FakeRunner(SshTarget("node1"), simulate_files=True)
    fake.files["/etc/iscsi/initiatorname.iscsi"] = f"InitiatorName={PREFIX}.lab:node1\n"
    fake.reply("losetup", "--find", stdout="/dev/loop0\n")
    fake.reply("iscsiadm", "-m", "session", rc=21, stderr="iscsiadm: No active sessions.")
    fake.reply("skycache-agent", "lio-list", stdout=json.dumps({"exports": [], "backstores": []}))
    return fake


def apply(fake: FakeRunner, plan: Plan) -> list[str]:
    """Apply ``plan`` on the fake; device links a login would make are taken as made."""
    start = len(fake.ran())
    for a in plan.actions:
        Plan(
            plan.title, [Action(a.description, tuple(s for s in a.do if not isinstance(s, Wait)), a.undo)]
        ).apply(fake)
    return fake.ran()[start:]


def test_a_remote_repository_and_node_are_managed_through_the_runner_alone(
    no_local_access: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKYCACHE_LOOP_DIR")  # the default directory, missing on the host: made there
    fake = remote_host()
    ran = apply(fake, repository.plan_init_lvm(View(fake), "r1", loop_size=1 << 30))
    assert ran[:3] == [
        "mkdir -p -m 0700 /var/lib/skycache",
        f"truncate -s {1 << 30} /var/lib/skycache/skycache-vg-r1.img",
        "losetup /dev/loop0 /var/lib/skycache/skycache-vg-r1.img",
    ]
    fake.reply("vgs", stdout=report("vg", [vg("r1", "skycache,skycache-repo")]))
    fake.reply(
        "pvs",
        stdout=report(
            "pv", [{"pv_name": "/dev/loop0", "vg_name": "r1", "pv_size": "1", "pv_free": "1", "pv_tags": ""}]
        ),
    )
    apply(fake, image.plan_create(View(fake), "r1/base", size=64 * MiB))
    base = lv("r1", "base", 64 * MiB)
    fake.reply("lvs", stdout=report("lv", [base]))
    ran = apply(fake, image.plan_clone_image(View(fake), "r1/base", "r1/c", "thin"))
    assert "lvchange -p r r1/base" in ran and any("--thinpool r1/skycache-pool" in c for c in ran)
    base = lv("r1", "base", 64 * MiB, attr="-ri-a-----")
    fake.reply("lvs", stdout=report("lv", [base]))
    ran = apply(fake, image.plan_export(View(fake), "r1/base", initiators=[], listen=("127.0.0.1", 3260)))
    base_iqn = f"{PREFIX}:r1.base"
    secret = next(p for p in fake.files if p.endswith(f"{base_iqn.replace(':', '_')}.chap"))
    password = json.loads(fake.files[secret])["password"]
    assert "skycache-agent lio-create" in ran and not any(password in c for c in ran)
    fake.reply(
        "skycache-agent", "lio-list", stdout=json.dumps({"exports": [export(base_iqn)], "backstores": []})
    )
    fake.reply("iscsiadm", "-m", "discovery", stdout=f"127.0.0.1:3260,1 {base_iqn}\n")
    plan, device = image.plan_attach(View(fake), "r1/base", iscsi.parse_portal("127.0.0.1"))
    ran = apply(fake, plan)
    assert device == f"/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{base_iqn}-lun-0"
    assert any(c.endswith("--login") for c in ran) and not any(password in c for c in ran)
    # The node: its cache VG, then a VM disk with both caches over the repository's LUNs.
    fake.reply("losetup", "--find", stdout="/dev/loop1\n")
    apply(fake, node.plan_init(View(fake), "n1", loop_size=512 * MiB))
    fake.reply(
        "vgs",
        stdout=report(
            "vg",
            [vg("r1", "skycache,skycache-repo"), vg("n1", "skycache,skycache-node", 512 * MiB, 500 * MiB)],
        ),
    )
    req = clone.CloneRequest("vm1", "r1/base", "127.0.0.1:3260", "snapshot", 16 * MiB, 16 * MiB)
    plan, path = clone.plan_clone(View(fake), req)
    ran = apply(fake, plan)
    assert path == "/dev/mapper/skycache-vm-vm1"
    assert any(c.startswith("dmsetup create skycache-rc-n1.r1.base ") for c in ran)
    assert any(c.startswith("dmsetup create skycache-wb-vm1 ") for c in ran)
    assert any(c.startswith("skycache-agent set-write-cache /dev/disk/by-path/") for c in ran)
    assert any(p.endswith("vmdisks/vm1.json") for p in fake.files)  # the note, written there
    assert no_local_access == []
    assert fake.target.name == "node1"


def test_the_guard_catches_local_reads_and_configfs(no_local_access: list[str]) -> None:
    """The check above means something: a local read, a local listing, rtslib, each fail here."""
    with pytest.raises(AssertionError, match="local access"):
        Path("/etc/iscsi/initiatorname.iscsi").exists()
    with pytest.raises(AssertionError, match="local access"):
        list(Path("/sys/block").iterdir())
    with pytest.raises(ImportError):
        import rtslib_fb  # noqa: F401
    assert no_local_access == ["/etc/iscsi/initiatorname.iscsi", "/sys/block"]
