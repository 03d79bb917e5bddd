"""The bench scenario (fio suite) as a kind of file ``skycache validate`` checks (skycache.validators)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skycache.validators import Checked, Kind

NAME = "bench scenario"


def claims(doc: Mapping[str, Any]) -> bool:
    # [[stacks]] and [[workloads]] are what a fio suite is made of; a sim scenario has [scenario]
    return ("stacks" in doc or "workloads" in doc) and not isinstance(doc.get("scenario"), Mapping)


def check(path: Path, yes: bool) -> Checked:
    """Load and expand the scenario and apply its max_runs check, as ``bench run`` would."""
    from skycache.bench import scenario as scenarios

    sc = scenarios.load(path)
    scenarios.check_runs(sc, yes=yes)
    most = " at most" if sc.model.auto else ""
    return Checked(
        f"{len(sc.conditions)} conditions, {sc.runs} fio runs{most}",
        {"name": sc.name, "conditions": len(sc.conditions), "runs": sc.runs},
    )


KIND = Kind(NAME, "skycache suite validate", "[[stacks]] and [[workloads]]", claims, check)
