"""The result store: ``results/<scenario>/<run-id>/``.

Layout of a run directory::

    manifest.json                      environment and provenance (written at start, completed at end)
    scenario.toml                      the scenario file as it was run
    conditions.jsonl                   one record per condition x repetition (ok or failed, why, paths)
    fio/rep-<r>/<target>/<bs>/<mode>-<iodepth>-<numjobs>.json   raw fio JSON (fio-plot's layout)
    fio/rep-<r>/<target>/<bs>/<mode>-iodepth-<d>-numjobs-<n>_{bw,iops,lat}.<job>.log
    jobs/rep-<r>/<target>/<bs>/<mode>-<iodepth>-<numjobs>.fio   the job file that ran, as rendered
    untimed/...                        precondition and warm-up passes (same layout, not measured)
    tidy.parquet                       the tidy table (skycache.bench.load)

A repetition run again (``bench run --resume`` or ``--rerun-failed``) goes to ``rep-<r>.attempt-<a>``
in place of ``rep-<r>`` (a = 2, 3, ...; fio-plot's layout below it), and its record names the
attempt; readers use the latest record of each (condition, repetition).

Nothing is ever overwritten: run ids are unique, and every file is created exclusively, so a second
repetition can never replace the first.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skycache import files
from skycache.errors import InvalidInput, SkycacheError

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = "manifest.json"
RECORDS = "conditions.jsonl"
TIDY = "tidy.parquet"
# 2: provenance (environment.host, lab_kernel, git_dirty), workloads in the manifest, per-repetition
# noise in the records. Format 1 runs stay readable; their missing facts are "unknown".
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# A manifest or a record file of a very long run is some MiB; more is not a file skycache wrote.
MAX_RESULT_BYTES = 256 * 2**20
MANIFEST_OBJECTS = ("environment", "shaping", "stacks", "host_environment")
_TARGET_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def target_name(label: str) -> str:
    """A condition label as a directory name (fio-plot shows it as the series name)."""
    return _TARGET_SAFE.sub("_", label).strip("_") or "condition"


def new_run_id(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))


def rep_dir(rep: int, attempt: int = 1) -> str:
    """The directory of one repetition's files under fio/, jobs/ and untimed/."""
    return f"rep-{rep}" if attempt <= 1 else f"rep-{rep}.attempt-{attempt}"


def latest(records: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each (condition, repetition), in the order those were first recorded: a
    re-run's record stands in for the failed one it replaces."""
    out: dict[tuple[object, object], dict[str, Any]] = {}
    for rec in records:
        key = (rec.get("condition"), rec.get("rep"))
        out[key] = rec
    return list(out.values())


@dataclass(frozen=True)
class RunDir:
    path: Path
    attempt: int = 1  # which attempt of a repetition the fio/jobs/untimed paths are for

    @classmethod
    def create(cls, results: Path, scenario: str, run_id: str | None = None) -> RunDir:
        base = results / scenario
        base.mkdir(parents=True, exist_ok=True)
        rid = run_id or new_run_id()
        path = base / rid
        n = 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                if run_id is not None:
                    raise InvalidInput(
                        f"run directory {path} exists: results are never overwritten"
                    ) from None
                n += 1
                path = base / f"{rid}-{n}"
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def for_attempt(self, attempt: int) -> RunDir:
        return RunDir(self.path, attempt)

    def attempt_used(self, rep: int, target: str, attempt: int) -> bool:
        """Whether files of that attempt exist already (a run killed before it wrote the record)."""
        name = rep_dir(rep, attempt)
        return any((self.path / top / name / target).exists() for top in ("fio", "jobs", "untimed"))

    def fio_dir(self, rep: int, target: str, bs: str, *, untimed: bool = False) -> Path:
        d = self.path / ("untimed" if untimed else "fio") / rep_dir(rep, self.attempt) / target / bs
        d.mkdir(parents=True, exist_ok=True)
        return d

    def job_path(self, rep: int, target: str, bs: str, stem: str, *, untimed: bool = False) -> Path:
        d = self.path / ("untimed" if untimed else "jobs") / rep_dir(rep, self.attempt) / target / bs
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{stem}.fio"

    def write_new(self, path: Path, text: str) -> Path:
        """Create ``path`` with ``text``; refuse to replace an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x") as f:
                f.write(text)
        except FileExistsError:
            raise SkycacheError(f"{path} exists: results are never overwritten") from None
        return path

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.path))

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        # The manifest alone may be rewritten: it is completed at the end of the run (end time, status).
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT_VERSION, **manifest}, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path / MANIFEST)

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def append_record(self, record: Mapping[str, Any]) -> None:
        with (self.path / RECORDS).open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> Iterator[dict[str, Any]]:
        """The records of conditions.jsonl; a line that is not a JSON object is one error naming the
        file and the line."""
        p = self.path / RECORDS
        if not _present(p):
            return
        text = files.read_text(p, what="run records", max_bytes=MAX_RESULT_BYTES)
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield _json_object(line, f"{files.shown(p)}: line {n}")

    def latest_records(self) -> list[dict[str, Any]]:
        return latest(self.records())


def _present(path: Path) -> bool:
    """Whether something is at ``path`` (a dangling link counts: reading it then says what is wrong)."""
    return path.exists() or path.is_symlink()


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InvalidInput(f"{where} is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} is a JSON {type(data).__name__}, not an object")
    return data


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest.json ({} when the run has none); corrupt, binary or list-shaped content is
    one error naming the file."""
    p = run_dir / MANIFEST
    if not _present(p):
        return {}
    text = files.read_text(p, what="run manifest", max_bytes=MAX_RESULT_BYTES)
    data = _json_object(text, f"{files.shown(p)}: run manifest")
    for key in MANIFEST_OBJECTS:  # report, plots and compare read fields of these
        if key in data and not isinstance(data[key], dict):
            raise InvalidInput(f"{files.shown(p)}: run manifest: {key} is not a JSON object")
    check_format(data.get("format", 1), f"{files.shown(p)}: run manifest")
    return data


def check_format(fmt: object, where: str) -> None:
    """Refuse a result format this skycache does not know (a newer skycache wrote it, or not
    skycache at all): its fields might mean something else. A manifest without one is format 1."""
    if isinstance(fmt, bool) or fmt not in READABLE_FORMATS:
        known = ", ".join(str(f) for f in READABLE_FORMATS)
        raise InvalidInput(f"{where}: format {fmt!r} is not one this skycache reads ({known})")


def read_table(path: Path) -> pd.DataFrame:
    """A tidy table (tidy.parquet); a truncated or foreign file is one error naming it."""
    import pandas as pd  # seconds to import: only readers of tables pay
    import pyarrow as pa

    files.check_input_file(path, what="tidy table")
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        # pyarrow's message names the path again and may span lines; its first sentence says enough
        why = " ".join(str(exc).replace(str(path), "").split()).strip(" :'") or type(exc).__name__
        raise InvalidInput(f"{files.shown(path)}: tidy table cannot be read ({why})") from None


def find_runs(path: Path) -> list[Path]:
    """Run directories at or under ``path`` (a run dir, a scenario dir, or the results root):
    any directory holding a tidy.parquet, sorted."""
    if (path / TIDY).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(TIDY))
