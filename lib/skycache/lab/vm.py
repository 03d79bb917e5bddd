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
) -> list[str]:
    """The virtme-ng command line that boots ``kernel`` and runs the guest entry point."""
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
    if shutil.which("vng") is None and runner.target.name == "local":
        # The venv's bin directory is not always on PATH (e.g. `.venv/bin/skycache lab run`).
        venv_bin = str(Path(sys.executable).parent)
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("vng") is None:
            raise MissingProgram("vng")
    with tempfile.TemporaryDirectory(prefix="skycache-lab-") as tmp:
        share = Path(tmp)
        disks = []
        for i, size in enumerate(spec.disk_sizes):
            path = share / f"disk{i}.img"
            with path.open("wb") as f:
                f.truncate(size)  # sparse: costs nothing until the guest writes
            disks.append(path)
        guest_spec = share / "guest.json"
        # What the guest cannot see of the host (its CPU, kernel, load), for the results' provenance.
        facts = {**hostinfo.host_facts(runner), "accel": spec.accel, "lab_kernel": kernel.version}
        guest_spec.write_text(
            json.dumps(
                {
                    "argv": list(argv),
                    "env": {**dict(spec.env), hostinfo.HOST_DIR_ENV: str(share)},
                    "cwd": str(spec.cwd),
                    "disks": len(disks),
                    "path_prepend": str(Path(sys.executable).parent),
                }
            )
        )
        cmd = vng_argv(kernel, spec, guest_spec_path=guest_spec, share_dir=share, disk_paths=disks)
        with hostinfo.HostShare(runner, share, facts):
            return runner.stream(cmd, on_line=on_line, timeout_s=spec.timeout_s)
