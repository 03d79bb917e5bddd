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
