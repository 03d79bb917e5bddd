"""The sim scenario and the sim calibration as kinds of file ``skycache validate`` checks
(skycache.validators); ``check_scenario`` is ``skycache sim check``'s check too."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skycache.validators import Checked, Kind

SCENARIO = "sim scenario"
CALIBRATION = "sim calibration"
CALIBRATION_FORMAT = "skycache-sim-calibration/"


def claims_scenario(doc: Mapping[str, Any]) -> bool:
    return isinstance(doc.get("scenario"), Mapping)


def claims_calibration(doc: Mapping[str, Any]) -> bool:
    return str(doc.get("format", "")).startswith(CALIBRATION_FORMAT)


def check_scenario(path: Path, yes: bool, calibration: Path | None = None) -> Checked:
    """Every variant and sweep point, the trace and the calibration (every value a variant uses
    present and fit for its role); runs nothing."""
    import numpy as np

    from skycache.errors import InvalidInput
    from skycache.sim.calibration import load_calibration
    from skycache.sim.calibration_use import model_rates
    from skycache.sim.scenario import load_scenario
    from skycache.sim.swf import load_swf
    from skycache.sim.workload import generate

    sf = load_scenario(path, yes=yes)
    chosen = calibration or sf.base.calibration
    if chosen is None:
        raise InvalidInput("no calibration: pass --calibration FILE or set scenario.calibration")
    cal = load_calibration(chosen)
    for sc in sf.all_variants():
        model_rates(sc, cal)  # every value this variant uses is there and fits its role
        if sc.workload.trace is not None:
            load_swf(sc.workload.trace)
            # The trace decides how many VMs start and how long the run lasts: check those bounds.
            generate(sc, np.random.default_rng(sc.seed))
    variants, points = 1 + len(sf.variants), len(sf.sweep_points())
    return Checked(
        f"{sf.base.name}: {variants} variant(s), {points} sweep point(s)",
        {"name": sf.base.name, "variants": variants, "sweep_points": points, "calibration": str(chosen)},
    )


def check_calibration(path: Path, yes: bool) -> Checked:
    from skycache.sim.calibration import load_calibration

    cal = load_calibration(path)
    return Checked(f"{len(cal.values)} values", {"values": len(cal.values)})


SCENARIO_KIND = Kind(SCENARIO, "skycache sim check", "a [scenario] table", claims_scenario, check_scenario)
CALIBRATION_KIND = Kind(
    CALIBRATION,
    "skycache validate",
    f'format = "{CALIBRATION_FORMAT}N"',
    claims_calibration,
    check_calibration,
)
