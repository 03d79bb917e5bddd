"""Validation of a calibration document (pydantic), with the bench's one-line errors:
``FILE: field: what is wrong`` (skycache.bench.scenario does the same for bench scenarios)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from skycache.errors import InvalidInput
from skycache.sim.calibration import FORMAT, Calibration, Rate, is_bandwidth, value_names
from skycache.sim.calibration_source import Source, Workload
from skycache.sim.quantities import parse_bandwidth, parse_duration
from skycache.validation import Location, StrictModel, first_error

# Backend names become the middle part of dotted names (repository.<backend>.read_bw): no dots.
_BACKEND = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"


def _line(text: str) -> str:
    if not text.isprintable() or len(text) > 1000:
        raise ValueError("is not one line of printable text (at most 1000 characters)")
    return text


Line = Annotated[str, AfterValidator(_line)]


_Strict = StrictModel  # unknown keys refused, no coercion, no NaN: as bench and sim scenarios


class WorkloadModel(_Strict):
    rw: Line | None = None
    bs: Line | int | None = None
    iodepth: int | None = Field(None, ge=1, le=65536)
    numjobs: int | None = Field(None, ge=1, le=65536)


def _run_or_default_complete(m: OriginModel | SourceModel) -> None:
    if m.kind == "run":
        lacking = [k for k in ("run", "condition", "column", "statistic") if not getattr(m, k)]
        if lacking:
            raise ValueError(f"a run source needs {', '.join(lacking)}")
    elif m.kind == "default" and not m.note:
        raise ValueError('a default needs a note saying what the number assumes (note = "...")')


class _Measured(_Strict):
    """What a run or a default source records (a base source adds where it came from)."""

    run: Line | None = None
    condition: Line | None = None
    column: Line | None = None
    statistic: Line | None = None
    workload: WorkloadModel | None = None
    accel: Line | None = None
    note: Line | None = None


class OriginModel(_Measured):
    """What a --base file said about a value: a run or a default (never another base)."""

    kind: Literal["run", "default"]

    @model_validator(mode="after")
    def _complete(self) -> OriginModel:
        _run_or_default_complete(self)
        return self


class SourceModel(_Measured):
    kind: Literal["run", "base", "default"]
    file: Line | None = None  # kind "base": the --base calibration
    origin: OriginModel | None = None  # kind "base": that file's own source of the value

    @model_validator(mode="after")
    def _complete(self) -> SourceModel:
        if self.kind == "base":
            if not self.file or self.origin is None:
                raise ValueError("a base source needs file (the --base calibration) and origin")
        elif self.file is not None or self.origin is not None:
            raise ValueError("file and origin belong to a base source only")
        _run_or_default_complete(self)
        return self


def _quantity(parse: Callable[..., float]) -> Callable[[object], object]:
    def check(value: object) -> object:
        try:
            number = parse(value, what="\x00")
        except InvalidInput as exc:  # the location is pydantic's to name: drop the parser's own
            raise ValueError(str(exc).replace("\x00 = ", "", 1).replace("\x00", "value")) from None
        if number <= 0:
            raise ValueError(f"{value!r} must be positive")
        return value

    return check


Bandwidth = Annotated[Any, AfterValidator(_quantity(parse_bandwidth))]
Duration = Annotated[Any, AfterValidator(_quantity(parse_duration))]


class BackendModel(_Strict):
    read_bw: Bandwidth = None
    write_bw: Bandwidth = None
    latency: Duration = None


class CacheModel(_Strict):
    hit_bw: Bandwidth = None
    flush_bw: Bandwidth = None


class NatModel(_Strict):
    cpu_per_packet: Duration = None
    cpu_per_conn: Duration = None


class CalibrationModel(_Strict):
    format: str
    accept_role_mismatch: list[Line] = Field(default_factory=list)
    repository: dict[Annotated[str, Field(pattern=_BACKEND)], BackendModel] = Field(default_factory=dict)
    cache: CacheModel = CacheModel()
    nat: NatModel = NatModel()
    sources: dict[str, SourceModel] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v != FORMAT:
            raise ValueError(f"is not {FORMAT!r}")
        return v


def _without_union_members(loc: Location) -> tuple[Location, str]:
    # a value that may be a string or a number: pydantic names the member it tried ("str", "int")
    return [p for p in loc if p not in ("str", "int")], ""


def _source(m: OriginModel | SourceModel) -> Source:
    w = m.workload or WorkloadModel(iodepth=None, numjobs=None)
    bs = None if w.bs is None else str(w.bs)
    base = m if isinstance(m, SourceModel) else None
    return Source(
        kind=m.kind,
        run=m.run or "",
        condition=m.condition or "",
        column=m.column or "",
        statistic=m.statistic or "",
        workload=Workload(w.rw, bs, w.iodepth, w.numjobs),
        accel=m.accel or "",
        note=m.note or "",
        file=(base.file or "") if base else "",
        origin=_source(base.origin) if base and base.origin is not None else None,
    )


def _texts(m: CalibrationModel) -> dict[str, str]:
    out: dict[str, str] = {}
    for backend, b in m.repository.items():
        out.update({f"repository.{backend}.{k}": v for k, v in b.model_dump().items() if v is not None})
    out.update({f"cache.{k}": v for k, v in m.cache.model_dump().items() if v is not None})
    out.update({f"nat.{k}": v for k, v in m.nat.model_dump().items() if v is not None})
    return out


def validate(data: Mapping[str, Any], *, path: str = "") -> Calibration:
    where = path or "calibration"
    fmt = data.get("format") if isinstance(data, Mapping) else None
    if isinstance(fmt, str) and fmt.startswith("skycache-sim-calibration/") and fmt != FORMAT:
        # An older file: say how to bring it up to date rather than list every key it lacks.
        raise InvalidInput(
            f"{where}: format: {fmt!r} records no source per value; regenerate it with "
            f"skycache sim calibrate, or write it as {FORMAT!r} with a [sources] table (docs/sim.md)"
        )
    try:
        m = CalibrationModel.model_validate(data)
    except ValidationError as exc:
        raise first_error(path or "calibration", exc, _without_union_members) from None
    texts = _texts(m)
    for name in texts:
        if name not in m.sources:
            raise InvalidInput(
                f'{where}: {name}: has no [sources."{name}"] saying where it came from '
                '(kind = "run", "base" or "default")'
            )
    for name in m.sources:
        if name not in texts:
            raise InvalidInput(f'{where}: sources."{name}": names no value this calibration sets')
    for name in m.accept_role_mismatch:
        if name not in texts:
            raise InvalidInput(
                f"{where}: accept_role_mismatch: {name!r} is not a value this calibration sets"
            )
    values: dict[str, Rate] = {}
    for name in value_names(sorted(m.repository)):
        if name in texts:
            parse = parse_bandwidth if is_bandwidth(name) else parse_duration
            values[name] = Rate(parse(texts[name], what=name), texts[name], _source(m.sources[name]))
    return Calibration(values, tuple(dict.fromkeys(m.accept_role_mismatch)), path)
