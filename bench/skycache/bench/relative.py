"""Speed relative to a reference stack measured in the same round: what a machine's speed cancels.

Under TCG a lab run's absolute IOPS say as much about the machine as about the code: a fresh machine
of the same kind ran the quickstart at half the IOPS of another on every stack, and a load of 3
beside the lab cut the regression run's IOPS to 0.35x (docs/bench.md, "Regression gate in CI"). A
gate on absolute figures against a committed baseline therefore fails for the machine. What it can
gate on is a ratio measured side by side: the scenario also runs a reference stack (lvm-local beside
lvm-iscsi), interleaved, so that repetition k of every condition runs in round k, seconds apart; each
condition's value in round k divided by its reference condition's value in round k keeps what the
code changes (the iSCSI path on top of the same LVM volume) and cancels what slows both.

Only the speed metrics (``SPEED``) are divided: the cache metrics are counts and per-byte figures that
do not scale with the machine. The reference condition of a condition is the one of the same run that
differs only in its stack (a cached stack's ``cache_state`` is ignored for the match: the reference
has no cache); a round where either side failed is dropped from that condition, and counted like any
value without a logarithm. The reference stack's own rows are not kept: against itself every ratio
is 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from skycache.bench import matching
from skycache.errors import InvalidInput

SPEED = ("iops", "bw_bytes", "lat_mean_ns", "lat_p99_ns")


def relative_to(rep: pd.DataFrame, stack: str) -> pd.DataFrame:
    """``rep`` (one row per run x condition x repetition x direction) with each condition's speed
    metrics divided by those of its reference condition on ``stack`` in the same run and round; the
    reference stack's own rows left out."""
    if "stack" not in rep.columns:
        raise InvalidInput(f"--relative-to {stack}: the runs record no stack factor")
    varying = matching.varying(rep)
    kept: list[pd.DataFrame] = []
    for run in dict.fromkeys(rep["run_id"]):
        mine = rep[rep["run_id"] == run]
        stacks = [str(s) for s in dict.fromkeys(mine["stack"])]
        if stack not in stacks:
            raise InvalidInput(
                f"--relative-to {stack}: run {run} has no such stack (its stacks: {', '.join(stacks)})"
            )
        kept += [_divided(mine, label, ref) for label, ref in _references(mine, run, stack, varying)]
    if not kept:
        return rep.iloc[0:0]
    return pd.concat(kept, ignore_index=True)


def _references(run_rep: pd.DataFrame, run: str, stack: str, varying: list[str]) -> list[tuple[str, str]]:
    """(condition label, reference label) for every condition of one run not on ``stack``."""
    conds = matching.conditions(run_rep, run)
    out = []
    for _, row in conds.iterrows():
        if str(row["stack"]) == stack:
            continue
        ref = matching.counterpart(conds, row, {"stack": stack}, varying)
        if ref is None:
            raise InvalidInput(
                f"--relative-to {stack}: condition {row['label']} of run {run} has no counterpart on "
                f"{stack} (the same workload and factors on that stack)"
            )
        out.append((str(row["label"]), ref))
    return out


def _divided(run_rep: pd.DataFrame, label: str, ref: str) -> pd.DataFrame:
    """One condition's rows with its speed metrics divided by its reference's in the same round."""
    mine = run_rep[run_rep["label"] == label]
    theirs = run_rep[run_rep["label"] == ref].set_index(["rep", "direction"])
    out = mine.copy()
    rounds = pd.MultiIndex.from_frame(mine[["rep", "direction"]])
    for metric in SPEED:
        if metric not in out.columns:
            continue
        reference = theirs[metric].reindex(rounds).to_numpy(dtype=float)  # NaN: that round failed
        with np.errstate(divide="ignore", invalid="ignore"):
            out[metric] = mine[metric].to_numpy(dtype=float) / reference
    return out


# How far the reference stack's own speed may move from the baseline run's before the ratios are not
# trusted. Measured (docs/bench.md, "Regression gate in CI"): with the reference at 0.73x of the
# baseline (a fresh machine's drift) the ratio held (A/A 0.96x); with two CPU hogs beside the lab the
# reference ran at 0.05x and lvm-iscsi's ratio moved 4.2x, because contention slows a CPU-bound local
# read far more than an iSCSI read that waits on the target. 4x lies between those two points: a
# judgement, not a measured edge.
MAX_DRIFT = 4.0


@dataclass(frozen=True)
class Drift:
    """The reference stack's geometric mean IOPS in one run over that in the baseline run (``n``: its
    successful values, one per condition, direction and repetition)."""

    run: str
    baseline_run: str
    stack: str
    ratio: float
    n: int
    n_baseline: int
    max_load1: float | None  # the run's highest host load average over its fio runs, when recorded

    def beyond(self, limit: float) -> bool:
        return not math.isfinite(self.ratio) or max(self.ratio, 1 / self.ratio) > limit

    def line(self) -> str:
        load = f"; host load average up to {self.max_load1:.2f}" if self.max_load1 is not None else ""
        return (
            f"reference {self.stack} ran at {self.ratio:.2f}x its speed in {self.baseline_run} "
            f"(geo mean IOPS of n={self.n}/{self.n_baseline} values{load})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "run": self.run, "baseline_run": self.baseline_run, "stack": self.stack,
            "ratio": self.ratio if math.isfinite(self.ratio) else None,
            "n": self.n, "n_baseline": self.n_baseline, "max_load1": self.max_load1,
        }  # fmt: skip


def reference_drift(
    rep: pd.DataFrame, stack: str, base_run: str, loads: Mapping[str, float | None] | None = None
) -> list[Drift]:
    """For every run but ``base_run``: its reference stack's IOPS against the baseline run's (``rep``
    is the per-repetition table before division; ``loads`` maps a run to its highest load average)."""

    def iops(run: str) -> np.ndarray:
        sel = rep[(rep["run_id"] == run) & (rep["stack"].astype(str) == stack)]
        values: np.ndarray = sel["iops"].to_numpy(dtype=float)
        kept: np.ndarray = values[np.isfinite(values) & (values > 0)]
        return kept

    base = iops(base_run)
    out = []
    for run in dict.fromkeys(rep["run_id"]):
        if run == base_run:
            continue
        mine = iops(str(run))
        ratio = (
            float(np.exp(np.log(mine).mean() - np.log(base).mean())) if mine.size and base.size else math.nan
        )
        load = (loads or {}).get(str(run))
        out.append(Drift(str(run), base_run, stack, ratio, int(mine.size), int(base.size), load))
    return out


def max_load1(records: Iterable[Mapping[str, Any]]) -> float | None:
    """The highest one-minute host load average the records of one run saw over their fio runs."""
    loads = [
        float(load["load1"])
        for rec in records
        if isinstance(noise := rec.get("noise"), Mapping)
        and isinstance(load := noise.get("host_load"), Mapping)
        and isinstance(load.get("load1"), int | float)
    ]
    return max(loads) if loads else None
