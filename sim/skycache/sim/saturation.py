"""Where each design saturates, read from a sweep's table (one row per run, see :mod:`sweep`).

The rule (docs/sim.md, "Central SAN vs distributed repository at 10,000 nodes"): along the swept
parameter, in the order of the grid (written increasing: start rate or storm size), a design is
saturated at the first point where

* the start-latency p99 exceeds ``latency_factor`` times its value at the first point (the
  unloaded value: the sweep must start where the design is idle), or
* the mean utilisation of its busiest resource while VMs start (the largest of the repository links,
  the repository disks and the rack uplinks: the summary's ``*_util_mean``) exceeds ``util_limit``.

Replications of a point are averaged first. Only the table is read: nothing is simulated here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from skycache.errors import InvalidInput

LATENCY_FACTOR = 2.0
UTIL_LIMIT = 0.9
# The summary's mean utilisations while VMs start: the resources a fetch crosses.
RESOURCES = ("repo_link_util_mean", "repo_disk_util_mean", "rack_uplink_util_mean")


@dataclass(frozen=True)
class Saturation:
    variant: str
    param: str
    unloaded_p99_s: float
    last_below: Any  # the last point before saturation (None: saturated at the first point)
    saturated_at: Any  # the first saturated point (None: not within the sweep)
    reason: str  # what crossed its limit there, with the figures


def swept_param(table: pd.DataFrame, param: str | None) -> str:
    """The ``param:`` column to read: ``param`` (SECTION.KEY), or the only swept one."""
    swept = [c.removeprefix("param:") for c in table.columns if c.startswith("param:")]
    if param is None:
        if len(swept) != 1:
            raise InvalidInput(f"the sweep varies {', '.join(swept) or 'nothing'}: name one with --param")
        return swept[0]
    if param not in swept:
        raise InvalidInput(f"the sweep does not vary {param} (it varies: {', '.join(swept) or 'nothing'})")
    return param


def _busiest(row: pd.Series) -> tuple[str, float]:
    known = [(name, float(row[name])) for name in RESOURCES if name in row and not _missing(row[name])]
    return max(known, key=lambda kv: kv[1], default=("none", 0.0))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def find_saturation(
    table: pd.DataFrame,
    param: str | None = None,
    *,
    latency_factor: float = LATENCY_FACTOR,
    util_limit: float = UTIL_LIMIT,
) -> list[Saturation]:
    """One :class:`Saturation` per variant, in the table's order."""
    key = swept_param(table, param)
    col = f"param:{key}"
    points = list(dict.fromkeys(table[col].tolist()))  # the grid's order, as the sweep ran it
    means = (
        table.assign(_point=table[col].map(points.index))
        .groupby(["variant", "_point"], sort=False)[["start_latency_p99_s", *RESOURCES]]
        .mean()
    )
    out = []
    for variant in dict.fromkeys(table.variant.tolist()):
        rows = means.loc[variant].sort_index()
        unloaded = float(rows.iloc[0]["start_latency_p99_s"])
        last, found, reason = None, None, "within the limits at every point"
        for point, row in rows.iterrows():
            p99 = float(row["start_latency_p99_s"])
            name, util = _busiest(row)
            crossed = []
            if p99 > latency_factor * unloaded:
                crossed.append(f"p99 {p99:.3g} s > {latency_factor:g} x {unloaded:.3g} s")
            if util > util_limit:
                crossed.append(f"{name.removesuffix('_util_mean')} {util:.1%} > {util_limit:.0%}")
            if crossed:
                found, reason = points[int(point)], "; ".join(crossed)
                break
            last = points[int(point)]
        out.append(Saturation(variant, key, unloaded, last, found, reason))
    return out
