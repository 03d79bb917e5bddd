"""`make demo`: the real stack alive, inside the lab.

Creates an LV in a repository VG, exports it over iSCSI (LIO, CHAP), logs in on 127.0.0.1, puts a
dm-cache (writethrough, smq) on the iSCSI disk with metadata and data LVs from a local cache VG,
runs a 10-second fio 4 KiB random-read job on the iSCSI disk and on the cached disk, prints IOPS,
and tears everything down. Uses the lab's scratch disks ($SKYCACHE_LAB_DISKS) when there are two,
otherwise loop devices over sparse files in /tmp.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from skycache import dm, image, iscsi, lio, lvm, repo, teardown
from skycache.errors import SkycacheError
from skycache.runner import Runner

PORTAL = "127.0.0.1:3260"
CACHE = "skycache-demo-cache"
RUNTIME_S = 10


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def fio_iops(runner: Runner, device: str, name: str) -> float:
    argv = [
        "fio", f"--name={name}", f"--filename={device}", "--rw=randread", "--bs=4k", "--direct=1",
        "--ioengine=libaio", "--iodepth=8", f"--runtime={RUNTIME_S}", "--time_based", "--size=64M",
        "--output-format=json",
    ]  # fmt: skip
    out = json.loads(runner.query(argv, timeout_s=RUNTIME_S + 120).stdout)
    job = out["jobs"][0]
    if job.get("error"):
        raise SkycacheError(f"fio reported error {job['error']} on {device}")
    return float(job["read"]["iops"])


def main() -> int:
    runner = Runner()
    disks = os.environ.get("SKYCACHE_LAB_DISKS", "").split()
    tmp = Path(tempfile.mkdtemp(prefix="skycache-demo-"))
    os.environ.setdefault("SKYCACHE_STATE_DIR", str(tmp / "state"))
    t0 = time.monotonic()
    try:
        say("repository VG 'demo' and a 256 MiB image LV")
        if len(disks) >= 2:
            repo.plan_init_lvm(runner, "demo", devices=[disks[0]]).apply(runner)
        else:
            repo.plan_init_lvm(runner, "demo", loop_size=1 << 30, directory=tmp).apply(runner)
        image.plan_create(runner, "demo/disk", size=256 << 20).apply(runner)
        runner.run(["dd", "if=/dev/urandom", "of=/dev/demo/disk", "bs=1M", "count=64", "status=none"])

        say("export over iSCSI (LIO, CHAP) and log in")
        image.plan_export(runner, "demo/disk", initiators=[], listen=lio.parse_listen(PORTAL)).apply(runner)
        disk = image.attach(runner, "demo/disk", iscsi.parse_portal(PORTAL))
        say(f"iSCSI disk: {disk}")

        say("dm-cache (writethrough, smq) on the iSCSI disk, cache LVs in a local VG")
        if len(disks) >= 2:
            lvm.create_vg(runner, "democache", [disks[1]])
        else:
            lvm.create_loop_vg(runner, "democache", 512 << 20, tmp)
        lvm.create_lv(runner, "democache", "meta", 8 << 20)
        lvm.create_lv(runner, "democache", "data", 128 << 20)
        runner.run(["dd", "if=/dev/zero", "of=/dev/democache/meta", "bs=1M", "count=1", "status=none"])
        sectors = dm.device_sectors(runner, disk)
        table = f"0 {sectors} cache /dev/democache/meta /dev/democache/data {disk} 512 1 writethrough smq 0"
        cached = dm.create(runner, CACHE, table)
        print(runner.query(["dmsetup", "status", CACHE]).stdout.strip(), flush=True)
        print(runner.query(["iscsiadm", "-m", "session"]).stdout.strip(), flush=True)

        say(f"fio 4k random read, {RUNTIME_S} s each")
        raw = fio_iops(runner, disk, "iscsi")
        print(f"iSCSI disk          {disk:>24}: {raw:8.0f} IOPS", flush=True)
        cold = fio_iops(runner, cached, "cache-cold")
        print(f"dm-cache (1st run)  {cached:>24}: {cold:8.0f} IOPS", flush=True)
        warm = fio_iops(runner, cached, "cache-warm")
        print(f"dm-cache (2nd run)  {cached:>24}: {warm:8.0f} IOPS", flush=True)
        return 0
    except SkycacheError as exc:
        print(f"demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        say("teardown")
        try:
            teardown.plan_teardown(runner).apply(runner)
        except SkycacheError as exc:
            print(f"demo: teardown error: {exc}", file=sys.stderr, flush=True)
        say(f"done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
