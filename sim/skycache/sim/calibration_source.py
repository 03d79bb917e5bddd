"""Where one calibration value came from: a benchmark run, another calibration (``--base``), or a
default written by hand.

A run source names the run directory, the condition, the column and the statistic taken over its
repetitions, and the fio workload that measured it (rw, bs, iodepth, numjobs), so that the model can
tell a streaming bandwidth from a random-read rate (skycache.sim.calibration_roles). A base source
names the file it was taken from and keeps that file's own record of the value as its ``origin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SourceKind = Literal["run", "base", "default"]


@dataclass(frozen=True)
class Workload:
    """The fio job that measured a value; None where the run does not record it."""

    rw: str | None = None
    bs: str | None = None  # as fio was given it ("4k", "1M")
    iodepth: int | None = None
    numjobs: int | None = None

    def as_dict(self) -> dict[str, str | int]:
        items = (("rw", self.rw), ("bs", self.bs), ("iodepth", self.iodepth), ("numjobs", self.numjobs))
        return {k: v for k, v in items if v is not None}

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items()) or "workload not recorded"


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    run: str = ""  # run directory
    condition: str = ""
    column: str = ""  # the tidy column (or expression) the value was computed from
    statistic: str = ""  # e.g. "median of 3 repetitions (each the sum over its jobs)"
    workload: Workload = field(default_factory=Workload)
    accel: str = ""  # the run's acceleration (kvm, tcg) from its manifest: TCG figures are slow
    note: str = ""
    file: str = ""  # kind "base": the calibration file given with --base
    origin: Source | None = None  # kind "base": that file's source of the value (never "base")

    def as_dict(self) -> dict[str, Any]:
        """The source as written in the calibration file (only the keys that are set)."""
        out: dict[str, Any] = {"kind": self.kind}
        for key in ("run", "condition", "column", "statistic", "accel", "note", "file"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.workload.as_dict():
            out["workload"] = self.workload.as_dict()
        if self.origin is not None:
            out["origin"] = self.origin.as_dict()
        return out

    def describe(self) -> str:
        """One line: where the value came from."""
        if self.kind == "default":
            return f"default: {self.note}" if self.note else "default"
        if self.kind == "base":
            inner = self.origin.describe() if self.origin is not None else "origin not recorded"
            return f"--base {self.file}: {inner}"
        parts = [f"run {self.run}", f"condition {self.condition}", self.column, self.statistic]
        parts += [self.workload.describe()] + ([f"accel {self.accel}"] if self.accel else [])
        parts += [self.note] if self.note else []
        return ", ".join(p for p in parts if p)

    def flat(self) -> dict[str, str]:
        """The source as flat text fields (``provenance`` of a rate; what older code read)."""
        out = {k: str(v) for k, v in self.as_dict().items() if k not in ("workload", "origin")}
        out.update({k: str(v) for k, v in self.workload.as_dict().items()})
        if self.origin is not None:
            out["origin"] = self.origin.describe()
        return out
