"""The lab kernel: Debian's ``linux-image-amd64``, downloaded and unpacked into the cache.

It is never installed into the host's /boot: ``apt-get download`` fetches the versioned package that
the ``linux-image-amd64`` meta-package depends on, ``dpkg-deb -x`` unpacks it, and ``depmod -b``
builds the module index so the guest's modprobe finds dm-cache, LIO and iscsi_tcp there.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from skycache.errors import SkycacheError
from skycache.lab.paths import lab_dir
from skycache.runner import CommandError, Runner

META_PACKAGE = "linux-image-amd64"
_RECORD = "kernel.json"


class KernelNotFetched(SkycacheError):
    pass


@dataclass(frozen=True)
class LabKernel:
    version: str  # e.g. 6.1.0-56-amd64 (the modules directory name)
    package: str  # e.g. linux-image-6.1.0-56-amd64
    package_version: str  # Debian version of the package, e.g. 6.1.192-2
    root: Path  # where the package is unpacked

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules"

    @property
    def source(self) -> str:
        return f"Debian package {self.package} {self.package_version} (via {META_PACKAGE})"


def kernels_dir() -> Path:
    return lab_dir() / "kernel"


def parse_meta_depends(apt_cache_depends_output: str) -> str:
    """The versioned image package that ``apt-cache depends linux-image-amd64`` names."""
    for line in apt_cache_depends_output.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\d\S*)", line)
        if m:
            return m.group(1)
    raise KernelNotFetched(f"cannot tell which kernel {META_PACKAGE} depends on (run 'apt-get update' first)")


def load(directory: Path | None = None) -> LabKernel | None:
    """The fetched kernel, or ``None`` when none has been fetched (or it is incomplete)."""
    base = directory or kernels_dir()
    record = base / _RECORD
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # damaged: like an incomplete fetch, `skycache lab fetch` makes it again
    keys = ("version", "package", "package_version", "root")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in keys):
        return None
    kernel = LabKernel(
        version=data["version"],
        package=data["package"],
        package_version=data["package_version"],
        root=Path(data["root"]),
    )
    if not kernel.vmlinuz.is_file() or not (kernel.modules_dir / kernel.version).is_dir():
        return None
    return kernel


def require(directory: Path | None = None) -> LabKernel:
    kernel = load(directory)
    if kernel is None:
        raise KernelNotFetched("lab kernel not fetched: run 'make setup' or 'skycache lab fetch-kernel'")
    return kernel


def fetch(runner: Runner, directory: Path | None = None, *, force: bool = False) -> LabKernel:
    """Download and unpack the kernel once; later calls return the cached one."""
    base = directory or kernels_dir()
    existing = load(base)
    if existing is not None and not force:
        return existing
    package = parse_meta_depends(runner.query(["apt-cache", "depends", META_PACKAGE]).stdout)
    download = base / "download"
    if download.exists():
        shutil.rmtree(download)
    download.mkdir(parents=True)
    try:
        # apt-get download writes into its working directory; run it there through env -C.
        runner.run(["env", "-C", str(download), "apt-get", "download", package], timeout_s=900)
    except CommandError as exc:
        raise KernelNotFetched(f"could not download {package}: {exc}") from exc
    debs = sorted(download.glob(f"{package}_*.deb"))
    if not debs:
        raise KernelNotFetched(f"apt-get download left no {package} package in {download}")
    deb = debs[-1]
    package_version = deb.name.split("_")[1]
    root = base / "root"
    if root.exists():
        shutil.rmtree(root)
    runner.run(["dpkg-deb", "-x", str(deb), str(root)], timeout_s=900)
    versions = [p.name for p in (root / "lib" / "modules").iterdir() if p.is_dir()]
    if len(versions) != 1:
        raise KernelNotFetched(f"expected one modules directory in {deb.name}, found {versions}")
    version = versions[0]
    runner.run(["depmod", "-b", str(root), version], timeout_s=600)
    kernel = LabKernel(version, package, package_version, root)
    record = {**asdict(kernel), "root": str(root)}
    (base / _RECORD).write_text(json.dumps(record, indent=2) + "\n")
    deb.unlink()  # the unpacked tree is all the lab needs
    return kernel
