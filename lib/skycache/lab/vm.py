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
from skycache.runner import LineSink, MissingProgram, SystemRunner
from skycache.units import parse_size

Accel = Literal["kvm", "tcg"]


class LabBootError(SkycacheError):
    pass


@dataclass(frozen=True)
class LabSpec:
    memory: str = "2G"
    cpus: int = 2
    accel: Accel = "tcg"
    disk_sizes: tuple[int, ...] = ()  # bytes; each becomes an empty virtio disk in the guest
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
    python: str = sys.executable,
    channel: Channel | None = None,
) -> list[str]:
    """The virtme-ng command line that boots ``kernel`` and runs the guest entry point.

    With a ``channel`` (``lab up``), the guest also gets one NIC on qemu's user-mode network, with
    ``restrict=on`` (no route out of the VM) and only the host's loopback port forwarded into it.
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
    if channel is not None:
        forward = f"hostfwd=tcp:127.0.0.1:{channel.host_port}-:{channel.guest_port}"
        argv += [
            "--qemu-opts=-netdev",
            f"--qemu-opts=user,id=skycache-channel,restrict=on,{forward}",
            "--qemu-opts=-device",
            f"--qemu-opts=virtio-net-pci,netdev=skycache-channel,mac={channel.mac}",
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
        disks, guest_spec = write_share(share, spec, {"argv": list(argv)})
        facts = {**hostinfo.host_facts(runner), "accel": spec.accel, "lab_kernel": kernel.version}
        cmd = vng_argv(kernel, spec, guest_spec_path=guest_spec, share_dir=share, disk_paths=disks)
        with hostinfo.HostShare(runner, share, facts):
            return runner.stream(cmd, on_line=on_line, timeout_s=spec.timeout_s)


def ensure_vng(runner: SystemRunner) -> None:
    """Find virtme-ng, also when the venv's bin directory is not on PATH (``.venv/bin/skycache``)."""
    if shutil.which("vng") is None and runner.target.name == "local":
        venv_bin = str(Path(sys.executable).parent)
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("vng") is None:
            raise MissingProgram("vng")


def write_share(share: Path, spec: LabSpec, what: dict[str, object]) -> tuple[list[Path], Path]:
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
        "path_prepend": str(Path(sys.executable).parent),
    }
    fd = os.open(guest_spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record))
    return disks, guest_spec
