"""The fio workload (rw, bs, iodepth, numjobs) of each condition of a benchmark run directory.

The tidy table has these as columns only when the scenario varies them as factors; otherwise the
run's raw fio JSON says what ran (design.md §8: fio's JSON is the source of truth), found through
``conditions.jsonl`` (one record per condition and repetition, with the path of its JSON). Job
options override global options, as in fio. A condition whose jobs disagree on a parameter, or whose
JSON is missing or unreadable, leaves that parameter unrecorded: the role check then refuses to guess.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from skycache.sim.calibration_source import Workload

FIELDS = ("rw", "bs", "iodepth", "numjobs")
# fio writes error text before its JSON document; more than this is not a result file.
_MAX_JSON_BYTES = 64 * 2**20


def _int(value: Any) -> int | None:
    """A positive whole number from fio's text ("4"), or a table's int or float column (4.0)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() and 0 < number < 2**31 else None


def _text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text if text and text.isprintable() and len(text) <= 100 else None


def _workload(values: Mapping[str, Any]) -> Workload:
    return Workload(
        rw=_text(values.get("rw")),
        bs=_text(values.get("bs")),
        iodepth=_int(values["iodepth"]) if values.get("iodepth") is not None else None,
        numjobs=_int(values["numjobs"]) if values.get("numjobs") is not None else None,
    )


def _agreed(options: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The parameters every job has with the same value."""
    seen: list[Mapping[str, Any]] = list(options)
    out: dict[str, Any] = {}
    for key in FIELDS:
        values = {str(o.get(key)) for o in seen}
        if seen and len(values) == 1 and None not in (o.get(key) for o in seen):
            out[key] = seen[0][key]
    return out


def _from_fio_json(run: Path, name: str) -> dict[str, Any]:
    path = run / name
    try:
        # Only a regular file inside the run: a FIFO would block the read, and a record is not a
        # licence to read files elsewhere.
        if not path.resolve().is_relative_to(run.resolve()) or not path.is_file():
            return {}
        if path.stat().st_size > _MAX_JSON_BYTES:
            return {}
        text = path.read_text(errors="replace")
        doc = json.loads(text[text.index("{") :])
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        return {}
    found = doc.get("global options")
    glob: dict[str, Any] = found if isinstance(found, dict) else {}
    jobs = [j.get("job options") for j in doc["jobs"] if isinstance(j, dict)]
    return _agreed({**glob, **(j if isinstance(j, dict) else {})} for j in jobs)


def _from_records(run: Path) -> dict[str, Workload]:
    records = run / "conditions.jsonl"
    out: dict[str, Workload] = {}
    try:
        lines = records.read_text(errors="replace").splitlines() if records.is_file() else []
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(rec, dict) or rec.get("status") != "ok" or not isinstance(rec.get("json"), str):
            continue
        cond = str(rec.get("condition", ""))
        if cond in out:
            continue  # one repetition says what the condition ran: the job file is the same for all
        found = _from_fio_json(run, rec["json"])
        if found:
            out[cond] = _workload(found)
    return out


def condition_workloads(run: Path, df: pd.DataFrame) -> dict[str, Workload]:
    """Condition -> workload, from the tidy table's factor columns, else from the raw fio JSON."""
    from_json = _from_records(run) if not set(FIELDS) <= set(df.columns) else {}
    out: dict[str, Workload] = {}
    for cond, rows in df.groupby("condition", dropna=False, sort=True):
        columns = [c for c in FIELDS if c in rows.columns]
        values = {c: rows[c].iloc[0] for c in columns if rows[c].astype(str).nunique() == 1}
        values = {c: v for c, v in values.items() if not pd.isna(v)}
        recorded = from_json.get(str(cond))
        if recorded is not None:
            values = {**recorded.as_dict(), **values}  # a factor column is what that condition varied
        out[str(cond)] = _workload(values)
    return out
