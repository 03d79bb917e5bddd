"""The rates one scenario takes from its calibration, each checked against its role.

A scenario uses only some values (no read cache: no ``cache.hit_bw``; no NAT: no ``nat.*``; a
scenario's own ``repository.read_bw`` replaces the calibrated one), so only those are required: a
calibration derived from a few runs is usable for the scenarios it covers. A required value that is
absent, or whose source workload does not fit its role and is not listed in ``accept_role_mismatch``,
stops the run with one line naming the value, its source and what would supply it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skycache.errors import InvalidInput
from skycache.sim.calibration import Calibration
from skycache.sim.calibration_roles import how_to_measure, judge, role_of
from skycache.sim.scenario import Scenario

# Stands for a value the scenario does not use: any arithmetic with it shows as NaN, not as a number.
UNUSED = math.nan


@dataclass(frozen=True)
class ModelRates:
    """SI values: bytes/s and seconds; :data:`UNUSED` where this scenario takes none."""

    read_bw: float
    write_bw: float
    latency: float
    hit_bw: float
    flush_bw: float
    nat_cpu_per_packet: float
    nat_cpu_per_conn: float


def writes_reach_repository(sc: Scenario) -> bool:
    """Whether any VM write crosses to the repository: written through, or synchronised at the end."""
    c = sc.cluster
    return sc.workload.write_bytes > 0 and (not c.write_cache or c.sync_fraction > 0)


def _missing(cal: Calibration, name: str) -> InvalidInput:
    where = cal.path or "calibration"
    parts = name.split(".")
    absent = ""
    if parts[0] == "repository" and parts[1] not in cal.backends:
        absent = f" (it has no repository backend {parts[1]!r}; has: {', '.join(cal.backends) or 'none'})"
    return InvalidInput(
        f"{where}: no {name}{absent}, the {role_of(name).title}, which this scenario uses: "
        f"give skycache sim calibrate {how_to_measure(name)}, or take the value from another "
        "calibration with --base FILE"
    )


def require(cal: Calibration, name: str) -> float:
    """The value of ``name``, refused when absent or when its source does not fit its role."""
    rate = cal.get(name)
    if rate is None:
        raise _missing(cal, name)
    verdict = judge(name, rate.source)
    if not verdict.fits and name not in cal.accept_role_mismatch:
        role = role_of(name)
        raise InvalidInput(
            f"{cal.path or 'calibration'}: {name} = {rate.text} ({rate.source.describe()}) does not fit "
            f"its role, the {role.title}, which wants {role.wants}; measure it ({how_to_measure(name)}) "
            f"or list {name!r} in the calibration's accept_role_mismatch to use it anyway"
        )
    return rate.value


def model_rates(sc: Scenario, cal: Calibration) -> ModelRates:
    r, c = sc.repository, sc.cluster
    repo = f"repository.{r.backend}"
    syncs = sc.workload.write_bytes > 0 and c.write_cache and c.sync_fraction > 0
    nat = sc.nat.mode != "none"
    return ModelRates(
        # A scenario's own repository rates replace the calibrated ones (its [repository] table).
        read_bw=r.read_bw or require(cal, f"{repo}.read_bw"),
        write_bw=(r.write_bw or require(cal, f"{repo}.write_bw")) if writes_reach_repository(sc) else UNUSED,
        latency=require(cal, f"{repo}.latency") if r.latency is None else r.latency,
        hit_bw=require(cal, "cache.hit_bw") if c.read_cache > 0 else UNUSED,
        flush_bw=require(cal, "cache.flush_bw") if syncs else UNUSED,
        # Without NAT no gateway exists, so it costs nothing.
        nat_cpu_per_packet=require(cal, "nat.cpu_per_packet") if nat else 0.0,
        nat_cpu_per_conn=require(cal, "nat.cpu_per_conn") if nat else 0.0,
    )
