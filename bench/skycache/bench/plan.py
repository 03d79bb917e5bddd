"""What a run runs, in what order: rounds of conditions, ``--only`` subsets, and the repetitions a
resumed or re-run run directory still needs. Pure: scenario and records in, a schedule out, so that
``bench run --dry-run`` prints exactly what ``bench run`` then runs.

Order: round r runs every selected condition once, in the order of a shuffle of *all* the scenario's
conditions with the seed (the rng drawn round after round), filtered to the selection. A subset or a
resumed run therefore keeps the order of the full run, and a fixed ``repetitions`` keeps the order
runs had before subsets existed.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from skycache.bench import store
from skycache.bench.scenario import Condition, Scenario
from skycache.errors import InvalidInput

Mode = Literal["new", "resume", "rerun-failed"]


@dataclass(frozen=True)
class Planned:
    """One fio run to do: repetition ``rep`` of ``condition``, as its ``attempt``-th try."""

    rep: int
    condition: Condition
    attempt: int = 1


@dataclass(frozen=True)
class Selection:
    conditions: tuple[Condition, ...]  # in scenario order
    filters: tuple[str, ...] = ()
    baselines_added: tuple[Condition, ...] = ()  # kept although no filter matched them

    def as_dict(self) -> dict[str, Any]:
        return {
            "filters": list(self.filters),
            "conditions": [c.id for c in self.conditions],
            "baselines_added": [c.id for c in self.baselines_added],
        }


# -- --only -------------------------------------------------------------------------------------


def parse_filter(text: str, factor_names: Sequence[str]) -> dict[str, str]:
    """``stack=lvm-iscsi,workload=rand*`` as {factor: glob}; a key that is not a factor is an error."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (t.strip() for t in part.partition("="))
        if not sep or not key or not value:
            raise InvalidInput(
                f"--only {text!r}: expected FACTOR=VALUE[,FACTOR=VALUE] (a value may be a glob)"
            )
        if key not in factor_names:
            raise InvalidInput(f"--only {text!r}: {key!r} is not a factor here ({', '.join(factor_names)})")
        out[key] = value
    return out


def _matches(cond: Condition, flt: Mapping[str, str]) -> bool:
    factors = cond.factor_dict()
    return all(fnmatch.fnmatchcase(str(factors[k]), glob) for k, glob in flt.items())


def baseline_of(sc: Scenario, cond: Condition, baseline: str | None) -> Condition | None:
    """The condition ``cond`` is compared with in the report (the rules of ``compare``): None when
    it is a baseline itself or has none."""
    if baseline is None:  # the first condition of its workload
        first = next(c for c in sc.conditions if c.workload.name == cond.workload.name)
        return None if first == cond else first
    if "=" not in baseline:  # one condition, by label or id, for the conditions of its workload
        hit = next((c for c in sc.conditions if baseline in (c.label, c.id)), None)
        if hit is None or hit == cond or hit.workload.name != cond.workload.name:
            return None
        return hit
    assign = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in baseline.split(","))}
    mine = cond.factor_dict()
    if all(str(mine.get(k)) == v for k, v in assign.items()):
        return None
    varying = cond.varying
    for ignore in ((), ("cache_state",)):  # as compare does: a warm cached stack vs the uncached one
        found = [
            c
            for c in sc.conditions
            if all(str(c.factor_dict().get(k)) == v for k, v in assign.items())
            and all(c.factor_dict()[f] == mine[f] for f in varying if f not in assign and f not in ignore)
        ]
        if found:
            cold = [c for c in found if c.cache_state == "cold"]
            return (cold or found)[0]
    return None


def select(sc: Scenario, filters: Sequence[str], baseline: str | None) -> Selection:
    """The conditions matching any of ``filters`` (all of them without filters), plus the baseline
    of each so that the run still has ratios. A filter that matches nothing is an error naming it."""
    if not filters:
        return Selection(sc.conditions)
    # by id: a condition holds its workload's options dict, so it is not hashable
    chosen: set[str] = set()
    for text in filters:
        flt = parse_filter(text, sc.factor_names)
        hits = [c.id for c in sc.conditions if _matches(c, flt)]
        if not hits:
            raise InvalidInput(f"--only {text!r} matches no condition of {sc.name}")
        chosen.update(hits)
    bases = (baseline_of(sc, c, baseline) for c in sc.conditions if c.id in chosen)
    added = {b.id for b in bases if b is not None} - chosen
    keep = chosen | added
    return Selection(
        tuple(c for c in sc.conditions if c.id in keep),
        tuple(filters),
        tuple(c for c in sc.conditions if c.id in added),
    )


# -- rounds -------------------------------------------------------------------------------------


def rounds(sc: Scenario, selected: Iterable[Condition]) -> list[list[Condition]]:
    """Every round up to the most the scenario may run (``repetitions``, or the cap of "auto")."""
    keep = {c.id for c in selected}
    rng = random.Random(sc.model.seed)  # noqa: S311 (reproducible order, not crypto)
    out = []
    for _ in range(sc.model.rounds):
        conds = list(sc.conditions)
        rng.shuffle(conds)
        out.append([c for c in conds if c.id in keep])
    return out


def pending(
    sc: Scenario,
    selected: Iterable[Condition],
    mode: Mode,
    records: Sequence[Mapping[str, Any]] = (),
    run: store.RunDir | None = None,
) -> list[list[Planned]]:
    """Per round, the runs still to do: all of them for a new run; for ``resume`` those whose last
    record is not ok (never run, or failed); for ``rerun-failed`` those whose last record failed.
    A repetition tried before gets the next attempt number whose files do not exist yet."""
    last = {(r.get("condition"), r.get("rep")): r for r in records}
    tries: dict[tuple[object, object], int] = {}
    for r in records:
        key = (r.get("condition"), r.get("rep"))
        tries[key] = max(tries.get(key, 0), _attempt(r))
    out: list[list[Planned]] = []
    for rep, conds in enumerate(rounds(sc, selected), 1):
        todo = []
        for cond in conds:
            key = (cond.id, rep)
            rec = last.get(key)
            if mode == "resume" and rec is not None and rec.get("status") == "ok":
                continue
            if mode == "rerun-failed" and (rec is None or rec.get("status") == "ok"):
                continue
            attempt = tries.get(key, 0) + 1
            if run is not None:  # files without a record: a run killed in the middle of that one
                while run.attempt_used(rep, store.target_name(cond.label), attempt):
                    attempt += 1
            todo.append(Planned(rep, cond, attempt))
        out.append(todo)
    return out


def _attempt(record: Mapping[str, Any]) -> int:
    value = record.get("attempt", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
