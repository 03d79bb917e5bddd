"""Issue 4 acceptance on a real kernel: the VM-disk stack over iSCSI on 127.0.0.1, its lifecycle
verbs, data integrity through delete --sync + save, repository outage, cache reuse, kill -9."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cache import read_cache_status, warm_read_cache
from _storage import PORTAL, STORAGE_CLI, last_line, read_sha, sk, sk_json, teardown_all, write_pattern

from skycache.errors import SkycacheError
from skycache.runner import Runner
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import blockqueue, dm, iscsi, lio

MiB = 1024 * 1024
KILL_WHEN = [sys.executable, str(Path(__file__).with_name("_kill_when.py"))]
# Kept small: under TCG every MiB through iSCSI, the caches, the flush and the save costs seconds.
BASE_MIB = 32
FIO_SIZE = "4M"


@pytest.fixture
def env(runner: Runner, scratch_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A repository ``vr`` (LVM on a loop file) with a 32 MiB base holding a known pattern, and a
    node cache VG ``node1``; everything torn down after."""
    old = {k: os.environ.get(k) for k in ("SKYCACHE_LOOP_DIR", "SKYCACHE_STATE_DIR")}
    os.environ["SKYCACHE_LOOP_DIR"] = str(scratch_dir)
    os.environ["SKYCACHE_STATE_DIR"] = str(tmp_path / "state")
    try:
        sk(runner, "repo", "init", "vr", "--backend", "lvm", "--loop", "1G")
        sk(runner, "image", "create", "vr/base", "--size", f"{BASE_MIB}M")
        runner.run(["dd", "if=/dev/urandom", "of=/dev/vr/base", "bs=1M", f"count={BASE_MIB}", "oflag=direct",
                    "status=none"])  # fmt: skip
        sk(runner, "node", "init", "--cache-vg", "node1", "--loop", "512M")
        yield scratch_dir
    finally:
        teardown_all(runner)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fio(runner: Runner, dev: str, *extra: str, check: bool = True) -> str:
    """A fixed random-write job with crc32c verification headers (seeded: reproducible offsets)."""
    argv = [
        "fio", "--name=v", f"--filename={dev}", "--rw=randwrite", "--bs=4k", f"--size={FIO_SIZE}",
        "--direct=1", "--ioengine=libaio", "--iodepth=4", "--verify=crc32c", "--randseed=1234",
        "--verify_state_save=0", "--output-format=normal", *extra,
    ]  # fmt: skip
    done = runner.query(argv, check=False, timeout_s=900)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def verify_errors(output: str) -> int:
    """1 when fio reported a verification failure, else fio's own error number (0: clean)."""
    if re.search(r"verify: bad|bad magic|verify failed", output):
        return 1
    m = re.search(r"err=\s*(\d+)", output)
    return int(m.group(1)) if m else 1


def clone(runner: Runner, vm: str, *args: str) -> str:
    out = sk(runner, "disk", "clone", vm, "vr/base", "--portal", PORTAL, *args)
    path = last_line(out)
    assert path == f"/dev/mapper/skycache-vm-{vm}", out.stdout
    return path


# Both COW engines and both write-back engines, in two runs (each costs minutes under TCG).
@pytest.mark.parametrize(("cow", "engine"), [("snapshot", "writecache"), ("thin", "dmcache")])
def test_integrity_through_sync_and_save(runner: Runner, env: Path, cow: str, engine: str) -> None:
    vm = f"i{cow[0]}{engine[0]}"
    dev = clone(
        runner, vm, "--cow", cow, "--read-cache", "16M", "--write-cache", "16M", "--write-engine", engine
    )
    # Unwritten parts of the VM disk read as the base.
    assert read_sha(runner, dev, env, mib=8) == read_sha(runner, "/dev/vr/base", env, mib=8)
    fio(runner, dev, "--do_verify=0")
    wb = f"skycache-wb-{vm}"
    st = cachestatus.status(runner, wb)
    if engine == "writecache":
        assert st.unwritten >= 512, st  # every write landed locally first (4 MiB: 1024 blocks)
    disks = {d["vm_id"]: d for d in sk_json(runner, "disk", "list")}
    assert disks[vm]["state"] == "live" and disks[vm]["cow"] == cow
    # Before the sync, the live disk verifies.
    assert verify_errors(fio(runner, dev, "--verify_only")) == 0
    out = sk(runner, "disk", "delete", vm, "--sync")
    assert "deleted" in out.stdout
    assert not Path(dev).exists()
    disks = {d["vm_id"]: d for d in sk_json(runner, "disk", "list")}
    assert disks[vm]["state"] == "synced"
    sk(runner, "disk", "save", vm, f"vr/{vm}-saved")
    out_verify = fio(runner, f"/dev/vr/{vm}-saved", "--verify_only")
    assert verify_errors(out_verify) == 0, out_verify
    # Outside the fio region the saved image is the base.
    whole_saved = read_sha(runner, f"/dev/vr/{vm}-saved", env, mib=BASE_MIB)
    assert whole_saved != read_sha(runner, "/dev/vr/base", env, mib=BASE_MIB)  # fio changed the start
    sk(runner, "disk", "purge", vm)
    assert vm not in {d["vm_id"] for d in sk_json(runner, "disk", "list")}


def _session_rx(runner: Runner, iqn: str) -> int:
    """Bytes received by the initiator over the session of ``iqn`` (iscsiadm -m session -s)."""
    for s in iscsi.sessions(runner):
        if s.iqn == iqn:
            out = runner.query(["iscsiadm", "-m", "session", "-r", str(s.sid), "-s"]).stdout
            m = re.search(r"rxdata_octets:\s*(\d+)", out)
            assert m, out
            return int(m.group(1))
    raise AssertionError(f"no session for {iqn}")


def test_cache_reuse_second_vm_reads_from_warm_read_cache(runner: Runner, env: Path) -> None:
    base_iqn = lio.target_iqn("vr", "base")
    rc = "skycache-rc-node1.vr.base"
    dev = clone(runner, "ra", "--read-cache", "32M")
    _read_only_lun_refuses_a_writable_table(runner, base_iqn)
    rx0 = _session_rx(runner, base_iqn)
    # The first VM reads its working set until the read cache is settled (smq's promotions run in
    # idle time, and smq may leave some blocks out for good: how many passes that takes, and how
    # much it caches, depend on the machine; the assertions below compare with what it cached).
    # Not required to settle: the assertions below hold for any later state of a cache that only
    # gains blocks (32M of cache for 8 MiB read: nothing is evicted). CI once saw the hits still
    # climbing at pass 25 under load (1856 hits, 192 misses).
    passes = warm_read_cache(runner, rc, lambda: read_sha(runner, dev, env, mib=8), require_settled=False)
    last = passes[-1]
    first_rx = _session_rx(runner, base_iqn) - rx0
    sk(runner, "disk", "delete", "ra")
    dev = clone(runner, "rb", "--read-cache", "32M")
    st0 = read_cache_status(runner, rc)
    rx0 = _session_rx(runner, base_iqn)
    assert read_sha(runner, dev, env, mib=8) == read_sha(runner, "/dev/vr/base", env, mib=8)
    rx = _session_rx(runner, base_iqn) - rx0
    st = read_cache_status(runner, rc)
    hits, misses = st.read_hits - st0.read_hits, st.read_misses - st0.read_misses
    report = (
        f"first VM: {len(passes)} passes until warm ({'; '.join(map(str, passes))}), fetched {first_rx} B; "
        f"second VM fetched {rx} B, read hits {hits}, misses {misses}; read cache now {st}"
    )
    print(report)
    assert first_rx >= 8 * MiB, report
    # Most of the working set was served by the read cache at the end of the first VM ...
    assert last.hit_ratio >= 0.5, report
    # ... and the second VM reads what the cache held without the network: it fetches over iSCSI at
    # most what the first VM's last pass missed, and it hits what that pass hit. (The bios dm-cache
    # counts are what the layers above split the 8 MiB into; a few reads outside the working set,
    # udev probing the new device's last blocks, may still miss: 1 MiB of slack.)
    bio = 8 * MiB // (last.hits + last.misses)
    slack = MiB // bio
    assert rx <= last.misses * bio + MiB, report
    assert hits >= last.hits - slack and misses <= last.misses + slack, report
    sk(runner, "disk", "delete", "rb")


def _read_only_lun_refuses_a_writable_table(runner: Runner, iqn: str) -> None:
    """Why the read cache sits on a guard (vmdisk.layers.ReadCacheDevs): the base's LUN is exported
    write-protected, and the SCSI disk refuses to be opened for writing (sd_open: EROFS), which
    dm-cache does with its origin; a read-only dm device over the LUN is accepted. (A read-only loop
    device does not refuse: the refusal is the disk driver's, so it is checked on the real LUN.)"""
    disk = f"/dev/{_session(runner, iqn).disks[0]}"
    sectors = dm.device_sectors(runner, disk)
    try:
        with pytest.raises(SkycacheError, match=r"(?i)read-only"):
            dm.create(runner, "skycache-probe-rw", [dm.linear(disk, sectors)])
        dm.create(runner, "skycache-probe-ro", [dm.linear(disk, sectors)], readonly=True)
    finally:
        for name in ("skycache-probe-rw", "skycache-probe-ro"):
            dm.remove(runner, name, force=True)


def _set_tpg(iqn: str, enabled: bool) -> None:
    import rtslib_fb as rts  # the test plays the repository going away: configfs directly

    for target in rts.FabricModule("iscsi").targets:
        if target.wwn == iqn:
            for tpg in target.tpgs:
                tpg.enable = enabled


def _session(runner: Runner, iqn: str) -> iscsi.Session:
    return next(s for s in iscsi.sessions(runner) if s.iqn == iqn)


def test_repository_outage_while_writing(runner: Runner, env: Path) -> None:
    dev = clone(runner, "out", "--write-cache", "16M")
    store_iqn = lio.target_iqn("vr", "out.cow")
    store_disk = _session(runner, store_iqn).disks[0]
    # The VM's flushes end at the write-back cache, not at the repository (kernel.blockqueue).
    assert blockqueue.write_cache(runner, f"/dev/{store_disk}") == "write through"
    kernel_lines = len(runner.query(["dmesg"]).stdout.splitlines())
    _set_tpg(store_iqn, False)  # the repository's portal for the store stops answering
    try:
        t0 = time.monotonic()
        fio(runner, dev, "--do_verify=0")
        took = time.monotonic() - t0
        # The path was really down while fio wrote (the initiator is still trying to log in), the
        # writes are in the write-back cache, and nothing was sent to the store LUN: no flush of the
        # VM waited for the repository, so none failed when the iSCSI replacement timeout ran out.
        assert _session(runner, store_iqn).state != "LOGGED_IN"
        assert cachestatus.dirty_count(runner, "skycache-wb-out") > 0
        new_lines = runner.query(["dmesg"]).stdout.splitlines()[kernel_lines:]
        assert not [ln for ln in new_lines if "I/O error" in ln and f"dev {store_disk}" in ln], new_lines
        time.sleep(max(0.0, 5 - took))
    finally:
        _set_tpg(store_iqn, True)
    # A live save: flushes the write-back cache over the restored path, copies base + store, and
    # gives the running VM its cache back (not left in cleaner mode).
    sk(runner, "disk", "save", "out", "vr/out-saved", timeout_s=900)
    assert verify_errors(fio(runner, "/dev/vr/out-saved", "--verify_only")) == 0
    wb_table = runner.query(["dmsetup", "table", "skycache-wb-out"]).stdout
    assert "writecache" in wb_table and "cleaner" not in wb_table, wb_table
    write_pattern(runner, dev, env, mib=1, seed="after-save")
    assert cachestatus.dirty_count(runner, "skycache-wb-out") > 0  # writes land in the cache again
    sk(runner, "disk", "delete", "out", "--sync", timeout_s=900)
    assert {d["vm_id"]: d["state"] for d in sk_json(runner, "disk", "list")}["out"] == "synced"


def test_kill_9_mid_clone_and_mid_delete_sync(runner: Runner, env: Path) -> None:
    # SIGKILL once the clone is visibly half-built (the base's iSCSI session is up): a fresh storage CLI
    # spends its first seconds importing under TCG, so a fixed delay would kill it before it starts.
    base_iqn = lio.target_iqn("vr", "base")
    clone_argv = [*STORAGE_CLI, "disk", "clone", "k1", "vr/base", "--portal", PORTAL,
                  "--read-cache", "16M", "--write-cache", "16M"]  # fmt: skip
    out = runner.query([*KILL_WHEN, "--session", base_iqn, "--delay", "1", "--", *clone_argv], timeout_s=900)
    assert out.stdout.strip().splitlines()[-1] == "killed", out.stdout
    sk(runner, "teardown", "--all")
    assert sk_json(runner, "inventory") == []
    # Rebuild the setup, then kill a delete --sync while the write cache holds data.
    sk(runner, "repo", "init", "vr", "--backend", "lvm", "--loop", "1G")
    sk(runner, "image", "create", "vr/base", "--size", f"{BASE_MIB}M")
    sk(runner, "node", "init", "--cache-vg", "node1", "--loop", "512M")
    dev = clone(runner, "k2", "--write-cache", "16M")
    write_pattern(runner, dev, env, mib=8, seed="k2")
    assert cachestatus.dirty_count(runner, "skycache-wb-k2") > 0
    # ... killed once the VM disk is gone (the delete has started; the flush comes next).
    delete_argv = [*STORAGE_CLI, "disk", "delete", "k2", "--sync"]
    out = runner.query([*KILL_WHEN, "--gone", dev, "--", *delete_argv], timeout_s=900)
    assert out.stdout.strip().splitlines()[-1] in ("killed", "finished"), out.stdout
    # If the write cache still holds data, a teardown that may not flush refuses...
    wb_left = runner.query(["dmsetup", "info", "skycache-wb-k2"], check=False).returncode == 0
    if wb_left and cachestatus.dirty_count(runner, "skycache-wb-k2") > 0:
        refused = sk(runner, "teardown", "--all", "--no-flush", check=False)
        assert refused.returncode != 0 and "dirty" in refused.stderr
    # ...and the default teardown flushes, then clears everything.
    sk(runner, "teardown", "--all")
    assert sk_json(runner, "inventory") == []


def test_other_verbs(runner: Runner, env: Path) -> None:
    # mkimage / mkswap: local empty disks.
    img = last_line(sk(runner, "disk", "mkimage", "m1", "16M"))
    swap = last_line(sk(runner, "disk", "mkswap", "s1", "16M"))
    assert Path(img).exists() and Path(swap).exists()
    blkid = runner.query(["blkid", "-p", "-o", "value", "-s", "TYPE", swap], check=False).stdout
    assert "swap" in blkid
    # ln: a persistent image attached itself; writes land in the image.
    sk(runner, "image", "create", "vr/persist", "--size", "16M")
    ln = last_line(sk(runner, "disk", "ln", "p1", "vr/persist", "--portal", PORTAL))
    written = write_pattern(runner, ln, env, mib=4, seed="ln")
    # mv: a synced clone rebuilt with the second node's caches keeps its data.
    sk(runner, "node", "init", "--cache-vg", "node2", "--loop", "256M")
    dev = clone(runner, "mv1", "--cache-vg", "node1", "--read-cache", "16M", "--write-cache", "32M")
    moved = write_pattern(runner, dev, env, mib=4, seed="mv")
    out = sk(runner, "disk", "mv", "mv1", "--to-node", "node2")
    assert last_line(out) == dev
    assert read_sha(runner, dev, env, mib=4) == moved
    kinds = {d["vm_id"]: (d["kind"], d["state"]) for d in sk_json(runner, "disk", "list")}
    assert kinds == {
        "m1": ("mkimage", "live"),
        "s1": ("mkswap", "live"),
        "p1": ("ln", "live"),
        "mv1": ("clone", "live"),
    }, kinds
    dry = sk(runner, "disk", "delete", "mv1", "--sync", "--dry-run")
    assert "flush write-back cache" in dry.stdout and Path(dev).exists()
    # A live disk can't be purged; bad input is one line and changes nothing.
    for args, needle in [
        (["disk", "purge", "mv1"], "live"),
        (["disk", "clone", "BAD ID", "vr/base", "--portal", PORTAL], "invalid"),
        (["disk", "clone", "x1", "vr/nosuch", "--portal", PORTAL], "does not exist"),
        (["disk", "clone", "x1", "vr/base", "--portal", PORTAL, "--cow", "zfs"], "zfs"),
        (["disk", "clone", "x1", "vr/base", "--portal", PORTAL, "--write-cache", "0"], "zero"),
        (["disk", "delete", "nosuch"], "not known"),
    ]:
        done = sk(runner, *args, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and needle in lines[0], (args, done.stderr)
    for vm in ("m1", "s1", "p1", "mv1"):
        sk(runner, "disk", "delete", vm)
    assert not Path(dev).exists()
    sk(runner, "detach", "vr/persist", check=False)
    assert read_sha(runner, "/dev/vr/persist", env, mib=4) == written
    assert sk_json(runner, "disk", "list") == []
