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
import time
from pathlib import Path
from typing import Any

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
# qemu's user-mode network forwards the host's port to this guest address (its default guest IP).
CHANNEL_ADDRESS = "10.0.2.15/24"


def prepare(runner: Runner, initiator: str = GUEST_INITIATOR) -> None:
    for module in MODULES:
        runner.run(["modprobe", module])
    if not Path("/sys/kernel/config/target").exists() and not os.path.ismount("/sys/kernel/config"):
        runner.run(["mount", "-t", "configfs", "none", "/sys/kernel/config"])
    # rtslib-fb refuses to start without its dbroot (where LIO keeps persistent reservations/ALUA).
    Path("/etc/target").mkdir(parents=True, exist_ok=True)
    runner.run(["ip", "link", "set", "lo", "up"])
    iscsi_etc = Path("/etc/iscsi")
    iscsi_etc.mkdir(parents=True, exist_ok=True)
    (iscsi_etc / "initiatorname.iscsi").write_text(f"InitiatorName={initiator}\n")
    running = runner.query(["pgrep", "-x", "iscsid"], check=False)
    if running.returncode != 0:
        runner.run(["iscsid"])


def scratch_disks() -> list[str]:
    """The empty virtio disks ``--disk`` asked for, in order (virtme-ng's root is 9p, not vd*)."""
    names = sorted(p.name for p in Path("/sys/block").glob("vd*"))
    return [f"/dev/{name}" for name in names]


def bring_up_channel(runner: Runner, mac: str) -> None:
    """Give the NIC of qemu's port forward (found by its MAC) the address qemu forwards to."""
    dev = _nic_by_mac(mac)
    runner.run(["ip", "link", "set", dev, "up"])
    runner.run(["ip", "addr", "add", CHANNEL_ADDRESS, "dev", dev])


def _nic_by_mac(mac: str) -> str:
    for dev in sorted(Path("/sys/class/net").iterdir()):
        address = (dev / "address").read_text().strip() if (dev / "address").exists() else ""
        if address.lower() == mac.lower():
            return dev.name
    raise CommandError(["ip", "link"], 1, "", f"no network interface has the MAC {mac}")


NODE_RUN_DIR = Path("/run/skycache-lab")


def join_segment(runner: Runner, node: dict[str, str], lab: dict[str, Any]) -> dict[str, str]:
    """A node of a multi-node lab: its name, its address on the segment, /etc/hosts, and sshd with
    the lab's keys; returns what the node's commands get in their environment."""
    from skycache.lab import nodes

    runner.run(["hostname", node["name"]])
    dev = _nic_by_mac(node["mac"])
    runner.run(["ip", "link", "set", dev, "up"])
    runner.run(["ip", "addr", "add", f"{node['address']}/{nodes.PREFIX_LEN}", "dev", dev])
    with Path("/etc/hosts").open("a") as hosts:  # /etc is the guest's own (a tmpfs overlay)
        hosts.write("".join(f"{addr} {name}\n" for name, addr in lab["nodes"].items()))
    common = Path(lab["common"])
    NODE_RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    # sshd and ssh refuse keys that others may read; the shared directory's modes are not trusted.
    for name in (nodes.KEY_NAME, nodes.HOST_KEY_NAME):
        target = NODE_RUN_DIR / name
        target.write_bytes((common / name).read_bytes())
        target.chmod(0o600)
    authorized = NODE_RUN_DIR / "authorized_keys"
    authorized.write_text((common / f"{nodes.KEY_NAME}.pub").read_text())
    config = NODE_RUN_DIR / "sshd_config"
    me = nodes.Node(node["name"], node["address"], node["mac"], "worker")
    config.write_text(nodes.sshd_config(me, str(NODE_RUN_DIR / nodes.HOST_KEY_NAME), str(authorized)))
    _unlock_root_for_keys(runner)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    runner.run(["/usr/sbin/sshd", "-f", str(config)])
    return {
        "SKYCACHE_LAB_NODE": node["name"],
        "SKYCACHE_LAB_NODES": " ".join(f"{k}={v}" for k, v in lab["nodes"].items()),
        "SKYCACHE_LAB_SSH_CONFIG": str(common / nodes.SSH_CONFIG),
    }


def _unlock_root_for_keys(runner: Runner) -> None:
    """virtme-ng bind-mounts a generated /etc/shadow whose accounts are all locked ('!'), and sshd
    without PAM refuses a locked account even for a key ("User root not allowed because account is
    locked"). In the guest only, a copy with root's field '*' (no password, not locked) goes over it."""
    shadow = Path("/etc/shadow").read_text().splitlines()
    if not any(line.startswith("root:!") for line in shadow):
        return
    fixed = [("root:*:" + line.split(":", 2)[2]) if line.startswith("root:") else line for line in shadow]
    copy = NODE_RUN_DIR / "shadow"
    copy.write_text("\n".join(fixed) + "\n")
    copy.chmod(0o640)
    runner.run(["mount", "--bind", str(copy), "/etc/shadow"])


def lab_env(spec: dict[str, Any]) -> dict[str, str]:
    """The environment every lab command gets: the project's venv first on PATH, the scratch disks."""
    env = dict(spec["env"])
    env["PATH"] = spec["path_prepend"] + os.pathsep + os.environ.get("PATH", "/usr/sbin:/usr/bin")
    env["SKYCACHE_IN_LAB"] = "1"
    devices = scratch_disks()
    env["SKYCACHE_LAB_DISKS"] = " ".join(devices[: spec["disks"]])
    kept = spec.get("kept_disks", [])
    # DEVICE=HOST_FILE of each --disk-file disk (they follow the scratch disks).
    env["SKYCACHE_LAB_DISK_FILES"] = " ".join(
        f"{dev}={path}" for dev, path in zip(devices[spec["disks"] :], kept, strict=False)
    )
    env["LVM_SUPPRESS_FD_WARNINGS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # The host's home is read-only in the guest: give matplotlib a writable config/cache dir.
    env.setdefault("MPLCONFIGDIR", "/tmp/matplotlib")
    return env


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    runner = SystemRunner()
    serve = spec.get("serve")
    node = spec.get("node")
    node_env: dict[str, str] = {}
    try:
        prepare(runner, f"iqn.2026-11.org.skycache.lab:{node['name']}" if node else GUEST_INITIATOR)
        if serve:
            bring_up_channel(runner, serve["mac"])
        if node:
            node_env = join_segment(runner, node, spec["lab"])
    except (CommandError, OSError) as exc:
        print(f"lab: guest preparation failed: {exc}", file=sys.stderr)
        raise SystemExit(125) from exc
    env = {**lab_env(spec), **node_env}
    # Progress for logs: how long the boot took before the user's command (or the server) starts.
    uptime = Path("/proc/uptime").read_text().split()[0]
    print(f"lab: guest ready ({uptime} s after the kernel started)", file=sys.stderr, flush=True)
    os.chdir(spec["cwd"])
    if serve:
        raise SystemExit(_serve(serve, env, spec["path_prepend"]))
    runner.replace_process(spec["argv"], env)


def _serve(serve: dict[str, Any], env: dict[str, str], venv_bin: str) -> int:
    """``lab up``: keep the lab running and serve ``lab exec`` until poweroff or the deadline."""
    from skycache.lab import command_server

    started = time.time()
    # Imported once here so that each `lab exec -- skycache ...` starts as a fork (see the module).
    os.environ.update(env)
    warm = command_server.preload_cli()
    print(f"lab: skycache CLI {'preloaded' if warm else 'not preloaded'} in {time.time() - started:.1f} s")
    programs = frozenset(("skycache", str(Path(venv_bin) / "skycache"))) if warm else frozenset()
    config = command_server.ServerConfig(
        port=command_server.GUEST_PORT,
        token=serve["token"],
        env=env,
        deadline=started + float(serve["lifetime_s"]),
        warm_programs=programs,
        started=started,
    )
    return command_server.serve(config)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m skycache.lab.guest SPEC.json", file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1])
