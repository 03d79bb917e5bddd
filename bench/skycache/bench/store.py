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
from typing import Any

from skycache.errors import InvalidInput, SkycacheError

MANIFEST = "manifest.json"
RECORDS = "conditions.jsonl"
TIDY = "tidy.parquet"
FORMAT_VERSION = 1
_TARGET_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def target_name(label: str) -> str:
    """A condition label as a directory name (fio-plot shows it as the series name)."""
    return _TARGET_SAFE.sub("_", label).strip("_") or "condition"


def new_run_id(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))


@dataclass(frozen=True)
class RunDir:
    path: Path

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

    def fio_dir(self, rep: int, target: str, bs: str, *, untimed: bool = False) -> Path:
        d = self.path / ("untimed" if untimed else "fio") / f"rep-{rep}" / target / bs
        d.mkdir(parents=True, exist_ok=True)
        return d

    def job_path(self, rep: int, target: str, bs: str, stem: str, *, untimed: bool = False) -> Path:
        d = self.path / ("untimed" if untimed else "jobs") / f"rep-{rep}" / target / bs
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
        p = self.path / RECORDS
        if not p.is_file():
            return
        for line in p.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    p = run_dir / MANIFEST
    if not p.is_file():
        return {}
    data: dict[str, Any] = json.loads(p.read_text())
    return data


def find_runs(path: Path) -> list[Path]:
    """Run directories at or under ``path`` (a run dir, a scenario dir, or the results root):
    any directory holding a tidy.parquet, sorted."""
    if (path / TIDY).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(TIDY))
