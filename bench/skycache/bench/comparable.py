"""Which runs may be compared: the facts of two manifests that must agree, and what differs.

A ratio between two runs means something only when they measured the same thing the same way: the
same acceleration (a TCG run is 10-50x slower than KVM), the same kernel under the stack, the same
fio, the same stacks, workloads and shaping. ``bench compare`` and the gate compare each run with the
first (the baseline) on these :data:`KEYS` and refuse a difference unless it is allowed by name
(``--allow-different kernel``); an allowed difference is named in the output.

A run written before a fact was recorded has it *unknown*. Unknown is refused like a difference (it
may be one), and allowed the same way: the honest default for a gate is to say "cannot tell".

Runs are identified by their directory: two run directories with the same run id (``ci`` and a
baseline copied from ``ci``) stay two runs, labelled by their paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skycache.bench import natresults
from skycache.bench.store import find_runs
from skycache.errors import InvalidInput, SkycacheError

if TYPE_CHECKING:
    import pandas as pd

    from skycache.bench.scenario import Scenario

KEYS = ("acceleration", "kernel", "fio", "stacks", "workloads", "shaping")


class Unknown:
    """A fact the run's manifest does not record (a run from before it was recorded)."""

    def __repr__(self) -> str:
        return "unknown"


UNKNOWN = Unknown()
Fact = Any  # a JSON-like value, or UNKNOWN


def workload_descriptions(scenario: Scenario) -> dict[str, dict[str, Any]]:
    """What each workload of a scenario is, as validated (defaults filled in, so that a file that
    spells out a default describes the same workload as one that leaves it out)."""
    return {w.name: w.model_dump(mode="json") for w in scenario.model.workloads}


def _known(value: Any) -> Fact:
    if value is None or value == "" or value == "unknown" or value == "fio not found":
        return UNKNOWN
    return value


def _with_servers(value: Fact, manifest: Mapping[str, Any], field: str) -> Fact:
    """In a ``where = "hosts"`` run the stacks ran on the fio servers: their facts count too."""
    servers = manifest.get("host_environment")
    if not isinstance(servers, dict) or not servers:
        return value
    per = {
        name: _known(env.get(field)) if isinstance(env, dict) else UNKNOWN for name, env in servers.items()
    }
    if any(v is UNKNOWN for v in per.values()):
        return UNKNOWN
    return {"client": value, "servers": dict(sorted(per.items()))}


def _workloads(run_dir: Path, manifest: Mapping[str, Any]) -> Fact:
    recorded = manifest.get("workloads")
    if isinstance(recorded, dict) and recorded:
        jobs: Fact = recorded
    else:
        # Runs of format 1 did not record them; the scenario file they ran is beside them.
        from skycache.bench import scenario as scenarios

        try:
            jobs = workload_descriptions(scenarios.load(run_dir / "scenario.toml"))
        except (SkycacheError, OSError):
            return UNKNOWN
    size = manifest.get("image_size")
    return {"image_size": size, "jobs": jobs} if size else UNKNOWN


def facts(run_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Fact]:
    """The comparability facts of one run (UNKNOWN where its manifest does not say)."""
    env = manifest.get("environment")
    env = env if isinstance(env, dict) else {}
    shaping = manifest.get("shaping")
    stacks = manifest.get("stacks")
    workloads: Fact = None
    if natresults.is_nat(manifest):  # its facts are elsewhere in its manifest
        env = natresults.facts(manifest)
        stacks, workloads = env["stacks"], env["workloads"]
    return {
        "acceleration": _known(env.get("accel")),
        "kernel": _with_servers(_known(env.get("lab_kernel") or env.get("kernel")), manifest, "kernel"),
        "fio": _with_servers(_known(env.get("fio_version")), manifest, "fio_version"),
        "stacks": stacks if isinstance(stacks, dict) and stacks else UNKNOWN,
        "workloads": workloads if workloads is not None else _workloads(run_dir, manifest),
        # the detail is prose derived from the numbers; the name and numbers are the profile
        "shaping": (
            {k: v for k, v in shaping.items() if k != "detail"}
            if isinstance(shaping, dict) and shaping.get("name")
            else UNKNOWN
        ),
    }


def _show(value: Any) -> str:
    if value is UNKNOWN:
        return "unknown"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Where two JSON-like values differ, as ``path: a vs b`` (nested keys joined by dots)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(f"{where}: {'absent' if key not in a else _show(a[key])} vs "
                           f"{'absent' if key not in b else _show(b[key])}")  # fmt: skip
            elif a[key] != b[key]:
                out += _paths(a[key], b[key], where)
        return out
    return [f"{prefix + ': ' if prefix else ''}{_show(a)} vs {_show(b)}"]


@dataclass(frozen=True)
class Difference:
    key: str
    baseline: str  # the runs' labels
    run: str
    detail: str  # "6.1.0-56-amd64 vs 6.1.0-57-amd64", or which run does not record it

    def line(self) -> str:
        return f"{self.key} differs between {self.baseline} and {self.run} ({self.detail})"

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "baseline": self.baseline, "run": self.run, "detail": self.detail}


def _shared(a: Fact, b: Fact) -> tuple[Fact, Fact]:
    """Stacks or workloads of the same name must agree; one that only one run has is not compared
    (its conditions have no counterpart), so it is no difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        common = set(a) & set(b)
        return {k: a[k] for k in common}, {k: b[k] for k in common}
    return a, b


def differences(
    base_label: str, base: Mapping[str, Fact], label: str, other: Mapping[str, Fact]
) -> list[Difference]:
    out = []
    for key in KEYS:
        a, b = base[key], other[key]
        if key == "stacks":
            a, b = _shared(a, b)
        elif key == "workloads" and isinstance(a, dict) and isinstance(b, dict):
            jobs_a, jobs_b = _shared(a.get("jobs"), b.get("jobs"))
            a, b = {**a, "jobs": jobs_a}, {**b, "jobs": jobs_b}
        if a is UNKNOWN or b is UNKNOWN:
            which = [name for name, v in ((base_label, a), (label, b)) if v is UNKNOWN]
            detail = f"not recorded by {' and '.join(which)}"
        elif a != b:
            detail = "; ".join(_paths(a, b)[:3])
        else:
            continue
        out.append(Difference(key, base_label, label, detail))
    return out


def parse_allowed(values: Iterable[str]) -> frozenset[str]:
    """``--allow-different`` values: keys, repeated or comma-separated."""
    keys = {k.strip() for v in values for k in v.split(",") if k.strip()}
    bad = sorted(keys - set(KEYS))
    if bad:
        raise InvalidInput(f"--allow-different {bad[0]!r}: use one or more of {', '.join(KEYS)}")
    return frozenset(keys)


def check(runs: Sequence[tuple[str, Path, Mapping[str, Any]]], allowed: frozenset[str]) -> list[Difference]:
    """Compare every run's facts with the first run's; refuse (InvalidInput, one line) when a key
    that is not allowed differs or is unknown; return the allowed differences, to be shown."""
    if len(runs) < 2:
        return []
    base_label, base_dir, base_manifest = runs[0]
    base = facts(base_dir, base_manifest)
    found = [d for label, path, m in runs[1:] for d in differences(base_label, base, label, facts(path, m))]
    refused = [d for d in found if d.key not in allowed]
    if refused:
        keys = sorted({d.key for d in refused}, key=KEYS.index)
        raise InvalidInput(
            "runs are not comparable: " + "; ".join(d.line() for d in refused)
            + f" (compare anyway with --allow-different {','.join(keys)})"
        )  # fmt: skip
    return found


def check_distinct(paths: Sequence[Path]) -> None:
    """Refuse a run named twice (directly, or inside a directory also given): it would be compared
    with itself, or its repetitions counted twice."""
    seen: dict[Path, Path] = {}
    for p in paths:
        found = [p.parent] if p.is_file() else find_runs(p) if p.is_dir() else []
        for run in found:
            key = run.resolve()
            if key in seen:
                raise InvalidInput(f"{run}: the same run is given twice ({seen[key]} and {p})")
            seen[key] = p


def run_labels(df: pd.DataFrame) -> dict[str, str]:
    """run_dir -> the run's label: its run id, or its directory when another run has the same id."""
    dirs = list(dict.fromkeys(df["run_dir"]))
    ids = {d: str(df.loc[df["run_dir"] == d, "run_id"].iloc[0]) for d in dirs}
    counts: dict[str, int] = {}
    for rid in ids.values():
        counts[rid] = counts.get(rid, 0) + 1
    return {d: (rid if counts[rid] == 1 else d) for d, rid in ids.items()}


def identify_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The table with ``run_id`` made unique per run directory (see :func:`run_labels`)."""
    labels = run_labels(df)
    out = df.copy()
    out["run_id"] = out["run_dir"].map(labels)
    return out
