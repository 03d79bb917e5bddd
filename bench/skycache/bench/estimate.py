"""How long a run will take, before its first fio run: runs x (runtime + ramp + per-run overhead).

The overhead (building and tearing down the stack, untimed passes, fio's start) is what an earlier
run of the same scenario measured: from the newest run directory of it under ``--out`` whose records
have start and end times, each record's wall time minus its workload's runtime and ramp, averaged per
condition (and over all conditions for one that run did not have). Without such a run it is
``DEFAULT_OVERHEAD_S``: the quickstart in the TCG lab measured about 10 s per run (docs/bench.md).
Preparing the workspace (images, fill) once per run is not included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skycache.bench import store
from skycache.bench.plan import Planned
from skycache.errors import InvalidInput

DEFAULT_OVERHEAD_S = 10.0


@dataclass(frozen=True)
class Overhead:
    mean_s: float = DEFAULT_OVERHEAD_S
    per_condition_s: dict[str, float] = field(default_factory=dict)  # condition id -> seconds
    source: str = ""  # the run directory it was measured in ("" = the default)

    def of(self, condition_id: str) -> float:
        return self.per_condition_s.get(condition_id, self.mean_s)

    @property
    def said(self) -> str:
        return (
            f"overhead from run {self.source}" if self.source else f"default overhead {self.mean_s:g} s/run"
        )


def measured_overhead(out: Path, scenario: str, runtimes: dict[str, float]) -> Overhead:
    """Per-run overhead from the newest earlier run of ``scenario`` under ``out`` (``runtimes``:
    condition id -> runtime + ramp of its workload); the default when there is none."""
    base = out / scenario
    if not base.is_dir():
        return Overhead()
    runs = sorted((p for p in base.iterdir() if (p / store.RECORDS).is_file()), key=_started, reverse=True)
    for run_dir in runs:
        per: dict[str, list[float]] = {}
        try:
            records = store.RunDir(run_dir).latest_records()
        except InvalidInput:
            continue  # a damaged earlier run says nothing about this one
        for rec in records:
            start, end, cid = rec.get("start"), rec.get("end"), rec.get("condition")
            if rec.get("status") != "ok" or not isinstance(cid, str):
                continue
            if not (isinstance(start, int | float) and isinstance(end, int | float)) or end < start:
                continue
            per.setdefault(cid, []).append(max(0.0, end - start - runtimes.get(cid, 0.0)))
        if per:
            means = {cid: sum(v) / len(v) for cid, v in per.items()}
            every = [x for v in per.values() for x in v]
            return Overhead(sum(every) / len(every), means, run_dir.name)
    return Overhead()


def _started(run_dir: Path) -> tuple[str, str]:
    try:
        started = str(store.read_manifest(run_dir).get("started", ""))
    except InvalidInput:
        started = ""
    return started, run_dir.name


def seconds(planned: Sequence[Planned], overhead: Overhead) -> float:
    return sum(_runtime(p) + overhead.of(p.condition.id) for p in planned)


def _runtime(p: Planned) -> float:
    w = p.condition.workload
    return w.runtime_s + w.ramp_s


def runtimes(planned: Sequence[Planned]) -> dict[str, float]:
    return {p.condition.id: _runtime(p) for p in planned}


def fmt_duration(s: float) -> str:
    """``4m10s``, ``1h05m``, ``35s``."""
    if not math.isfinite(s) or s < 0:
        return "?"
    total = round(s)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def fmt_about(s: float) -> str:
    """Coarse, for an estimate: ``about 6 min``, ``about 2.5 h``."""
    if s < 90:
        return f"about {max(1, round(s))} s"
    if s < 5400:
        return f"about {round(s / 60)} min"
    return f"about {s / 3600:.1f} h"


def line(
    first: Sequence[Planned], most: Sequence[Planned], overhead: Overhead, warmup: Planned | None = None
) -> str:
    """ "estimate: 24 runs, about 6 min (overhead from run X)"; with "auto" repetitions ``first`` is
    the schedule to min_repetitions and ``most`` to the cap, else both are the schedule. ``warmup``:
    the untimed run before the first one, counted in the time, not in the runs."""
    extra = seconds([warmup], overhead) if warmup is not None else 0.0
    lo, hi = seconds(first, overhead) + extra, seconds(most, overhead) + extra
    plus = " and a warm-up run" if warmup is not None else ""
    if len(first) == len(most):
        return f"estimate: {len(most)} runs{plus}, {fmt_about(hi)} ({overhead.said})"
    return (
        f"estimate: {len(first)} to {len(most)} runs{plus}, {fmt_about(lo)} to "
        f"{fmt_about(hi).removeprefix('about ')} ({overhead.said})"
    )
