"""Choose KVM or TCG for the lab.

A ``/dev/kvm`` that exists is not proof that KVM works: on the project's machines a KVM guest hangs
instead of failing. So ``auto`` boots a probe guest with KVM under a hard timeout and falls back to
TCG when it does not finish; the answer is remembered per machine and kernel, so only the first boot
pays for the probe.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from skycache.errors import InvalidInput
from skycache.lab.kernel import LabKernel
from skycache.lab.paths import lab_dir
from skycache.lab.vm import Accel, LabSpec, boot
from skycache.runner import CommandError, SystemRunner

AccelRequest = Literal["auto", "kvm", "tcg"]
PROBE_TIMEOUT_S = 20.0  # a KVM boot takes a few seconds; a TCG one about 30 s


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str


def machine_key() -> str:
    for candidate in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        if candidate.is_file():
            return candidate.read_text().strip()
    return os.uname().nodename


def _record_path() -> Path:
    return lab_dir() / "accel.json"


def remembered(kernel: LabKernel) -> AccelChoice | None:
    path = _record_path()
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # a damaged record is a forgotten one: the probe runs again and rewrites it
    if not isinstance(data, dict) or not isinstance(data.get("accel"), str):
        return None
    if data.get("machine") != machine_key() or data.get("kernel") != kernel.version:
        return None
    return AccelChoice(data["accel"], str(data.get("reason", "")) + " (remembered)")


def remember(kernel: LabKernel, choice: AccelChoice) -> None:
    path = _record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": machine_key(),
        "kernel": kernel.version,
        "accel": choice.accel,
        "reason": choice.reason,
        "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")


def kvm_device_usable() -> tuple[bool, str]:
    dev = Path("/dev/kvm")
    if not dev.exists():
        return False, "/dev/kvm does not exist"
    if not os.access(dev, os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    return True, "/dev/kvm exists"


def probe_kvm(runner: SystemRunner, kernel: LabKernel, timeout_s: float = PROBE_TIMEOUT_S) -> AccelChoice:
    """Boot a guest with KVM that runs ``true``; KVM only if it finishes in time."""
    ok, why = kvm_device_usable()
    if not ok:
        return AccelChoice("tcg", f"{why}; using TCG (software emulation)")
    spec = LabSpec(memory="512M", cpus=1, accel="kvm", timeout_s=timeout_s)
    started = time.monotonic()
    try:
        code = boot(runner, kernel, spec, ["true"], on_line=lambda _line: None)
    except CommandError:
        return AccelChoice("tcg", f"a KVM probe boot did not finish within {timeout_s:g}s; using TCG")
    if code != 0:
        return AccelChoice("tcg", f"a KVM probe boot failed (exit {code}); using TCG")
    return AccelChoice("kvm", f"a KVM probe boot succeeded in {time.monotonic() - started:.1f}s")


def choose(requested: AccelRequest, runner: SystemRunner, kernel: LabKernel) -> AccelChoice:
    forced = os.environ.get("SKYCACHE_LAB_ACCEL")
    if requested == "auto" and forced:
        if forced not in ("kvm", "tcg"):
            raise InvalidInput(f"SKYCACHE_LAB_ACCEL={forced!r} must be kvm or tcg")
        requested = forced  # type: ignore[assignment]
    if requested == "kvm":
        return AccelChoice("kvm", "asked for KVM")
    if requested == "tcg":
        return AccelChoice("tcg", "asked for TCG")
    known = remembered(kernel)
    if known is not None:
        return known
    choice = probe_kvm(runner, kernel)
    remember(kernel, choice)
    return choice
