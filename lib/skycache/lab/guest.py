"""The lab guest's entry point: prepare the kernel's subsystems, then become the user's command.

Runs as root inside the VM (``python -m skycache.lab.guest SPEC.json``). It loads the modules the
storage stack needs, mounts configfs for LIO, brings loopback up for iSCSI on 127.0.0.1, gives the
guest an iSCSI initiator name and starts iscsid, then execs the command so that its exit status and
output are the lab's own.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from skycache.runner import CommandError, Runner, SystemRunner

MODULES = (
    "dm_mod",
    "dm_cache",
    "dm_cache_smq",
    "dm_snapshot",
    "dm_thin_pool",
    "dm_delay",
    "dm_flakey",
    "dm_writecache",
    "loop",
    "configfs",
    "target_core_mod",
    "target_core_iblock",
    "target_core_file",
    "iscsi_target_mod",
    "iscsi_tcp",
    "sch_netem",
    "sch_htb",
    "sch_prio",
    "cls_u32",
    "veth",
)
GUEST_INITIATOR = "iqn.2026-11.org.skycache.lab:guest"


def prepare(runner: Runner) -> None:
    for module in MODULES:
        runner.run(["modprobe", module])
    if not Path("/sys/kernel/config/target").exists() and not os.path.ismount("/sys/kernel/config"):
        runner.run(["mount", "-t", "configfs", "none", "/sys/kernel/config"])
    # rtslib-fb refuses to start without its dbroot (where LIO keeps persistent reservations/ALUA).
    Path("/etc/target").mkdir(parents=True, exist_ok=True)
    runner.run(["ip", "link", "set", "lo", "up"])
    iscsi_etc = Path("/etc/iscsi")
    iscsi_etc.mkdir(parents=True, exist_ok=True)
    (iscsi_etc / "initiatorname.iscsi").write_text(f"InitiatorName={GUEST_INITIATOR}\n")
    running = runner.query(["pgrep", "-x", "iscsid"], check=False)
    if running.returncode != 0:
        runner.run(["iscsid"])


def scratch_disks() -> list[str]:
    """The empty virtio disks ``--disk`` asked for, in order (virtme-ng's root is 9p, not vd*)."""
    names = sorted(p.name for p in Path("/sys/block").glob("vd*"))
    return [f"/dev/{name}" for name in names]


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    runner = SystemRunner()
    try:
        prepare(runner)
    except CommandError as exc:
        print(f"lab: guest preparation failed: {exc}", file=sys.stderr)
        raise SystemExit(125) from exc
    env = dict(spec["env"])
    env["PATH"] = spec["path_prepend"] + os.pathsep + os.environ.get("PATH", "/usr/sbin:/usr/bin")
    env["SKYCACHE_IN_LAB"] = "1"
    env["SKYCACHE_LAB_DISKS"] = " ".join(scratch_disks()[: spec["disks"]])
    env["LVM_SUPPRESS_FD_WARNINGS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # The host's home is read-only in the guest: give matplotlib a writable config/cache dir.
    env.setdefault("MPLCONFIGDIR", "/tmp/matplotlib")
    os.chdir(spec["cwd"])
    runner.replace_process(spec["argv"], env)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m skycache.lab.guest SPEC.json", file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1])
