"""Issue 2 acceptance: a real LV, a real dm-cache device and a real iSCSI session, checked through
``dmsetup status`` and ``iscsiadm -m session``, then torn down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage import PORTAL, last_line, sk, sk_json, teardown_all

from skycache.plan import Plan
from skycache.runner import Runner
from skycache.storage.kernel import dm, lio, lvm
from skycache.storage.view import View

CACHE = "skycache-fnd-cache"


@pytest.fixture
def env(runner: Runner, scratch_dir: Path, tmp_path: Path) -> Iterator[Path]:
    os.environ["SKYCACHE_LOOP_DIR"] = str(scratch_dir)
    os.environ["SKYCACHE_STATE_DIR"] = str(tmp_path / "state")
    yield scratch_dir
    teardown_all(runner)


def test_lv_dm_cache_and_iscsi_session(runner: Runner, env: Path) -> None:
    # The repository side: an LV exported over iSCSI, attached on this same host.
    sk(runner, "repo", "init", "fnd", "--backend", "lvm", "--loop", "1G")
    sk(runner, "image", "create", "fnd/origin", "--size", "128M")
    lv = lvm.get_lv(runner, "fnd", "origin")
    assert lv.owned and lv.active and lv.size == 128 << 20
    sk(runner, "export", "add", "fnd/origin", "--listen", PORTAL)
    disk = last_line(sk(runner, "attach", "fnd/origin", "--portal", PORTAL))
    iqn = lio.target_iqn("fnd", "origin")
    sessions = runner.query(["iscsiadm", "-m", "session"]).stdout
    assert iqn in sessions and "127.0.0.1:3260" in sessions

    # The node side: a cache VG with metadata and data LVs, and dm-cache (writethrough, smq) over the disk.
    Plan("cache VG", lvm.loop_vg_actions(View(runner), runner, "fndcache", 256 << 20, str(env))).apply(runner)
    for name, size in (("meta", 8 << 20), ("data", 64 << 20)):
        Plan("cache LV", [lvm.lvcreate_action(View(runner), "fndcache", name, size)]).apply(runner)
    sectors = dm.device_sectors(runner, disk)
    table = f"0 {sectors} cache /dev/fndcache/meta /dev/fndcache/data {disk} 512 1 writethrough smq 0"
    runner.run(
        ["dd", "if=/dev/zero", "of=/dev/fndcache/meta", "bs=1M", "count=1", "oflag=direct", "status=none"]
    )
    dm.create(runner, CACHE, table)
    runner.run(
        ["dd", f"if={dm.path(CACHE)}", "of=/dev/null", "bs=1M", "count=16", "iflag=direct", "status=none"]
    )

    status = runner.query(["dmsetup", "status", CACHE]).stdout.split()
    assert status[2] == "cache", status
    assert "writethrough" in status and "smq" in status, status
    deps = dm.deps(runner, CACHE)[CACHE]
    assert Path(disk).name in deps, deps  # the cache sits on the iSCSI disk

    # teardown --all removes it in order: cache, session, export, LVs, VGs, loops.
    sk(runner, "teardown", "--all")
    assert not dm.exists(runner, CACHE)
    gone = runner.query(["iscsiadm", "-m", "session"], check=False)
    assert iqn not in gone.stdout
    assert sk_json(runner, "inventory") == []
