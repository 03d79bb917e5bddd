"""Facts about the machine that runs the lab, for the provenance of results measured inside it.

Inside the guest the host is invisible: ``uname -r`` is the lab kernel, ``/proc/cpuinfo`` shows the
CPU qemu emulates (TCG) and ``/proc/loadavg`` the guest's own load. So the booting side writes what
the guest cannot see into the private directory it shares with the guest (:data:`HOST_DIR_ENV` names
it there): ``host.json`` once, and ``loadavg`` every few seconds while the lab runs.

Every fact is read through the runner; a missing tool or file is ``None``, never an error: provenance
must not stop a benchmark.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from skycache.errors import SkycacheError
from skycache.runner import Runner

HOST_DIR_ENV = "SKYCACHE_LAB_HOST_DIR"
HOST_FACTS = "host.json"
HOST_LOAD = "loadavg"
LOAD_PERIOD_S = 2.0


def first_line(runner: Runner, argv: list[str]) -> str | None:
    """The first non-empty output line of a read-only command; ``None`` if it is missing or fails."""
    try:
        done = runner.query(argv, check=False, timeout_s=20)
    except SkycacheError:  # MissingProgram, timeouts
        return None
    if done.returncode != 0:
        return None
    lines = [line.strip() for line in (done.stdout or done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else None


def cpu_model(runner: Runner) -> str | None:
    """``model name`` of /proc/cpuinfo (x86), else ``Hardware``/``cpu model`` lines of other arches."""
    text = runner.read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return None


def cpu_count(runner: Runner) -> int | None:
    text = runner.read_text("/proc/cpuinfo") or ""
    n = sum(1 for line in text.splitlines() if line.split(":")[0].strip() == "processor")
    return n or None


def host_facts(runner: Runner) -> dict[str, Any]:
    """CPU model and count, kernel, qemu and virtme-ng versions of the runner's machine."""
    return {
        "cpu_model": cpu_model(runner),
        "cpus": cpu_count(runner),
        "kernel": first_line(runner, ["uname", "-r"]),
        "qemu_version": first_line(runner, ["qemu-system-x86_64", "--version"]),
        "vng_version": first_line(runner, ["vng", "--version"]),
    }


def parse_loadavg(text: str | None) -> dict[str, float] | None:
    """The three load averages of /proc/loadavg (``0.52 0.58 0.59 1/467 12345``)."""
    parts = (text or "").split()
    try:
        one, five, fifteen = (float(p) for p in parts[:3])
    except ValueError:
        return None
    return {"load1": one, "load5": five, "load15": fifteen}


class HostShare:
    """Writes host facts into the guest's shared directory and refreshes the host's load average
    there until closed (a daemon thread: a crashed boot cannot leave it running)."""

    def __init__(self, runner: Runner, share: Path, facts: dict[str, Any] | None) -> None:
        """``facts=None`` keeps the facts already there (``lab exec`` on a lab that is up)."""
        self.runner = runner
        self.share = share
        if facts is not None:
            (share / HOST_FACTS).write_text(json.dumps(facts, sort_keys=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="skycache-host-load", daemon=True)

    def write_load(self) -> None:
        """The host's load average now, into the share (the loop calls it every few seconds)."""
        load = parse_loadavg(self.runner.read_text("/proc/loadavg"))
        if load is None:
            return
        tmp = self.share / (HOST_LOAD + ".tmp")
        tmp.write_text(json.dumps({**load, "t": time.time()}))
        tmp.replace(self.share / HOST_LOAD)  # the guest never reads half a line

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # the share is going away with the boot
                self.write_load()
            self._stop.wait(LOAD_PERIOD_S)

    def __enter__(self) -> HostShare:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
