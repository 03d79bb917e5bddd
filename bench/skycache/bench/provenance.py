"""Provenance and noise of a run: what it ran on, and how busy the machine was while it measured.

The manifest's ``environment`` says where the stack ran (``kernel`` is the kernel the storage stack ran
on: the lab kernel inside the lab), which tools measured it and from which commit; ``host`` says what
the lab ran on (inside the lab these facts come from the booting side, :mod:`skycache.lab.hostinfo`).
Each repetition's record gets ``noise``: the host's load average at the end of its fio run and the
CPU, idle and steal time of the machine the stack ran on (the guest, in the lab) over the run
(deltas of /proc/stat), the signals that explain a
repetition far from its siblings (design notes, section 9).

Nothing here may stop a benchmark: a missing tool or file is recorded as ``None``.
"""

from __future__ import annotations

import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from skycache.errors import SkycacheError
from skycache.lab import hostinfo
from skycache.runner import Runner

# /proc/stat counts in USER_HZ, which the kernel fixes at 100 for user space on every architecture
# Linux runs skycache on (see proc(5), "USER_HZ"); a remote target's value cannot differ.
USER_HZ = 100
_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def in_lab() -> bool:
    return os.environ.get("SKYCACHE_IN_LAB") == "1"


def _lab_share() -> Path | None:
    d = os.environ.get(hostinfo.HOST_DIR_ENV)
    return Path(d) if in_lab() and d else None


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def guest_accel(runner: Runner) -> str:
    """kvm or tcg from inside the lab (a KVM guest gets the paravirtual kvm-clock; TCG has none);
    ``none`` outside it."""
    if not in_lab():
        return "none"
    sources = runner.read_text("/sys/devices/system/clocksource/clocksource0/available_clocksource")
    if sources is None:
        return "unknown"
    return "kvm" if "kvm-clock" in sources else "tcg"


def git_state(runner: Runner) -> tuple[str | None, bool | None]:
    """The commit of the working directory and whether tracked files differ from it."""
    commit = hostinfo.first_line(runner, ["git", "rev-parse", "HEAD"])
    if commit is None:
        return None, None
    try:
        done = runner.query(
            ["git", "status", "--porcelain", "--untracked-files=no"], check=False, timeout_s=20
        )
    except SkycacheError:
        return commit, None
    return commit, bool(done.stdout.strip()) if done.returncode == 0 else None


def skycache_version() -> str | None:
    try:
        return version("skycache")
    except PackageNotFoundError:
        return None


def environment(runner: Runner, where: str) -> dict[str, Any]:
    """The manifest's ``environment``: the machine the stack ran on, and the lab's host."""
    commit, dirty = git_state(runner)
    lab = _lab_share()
    host = _json_file(lab / hostinfo.HOST_FACTS) if lab else None
    if host is None:
        # Not in the lab (or a lab booted by an older skycache): this machine is the host, unless
        # we are inside a lab that did not say, where the guest's view would be a lie.
        host = hostinfo.host_facts(runner) if not in_lab() else {}
    accel = str(host.get("accel") or guest_accel(runner)) if in_lab() else "none"
    kernel = hostinfo.first_line(runner, ["uname", "-r"]) or os.uname().release
    return {
        "where": where,
        "accel": accel,
        "kernel": kernel,  # the kernel the storage stack ran on (the lab kernel in the lab)
        "lab_kernel": kernel if in_lab() else None,
        "hostname": os.uname().nodename,
        "cpus": os.cpu_count(),
        "fio_version": hostinfo.first_line(runner, ["fio", "--version"]),
        "skycache_version": skycache_version(),
        # "+dirty" kept in the commit for the readers of format 1; git_dirty says it as a fact
        "git_commit": (commit + ("+dirty" if dirty else "")) if commit else None,
        "git_dirty": dirty,
        "host": {
            key: host.get(key) for key in ("cpu_model", "cpus", "kernel", "qemu_version", "vng_version")
        },
    }


# -- noise of one repetition ----------------------------------------------------------------------


def cpu_times(runner: Runner) -> dict[str, int] | None:
    """The aggregate ``cpu`` line of /proc/stat, in USER_HZ ticks (``None`` if unreadable)."""
    text = runner.read_text("/proc/stat") or ""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                ticks = [int(p) for p in parts[1 : 1 + len(_STAT_FIELDS)]]
            except ValueError:
                return None
            ticks += [0] * (len(_STAT_FIELDS) - len(ticks))  # old kernels lack steal
            return dict(zip(_STAT_FIELDS, ticks, strict=True))
    return None


def cpu_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, float] | None:
    """CPU seconds spent over an interval (summed over CPUs): busy, idle, iowait, steal, and the
    steal share of all time; ``None`` when either sample is missing or the counters went back."""
    if before is None or after is None:
        return None
    d = {k: after[k] - before[k] for k in _STAT_FIELDS}
    total = sum(d.values())
    if total <= 0 or min(d.values()) < 0:
        return None
    busy = total - d["idle"] - d["iowait"] - d["steal"]
    return {
        "cpu_busy_s": busy / USER_HZ,
        "idle_s": d["idle"] / USER_HZ,
        "iowait_s": d["iowait"] / USER_HZ,
        "steal_s": d["steal"] / USER_HZ,
        "steal_pct": round(100.0 * d["steal"] / total, 2),
    }


def host_load(runner: Runner) -> dict[str, float | None] | None:
    """The host's load average now: from the booting side's file inside the lab (with its age),
    from /proc/loadavg elsewhere."""
    lab = _lab_share()
    if lab is not None:
        data = _json_file(lab / hostinfo.HOST_LOAD)
        if data is None:
            return None
        load = hostinfo.parse_loadavg(" ".join(str(data.get(k, "")) for k in ("load1", "load5", "load15")))
        if load is None:
            return None
        t = data.get("t")
        return {**load, "age_s": round(time.time() - t, 1) if isinstance(t, (int, float)) else None}
    if in_lab():
        return None  # the guest's own load average is not the host's
    here = hostinfo.parse_loadavg(runner.read_text("/proc/loadavg"))
    return None if here is None else {**here, "age_s": 0.0}


def noise(runner: Runner, before: dict[str, int] | None, wall_s: float) -> dict[str, Any]:
    """The ``noise`` entry of a repetition's record, taken right after its fio run."""
    return {
        "wall_s": round(wall_s, 2),
        "host_load": host_load(runner),
        "cpu": cpu_delta(before, cpu_times(runner)),
    }
