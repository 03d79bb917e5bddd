"""Boot the lab VM with virtme-ng and run one command in it.

The guest shares the host's root filesystem read-only (virtme-ng puts tmpfs overlays on /etc, /var,
/tmp...), so the host's lvm2, open-iscsi and fio and the project's virtualenv are all there. Only the
directories given as ``rwdirs`` are written back to the host.

The command to run is not spliced into virtme-ng's ``--exec`` string: it is written as JSON into a
private directory shared with the guest, and the fixed ``--exec`` line starts
``python -m skycache.lab.guest SPEC``, which prepares the guest and then runs the argv verbatim.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skycache.errors import InvalidInput, SkycacheError
from skycache.lab import hostinfo
from skycache.lab.kernel import LabKernel
from skycache.lab.nodes import Node, Segment, plan
from skycache.runner import LineSink, MissingProgram, SystemRunner
from skycache.units import parse_size

Accel = Literal["kvm", "tcg"]


class LabBootError(SkycacheError):
    pass


NODE_PLACEHOLDER = "{node}"


@dataclass(frozen=True)
class DiskFile:
    """``--disk-file PATH:SIZE``: made sparse of SIZE if missing, else used as it is."""

    path: str  # absolute; with several nodes it holds {node}, which names each node's own file
    size: int

    def for_node(self, node: str) -> Path:
        return Path(self.path.replace(NODE_PLACEHOLDER, node))


@dataclass(frozen=True)
class LabSpec:
    memory: str = "2G"
    cpus: int = 2
    accel: Accel = "tcg"
    disk_sizes: tuple[int, ...] = ()  # bytes; each becomes an empty virtio disk in the guest
    # Disks backed by files the caller keeps (--disk-file): after the scratch disks, and not thrown
    # away, so a lab can be killed (a power cut) and booted again on them.
    disk_files: tuple[DiskFile, ...] = ()
    rwdirs: tuple[Path, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 3600.0
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True)
class Channel:
    """The command channel of a lab that stays up: a host loopback port forwarded into the guest."""

    host_port: int
    guest_port: int
    mac: str = "52:54:00:5c:ec:01"


def check_spec(spec: LabSpec) -> None:
    """Refuse a spec that virtme-ng would reject with a less readable message."""
    if spec.cpus < 1:
        raise InvalidInput(f"--cpus must be at least 1, not {spec.cpus}")
    mem = parse_size(spec.memory)
    if mem < 256 * 1024**2:
        raise InvalidInput(f"--memory {spec.memory!r} is too small for the lab (256M at least)")
    for rw in spec.rwdirs:
        if not rw.is_dir():
            raise InvalidInput(f"--rwdir {str(rw)!r} is not a directory")
        if rw.resolve() == Path("/"):
            raise InvalidInput("--rwdir / would let the guest write the host's whole filesystem")


def parse_disk_file(text: str, *, nodes: int) -> DiskFile:
    """``PATH:SIZE`` of ``--disk-file``: PATH a regular file or a new one (never a device, a
    directory, a FIFO or /proc, /sys), with ``{node}`` in it when the lab has several nodes (two
    VMs writing one file would destroy it)."""
    path_text, sep, size_text = text.rpartition(":")
    if not sep or not path_text:
        raise InvalidInput(f"--disk-file {text!r} is not PATH:SIZE")
    size = parse_size(size_text)
    if size <= 0:
        raise InvalidInput(f"--disk-file {text!r}: the size must be positive")
    if nodes > 1 and NODE_PLACEHOLDER not in path_text:
        raise InvalidInput(
            f"--disk-file {text!r}: a lab of {nodes} nodes needs {NODE_PLACEHOLDER} in the path "
            "(one file per node)"
        )
    path = Path(path_text).absolute()
    for node in [n.name for n in plan(nodes)] if nodes > 1 else ["lab"]:
        real = Path(str(path).replace(NODE_PLACEHOLDER, node))
        if real.is_relative_to("/proc") or real.is_relative_to("/sys") or real.is_relative_to("/dev"):
            raise InvalidInput(f"--disk-file {text!r}: {real} is under /proc, /sys or /dev")
        if real.exists() and not real.is_file():
            raise InvalidInput(f"--disk-file {text!r}: {real} exists and is not a regular file")
    return DiskFile(str(path), size)


def memory_for_qemu(memory: str) -> str:
    """qemu's -m wants a whole number of MiB (or a suffix it knows); give it MiB."""
    return f"{parse_size(memory) // 1024**2}M"


def vng_argv(
    kernel: LabKernel,
    spec: LabSpec,
    *,
    guest_spec_path: Path,
    share_dir: Path,
    disk_paths: Sequence[Path],
    kept_paths: Sequence[Path] = (),
    python: str = sys.executable,
    channel: Channel | None = None,
    segment: tuple[Segment, Node] | None = None,
) -> list[str]:
    """The virtme-ng command line that boots ``kernel`` and runs the guest entry point.

    With a ``channel`` (``lab up``), the guest also gets one NIC on qemu's user-mode network, with
    ``restrict=on`` (no route out of the VM) and only the host's loopback port forwarded into it.
    With a ``segment`` (a node of a multi-node lab), one more NIC joins the lab's segment
    (:mod:`skycache.lab.nodes`).
    """
    argv = [
        "vng",
        "--run",
        str(kernel.vmlinuz),
        "--memory",
        memory_for_qemu(spec.memory),
        "--cpus",
        str(spec.cpus),
        # The host kernel has no modules for the lab kernel: give the guest the unpacked ones.
        f"--rodir=/lib/modules={kernel.modules_dir}",
        f"--rwdir={share_dir}",
        f"--cwd={spec.cwd}",
    ]
    if spec.accel == "tcg":
        argv.append("--disable-kvm")
    for rw in spec.rwdirs:
        argv.append(f"--rwdir={rw}")
    for disk in disk_paths:
        # vng's --disk leaves the format to qemu's probing, which then refuses writes to block 0
        # (where a PV label goes); declare the images raw.
        argv += ["--qemu-opts=-drive", f"--qemu-opts=file={disk},format=raw,if=virtio,cache=unsafe"]
    for disk in kept_paths:
        # A disk that outlives the VM honours the guest's flushes (cache=writeback): what the guest
        # flushed is in the host's file when qemu is killed; scratch disks need no such care.
        argv += ["--qemu-opts=-drive", f"--qemu-opts=file={disk},format=raw,if=virtio,cache=writeback"]
    if channel is not None:
        forward = f"hostfwd=tcp:127.0.0.1:{channel.host_port}-:{channel.guest_port}"
        argv += [
            "--qemu-opts=-netdev",
            f"--qemu-opts=user,id=skycache-channel,restrict=on,{forward}",
            "--qemu-opts=-device",
            f"--qemu-opts=virtio-net-pci,netdev=skycache-channel,mac={channel.mac}",
        ]
    if segment is not None:
        seg, node = segment
        argv += [
            "--qemu-opts=-netdev",
            f"--qemu-opts={seg.netdev()}",
            "--qemu-opts=-device",
            f"--qemu-opts=virtio-net-pci,netdev=skycache-segment,mac={node.mac}",
        ]
    argv += ["--exec", shlex.join([python, "-m", "skycache.lab.guest", str(guest_spec_path)])]
    return argv


def boot(
    runner: SystemRunner,
    kernel: LabKernel,
    spec: LabSpec,
    argv: Sequence[str],
    *,
    on_line: LineSink,
) -> int:
    """Boot the lab, run ``argv`` in it as root, stream its output; return its exit code."""
    check_spec(spec)
    if not argv:
        raise InvalidInput("no command given to run in the lab (put it after '--')")
    ensure_vng(runner)
    with tempfile.TemporaryDirectory(prefix="skycache-lab-") as tmp:
        share = Path(tmp)
        kept = kept_disks(spec, "lab")
        disks, guest_spec = write_share(share, spec, {"argv": list(argv)}, kept)
        facts = {**hostinfo.host_facts(runner), "accel": spec.accel, "lab_kernel": kernel.version}
        cmd = vng_argv(
            kernel, spec, guest_spec_path=guest_spec, share_dir=share, disk_paths=disks, kept_paths=kept
        )
        with hostinfo.HostShare(runner, share, facts):
            return runner.stream(cmd, on_line=on_line, timeout_s=spec.timeout_s)


def ensure_vng(runner: SystemRunner) -> None:
    """Find virtme-ng, also when the venv's bin directory is not on PATH (``.venv/bin/skycache``)."""
    if shutil.which("vng") is None and runner.target.name == "local":
        venv_bin = str(Path(sys.executable).parent)
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("vng") is None:
            raise MissingProgram("vng")


def kept_disks(spec: LabSpec, node: str) -> list[Path]:
    """The node's --disk-file disks, made (sparse) where missing; existing ones are used as they are."""
    paths = []
    for disk in spec.disk_files:
        path = disk.for_node(node)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as f:
                f.truncate(disk.size)
        paths.append(path)
    return paths


def write_share(
    share: Path, spec: LabSpec, what: dict[str, object], kept: Sequence[Path] = ()
) -> tuple[list[Path], Path]:
    """Create the scratch disks and the guest's spec in the private share; (disks, spec path).

    ``what`` says what the guest does: ``{"argv": [...]}`` (``lab run``) or ``{"serve": {...}}``
    (``lab up``, with the channel's token, which is why the file is private to its owner).
    """
    disks = []
    for i, size in enumerate(spec.disk_sizes):
        path = share / f"disk{i}.img"
        with path.open("wb") as f:
            f.truncate(size)  # sparse: costs nothing until the guest writes
        disks.append(path)
    guest_spec = share / "guest.json"
    record = {
        **what,
        "env": {**dict(spec.env), hostinfo.HOST_DIR_ENV: str(share)},
        "cwd": str(spec.cwd),
        "disks": len(disks),
        "kept_disks": [str(p) for p in kept],
        "path_prepend": str(Path(sys.executable).parent),
    }
    fd = os.open(guest_spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record))
    return disks, guest_spec
