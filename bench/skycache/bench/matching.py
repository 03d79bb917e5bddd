"""Which condition of a run is the counterpart of another: the same factors but the named ones.

Shared by the comparison (``--baseline stack=lvm-iscsi``: every condition against the one on that
stack) and by speeds relative to a reference stack (``--relative-to lvm-local``).
"""

from __future__ import annotations

import pandas as pd

from skycache.bench.scenario import KNOWN_FACTORS


def varying(rep: pd.DataFrame) -> list[str]:
    """The factors that take more than one value across ``rep``."""
    return [c for c in KNOWN_FACTORS if c in rep.columns and rep[c].nunique(dropna=False) > 1]


def conditions(rep: pd.DataFrame, run: str) -> pd.DataFrame:
    """One row per condition of ``run``: its label and factors."""
    cols = [c for c in ["label", *KNOWN_FACTORS] if c in rep.columns]
    return rep[rep["run_id"] == run][cols].drop_duplicates("label")


def counterpart(
    conds: pd.DataFrame, row: pd.Series, assign: dict[str, str], varying_factors: list[str]
) -> str | None:
    """The label of the condition that has ``assign``'s values and ``row``'s other factors.

    If there is none, ``cache_state`` is ignored (a warm cached stack against an uncached stack, which
    has no cache state), and of several matches the cold one is taken.
    """
    for ignore in ((), ("cache_state",)):
        sel = conds
        for f in varying_factors:
            if f in assign:
                sel = sel[sel[f].astype(str) == assign[f]]
            elif f not in ignore:
                sel = sel[sel[f] == row[f]]
        if not sel.empty:
            if "cache_state" in sel.columns and len(sel) > 1:
                cold = sel[sel["cache_state"] == "cold"]
                sel = cold if not cold.empty else sel
            return str(sel.iloc[0]["label"])
    return None
