"""Scenario suites: the TOML schema, its validation, and the expansion into conditions.

A scenario names the stacks to build, the fio workloads to run on them, the factors to vary (expanded
as a full product, minus ``[[exclude]]`` entries), how often to repeat each condition, and the
environment (where to run, shaping profile). Everything is checked when the file is loaded, before
anything is built: a wrong type, an unknown key, an impossible combination or a missing job file is
one :class:`~skycache.errors.InvalidInput` whose message names the file, the key and the problem.

Example (see ``scenarios/quickstart.toml`` for a complete one)::

    name = "mini"
    repetitions = 3
    [[stacks]]
    name = "lvm-iscsi"
    backend = "lvm"
    transport = "iscsi"
    [[workloads]]
    name = "randread"
    rw = "randread"
    [factors]
    stack = ["lvm-iscsi"]
    cache_state = ["cold", "warm"]
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from skycache import files, validators
from skycache.bench import fioopts, remote
from skycache.errors import InvalidInput
from skycache.numbers import SEED_MAX
from skycache.storage.vmdisk.clone import MIN_CACHE
from skycache.units import parse_positive_size
from skycache.validation import StrictModel, first_error, toml_key

Where = Literal["lab", "host", "hosts"]
CacheState = Literal["cold", "warm"]
FactorValue = str | int

RW_MODES = ("read", "write", "randread", "randwrite", "randrw", "readwrite", "rw", "trim", "randtrim")
# Factors a scenario may vary. ``stack`` and ``workload`` pick named sections; the fio keys override
# the chosen workload's value; ``cache_state`` is how the caches start each repetition.
FIO_FACTORS = ("rw", "bs", "iodepth", "numjobs")
KNOWN_FACTORS = ("stack", "workload", "cache_state", *FIO_FACTORS)
# Shaping profile names known without importing the network layer (it may be absent on a host).
DEFAULT_PROFILES = ("none", "gbe-2009", "10gbe")

# Bounds of fio's own options (fio rejects larger iodepth/numjobs values or thrashes with them).
FIO_LIMITS = {"iodepth": 4096, "numjobs": 256}
DEFAULT_MAX_RUNS = 1000
# repetitions = "auto": rounds from MIN_AUTO_REPETITIONS on until every ratio interval is narrow enough
# (skycache.bench.autoreps); three values per side is the least that gives a t interval a usable width.
MIN_AUTO_REPETITIONS = 3
DEFAULT_MAX_AUTO_REPETITIONS = 10
DEFAULT_TARGET_CI_PCT = 10.0
MAX_REPETITIONS = 1000
# Even with --yes: conditions are expanded in memory when the file is loaded.
HARD_MAX_RUNS = 1_000_000

_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


# fio's direct I/O needs block sizes in whole sectors of the device (512 bytes at the least).
SECTOR = 512


def _size(value: str | int, what: str) -> str | int:
    try:
        parse_positive_size(value, what=what, multiple_of=SECTOR if what == "bs" else 1)
    except InvalidInput as exc:  # a ValueError lets pydantic report it with the key's location
        raise ValueError(str(exc)) from None
    return value


# Unknown keys refused, no coercion, NaN and infinities refused: the schema base sim files share.
_Strict = StrictModel


class Workload(_Strict):
    """One fio job: either the usual parameters or an existing job file (relative to the scenario)."""

    name: _NAME
    rw: Literal[RW_MODES] | None = None  # type: ignore[valid-type]
    bs: str | int = "4k"
    iodepth: int = Field(1, ge=1, le=4096)
    numjobs: int = Field(1, ge=1, le=256)
    size: str | int = "64M"
    runtime_s: float = Field(10.0, gt=0, le=86400)
    ramp_s: float = Field(0.0, ge=0, le=3600)
    time_based: bool = True  # false: run until `size` is done (e.g. a fill), runtime_s is a cap
    rwmixread: int | None = Field(None, ge=0, le=100)
    ioengine: str = "libaio"
    direct: bool = True
    job_file: str | None = None
    options: dict[str, str | int] = Field(default_factory=dict)

    @field_validator("bs", "size", mode="before")
    @classmethod
    def _sizes(cls, v: str | int, info: Any) -> str | int:
        return _size(v, info.field_name)

    @model_validator(mode="after")
    def _rw_or_file(self) -> Workload:
        if self.rw is None and self.job_file is None:
            raise ValueError("needs either rw or job_file")
        if self.rw is not None and self.job_file is not None:
            raise ValueError("give rw or job_file, not both")
        if self.rwmixread is not None and self.rw not in ("randrw", "readwrite", "rw"):
            raise ValueError(f"rwmixread only applies to mixed rw modes, not {self.rw!r}")
        return self

    @property
    def writes(self) -> bool:
        return self.rw is not None and ("write" in self.rw or self.rw in ("randrw", "rw", "readwrite"))


class Stack(_Strict):
    """A storage stack to build: image backend, transport, COW engine and caches."""

    name: _NAME
    backend: Literal["file", "lvm"] = "lvm"
    transport: Literal["local", "iscsi"] = "local"
    cow: Literal["none", "snapshot", "thin"] = "none"
    read_cache: str | int | None = None
    write_cache: str | int | None = None
    write_engine: Literal["writecache", "dmcache"] | None = None
    repo_delay_ms: float = Field(0.0, ge=0, le=10000)

    @field_validator("read_cache", "write_cache", mode="before")
    @classmethod
    def _sizes(cls, v: str | int | None, info: Any) -> str | int | None:
        if v is None:
            return None
        _size(v, info.field_name)
        # The library refuses smaller caches when it builds the stack: refuse them here, before any run.
        if parse_positive_size(v, what=info.field_name) < MIN_CACHE:
            raise ValueError(f"{info.field_name} {v!r} is too small (at least 8M)")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> Stack:
        if self.backend == "file" and self.cow in ("snapshot", "thin"):
            raise ValueError(f"cow = {self.cow!r} needs backend = 'lvm' (file images can only be copied)")
        if (self.read_cache or self.write_cache) and self.transport != "iscsi":
            raise ValueError("read_cache/write_cache cache remote images: need transport = 'iscsi'")
        if self.write_engine is not None and self.write_cache is None:
            raise ValueError("write_engine is set but write_cache is not")
        if self.cow != "none" and self.transport != "iscsi":
            raise ValueError(f"cow = {self.cow!r} builds a VM disk on a node: needs transport = 'iscsi'")
        return self

    @property
    def engine(self) -> str | None:
        if self.write_cache is None:
            return None
        return self.write_engine or "writecache"

    def describe(self) -> str:
        parts = [f"{self.backend} image", "over iSCSI" if self.transport == "iscsi" else "local"]
        if self.cow != "none":
            parts.append(f"COW {self.cow}")
        if self.read_cache:
            parts.append(f"read cache {self.read_cache} (dm-cache writethrough)")
        if self.write_cache:
            parts.append(f"write-back cache {self.write_cache} ({self.engine})")
        if self.repo_delay_ms:
            parts.append(f"repository disk delay {self.repo_delay_ms:g} ms (dm-delay)")
        return ", ".join(parts)


_SSH_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


class SshOptions(_Strict):
    """How ssh reaches a fio server's machine (``where = "hosts"``); every key optional. The
    validators name the bad value themselves: pydantic's own messages do not."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None  # relative to the scenario file; ~ is the user's home
    config_file: str | None = None  # ssh -F, the same
    path_prefix: str | None = None  # absolute directories (':' between them) put before PATH there
    connect_timeout_s: int | None = None

    @field_validator("user", mode="before")
    @classmethod
    def _user(cls, v: Any) -> Any:
        if v is not None and not (isinstance(v, str) and _SSH_USER.fullmatch(v)):
            raise ValueError(f"{v!r} is not a user name (letters, digits, '_', '.', '-'; at most 32)")
        return v

    @field_validator("port", "connect_timeout_s", mode="before")
    @classmethod
    def _number(cls, v: Any, info: Any) -> Any:
        top = 65535 if info.field_name == "port" else 600
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top):
            raise ValueError(f"{v!r} is not a whole number from 1 to {top}")
        return v

    @field_validator("identity_file", "config_file", "path_prefix", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ValueError(f"{v!r} is not a path")
        return v

    @field_validator("path_prefix")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        for part in v.split(":") if v is not None else []:
            if not part.startswith("/"):
                raise ValueError(f"{part!r} is not an absolute directory (give DIR or DIR1:DIR2)")
        return v


class Ssh(SshOptions):
    """``[ssh]``: the settings for every host; ``[ssh.hosts.NAME]``: one host's (by its name in
    ``hosts``, without the fio port), over the defaults key by key."""

    hosts: dict[str, SshOptions] = Field(default_factory=dict)


class Phases(_Strict):
    """``precondition``: workloads run once, untimed, on each freshly built stack before measuring."""

    precondition: list[str] = Field(default_factory=list)


class ScenarioModel(_Strict):
    name: _NAME
    description: str = ""
    where: Where = "lab"
    hosts: list[str] = Field(default_factory=list)
    ssh: Ssh | None = None
    # a whole number, or "auto": repeat until the answer is clear (target_ci_pct, max_repetitions)
    repetitions: int | Literal["auto"] = 3
    target_ci_pct: float = Field(DEFAULT_TARGET_CI_PCT, gt=0, le=100)
    min_repetitions: int = Field(MIN_AUTO_REPETITIONS, ge=MIN_AUTO_REPETITIONS, le=MAX_REPETITIONS)
    max_repetitions: int = Field(DEFAULT_MAX_AUTO_REPETITIONS, ge=MIN_AUTO_REPETITIONS, le=MAX_REPETITIONS)
    shaping: str = "none"
    image_size: str | int = "256M"
    seed: int = Field(1, ge=0, le=SEED_MAX)
    # fio runs (conditions x repetitions) accepted without --yes: a typo in a factor list can ask
    # for days of benchmarking; a scenario that means it says so here.
    max_runs: int = Field(DEFAULT_MAX_RUNS, ge=1, le=HARD_MAX_RUNS)
    # default --baseline of compare/report, e.g. "stack=lvm-iscsi": printable, single spaces at most
    baseline: Annotated[str, Field(pattern=r"^[!-~]+(?: [!-~]+)*$", max_length=500)] | None = None
    stacks: list[Stack] = Field(min_length=1)
    workloads: list[Workload] = Field(min_length=1)
    factors: dict[str, list[FactorValue]] = Field(default_factory=dict)
    exclude: list[dict[str, FactorValue | list[FactorValue]]] = Field(default_factory=list)
    phases: Phases = Field(default_factory=Phases)

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, v: str | int) -> str | int:
        return _size(v, "image_size")

    @field_validator("repetitions", mode="before")
    @classmethod
    def _repetitions(cls, v: Any) -> Any:
        # pydantic's own message for a failed union names both branches and no value
        number = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_REPETITIONS
        if not (number or v == "auto"):
            raise ValueError(f'{v!r} is neither an integer from 1 to {MAX_REPETITIONS} nor "auto"')
        return v

    @model_validator(mode="after")
    def _auto_keys(self) -> ScenarioModel:
        auto_keys = [
            k for k in ("target_ci_pct", "min_repetitions", "max_repetitions") if k in self.model_fields_set
        ]
        if self.repetitions != "auto" and auto_keys:
            raise ValueError(f'{auto_keys[0]} is only used with repetitions = "auto"')
        if self.min_repetitions > self.max_repetitions:
            raise ValueError(
                f"min_repetitions {self.min_repetitions} is above max_repetitions {self.max_repetitions}"
            )
        return self

    @property
    def auto(self) -> bool:
        return self.repetitions == "auto"

    @property
    def rounds(self) -> int:
        """The most rounds a run can have: the fixed repetitions, or the cap of "auto"."""
        return self.max_repetitions if self.repetitions == "auto" else self.repetitions

    @property
    def repetitions_text(self) -> str:
        if self.repetitions == "auto":
            return (
                f"auto ({self.min_repetitions} to {self.max_repetitions} repetitions, "
                f"until every IOPS ratio interval is within {self.target_ci_pct:g}%)"
            )
        return f"{self.repetitions} repetitions"


@dataclass(frozen=True)
class Condition:
    """One point of the factor product: what to build and what to run on it."""

    factors: tuple[tuple[str, FactorValue], ...]  # every factor, in factor order
    varying: tuple[str, ...]  # the factors with more than one level (what tells conditions apart)
    stack: Stack
    workload: Workload
    cache_state: CacheState

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.factors if k in self.varying)

    @property
    def label(self) -> str:
        """Compact: the varying factor values, in factor order (what tables and plots show)."""
        return "/".join(
            f"{k}={v}" if k in FIO_FACTORS else str(v) for k, v in self.factors if k in self.varying
        )

    def factor_dict(self) -> dict[str, FactorValue]:
        return dict(self.factors)


@dataclass(frozen=True)
class Scenario:
    path: Path
    model: ScenarioModel
    conditions: tuple[Condition, ...]
    factor_names: tuple[str, ...]  # every factor, varying or not (tidy columns)
    # where = "hosts": how each host is reached over ssh (file paths resolved)
    ssh: remote.SshHosts = field(default_factory=remote.SshHosts)

    @property
    def name(self) -> str:
        return self.model.name

    def stack(self, name: str) -> Stack:
        return next(s for s in self.model.stacks if s.name == name)

    def workload(self, name: str) -> Workload:
        return next(w for w in self.model.workloads if w.name == name)

    @property
    def runs(self) -> int:
        """fio runs at the most (with repetitions = "auto": at the cap)."""
        return len(self.conditions) * self.model.rounds


def _check_names(path: Path, m: ScenarioModel) -> None:
    for what, names in (("stacks", [s.name for s in m.stacks]), ("workloads", [w.name for w in m.workloads])):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise InvalidInput(f"{path}: {what}[{i}].name: duplicate name {name!r}")
            seen.add(name)


def _levels(path: Path, m: ScenarioModel) -> dict[str, list[FactorValue]]:
    """The factor levels in a fixed order: stack, workload, the rest as written; each validated."""
    stacks = [s.name for s in m.stacks]
    workloads = [w.name for w in m.workloads]
    for key in m.factors:
        if key not in KNOWN_FACTORS:
            raise InvalidInput(f"{path}: factors.{key}: unknown factor (known: {', '.join(KNOWN_FACTORS)})")
    levels: dict[str, list[FactorValue]] = {
        "stack": list(m.factors.get("stack", stacks)),
        "workload": list(m.factors.get("workload", workloads)),
    }
    for key, values in m.factors.items():
        if key not in levels:
            levels[key] = list(values)
    for key, values in levels.items():
        if not values:
            raise InvalidInput(f"{path}: factors.{key}: needs at least one level")
        if len(set(values)) != len(values):
            raise InvalidInput(f"{path}: factors.{key}: duplicate levels")
        for v in values:
            _check_level(path, key, v, stacks, workloads)
    return levels


def _check_level(path: Path, key: str, v: FactorValue, stacks: list[str], workloads: list[str]) -> None:
    where = f"{path}: factors.{key}"
    if key == "stack" and v not in stacks:
        raise InvalidInput(f"{where}: {v!r} is not a stack of this scenario ({', '.join(stacks)})")
    if key == "workload" and v not in workloads:
        raise InvalidInput(f"{where}: {v!r} is not a workload of this scenario ({', '.join(workloads)})")
    if key == "cache_state" and v not in ("cold", "warm"):
        raise InvalidInput(f"{where}: {v!r} must be 'cold' or 'warm'")
    if key == "rw" and v not in RW_MODES:
        raise InvalidInput(f"{where}: {v!r} is not a fio rw mode ({', '.join(RW_MODES)})")
    if key == "bs":
        try:
            if isinstance(v, bool):  # pydantic's lax mode has made true into 1 by now, when typed int
                raise InvalidInput(f"bs {v!r} is not a size")
            parse_positive_size(v, what="bs", multiple_of=SECTOR)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
    if key in ("iodepth", "numjobs"):
        top = FIO_LIMITS[key]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
            raise InvalidInput(f"{where}: {v!r} must be a positive integer, at most {top}")


def _excluded(combo: Mapping[str, FactorValue], excludes: Sequence[Mapping[str, list[FactorValue]]]) -> bool:
    return any(all(combo.get(k) in vs for k, vs in ex.items()) for ex in excludes)


def _check_combination(path: Path, cond: Condition) -> None:
    w = cond.workload
    if w.job_file is not None and any(k in cond.factor_dict() for k in FIO_FACTORS):
        raise InvalidInput(
            f"{path}: workloads.{w.name}: a job_file workload cannot be combined with fio factors "
            f"({', '.join(k for k in FIO_FACTORS if k in cond.factor_dict())}); exclude the combination"
        )
    if cond.cache_state == "warm" and w.job_file is None and w.rw is not None and "trim" in w.rw:
        raise InvalidInput(f"{path}: condition {cond.id}: a warm-up pass of a trim workload is destructive")


def load(path: str | Path, *, profiles: Sequence[str] | None = None) -> Scenario:
    """Read, validate and expand a scenario file; raises InvalidInput (one line) on any problem."""
    p = Path(path)
    raw = files.load_toml(p, what="scenario file")  # one line for a directory, FIFO, binary, ...
    try:
        return from_dict(raw, p, profiles=profiles)
    except InvalidInput:
        hint = validators.misfiled(raw, p, "bench scenario")  # a sim file: name the verb for it
        if hint is not None:
            raise InvalidInput(hint) from None
        raise


def from_dict(raw: Mapping[str, Any], path: Path, *, profiles: Sequence[str] | None = None) -> Scenario:
    try:
        model = ScenarioModel.model_validate(raw)
    except ValidationError as exc:
        raise first_error(path, exc) from None
    except InvalidInput as exc:  # raised inside a validator that pydantic did not wrap
        raise InvalidInput(f"{path}: {exc}") from None
    known_profiles = tuple(profiles) if profiles is not None else available_profiles()
    if model.shaping not in known_profiles:
        raise InvalidInput(
            f"{path}: shaping: unknown profile {model.shaping!r} (known: {', '.join(known_profiles)})"
        )
    if model.where == "hosts" and not model.hosts:
        raise InvalidInput(f"{path}: hosts: where = 'hosts' needs a list of fio server hosts")
    if model.where != "hosts" and model.hosts:
        raise InvalidInput(f"{path}: hosts: only used with where = 'hosts'")
    bad_hosts = remote.check_hosts(model.hosts)
    if bad_hosts:
        i, entry, problem = bad_hosts[0]
        raise InvalidInput(f"{path}: hosts[{i}]: {entry!r}: {problem}")
    ssh = _ssh_hosts(path, model)
    _check_names(path, model)
    for i, w in enumerate(model.workloads):
        fioopts.check_workload(path, f"workloads[{i}]", w)  # the fio allow-list: ioengine, options, job_file
    names = {w.name for w in model.workloads}
    for i, pre in enumerate(model.phases.precondition):
        if pre not in names:
            raise InvalidInput(
                f"{path}: phases.precondition[{i}]: {pre!r} is not a workload of this scenario"
            )
    levels = _levels(path, model)
    if model.baseline is not None and "=" in model.baseline:
        for part in model.baseline.split(","):
            bkey, _, bvalue = (t.strip() for t in part.partition("="))
            if bkey not in levels or bvalue not in {str(v) for v in levels[bkey]}:
                raise InvalidInput(f"{path}: baseline: {part.strip()!r} is not a level of a factor here")
    excludes: list[dict[str, list[FactorValue]]] = []
    for i, ex in enumerate(model.exclude):
        if not ex:
            raise InvalidInput(f"{path}: exclude[{i}]: empty exclude would remove every condition")
        norm: dict[str, list[FactorValue]] = {}
        for key, value in ex.items():
            if key not in levels:
                raise InvalidInput(f"{path}: exclude[{i}].{key}: not a factor of this scenario")
            values: list[FactorValue] = list(value) if isinstance(value, list) else [value]
            for v in values:
                if v not in levels[key]:
                    raise InvalidInput(f"{path}: exclude[{i}].{key}: {v!r} is not a level of factor {key}")
            norm[key] = values
        excludes.append(norm)
    combinations = math.prod(len(v) for v in levels.values())
    if combinations * model.rounds > HARD_MAX_RUNS:
        raise InvalidInput(
            f"{path}: factors: {combinations:,} combinations x {model.rounds} repetitions is above "
            f"the bound of {HARD_MAX_RUNS:,} fio runs a scenario may have"
        )
    stacks = {s.name: s for s in model.stacks}
    workloads = {w.name: w for w in model.workloads}
    conditions: list[Condition] = []
    keys = list(levels)
    for combination in itertools.product(*(levels[k] for k in keys)):
        combo = dict(zip(keys, combination, strict=True))
        if _excluded(combo, excludes):
            continue
        workload = workloads[str(combo["workload"])]
        overrides = {k: combo[k] for k in FIO_FACTORS if k in combo}
        if overrides and workload.job_file is None:
            workload = workload.model_copy(update=overrides)
        state: CacheState = "warm" if combo.get("cache_state") == "warm" else "cold"
        # Single-level factors stay out of the condition's identity (they are constants of the run).
        varying = tuple(k for k in keys if len(levels[k]) > 1) or (keys[0],)
        cond = Condition(tuple(combo.items()), varying, stacks[str(combo["stack"])], workload, state)
        _check_combination(path, cond)
        conditions.append(cond)
    if not conditions:
        raise InvalidInput(f"{path}: exclude: the excludes remove every condition")
    return Scenario(path, model, tuple(conditions), tuple(keys), ssh)


def check_runs(sc: Scenario, *, yes: bool) -> None:
    """Refuse a scenario of more fio runs than its ``max_runs`` (default 1000) unless ``yes``."""
    if sc.runs > sc.model.max_runs and not yes:
        raise InvalidInput(
            f"{sc.path}: {sc.runs:,} fio runs ({len(sc.conditions):,} conditions x "
            f"{sc.model.rounds} {'max_repetitions' if sc.model.auto else 'repetitions'}) is above "
            f"max_runs = {sc.model.max_runs:,}: "
            "pass --yes or set max_runs in the scenario"
        )


def _ssh_hosts(path: Path, m: ScenarioModel) -> remote.SshHosts:
    """The ``[ssh]`` table as settings per host, file paths resolved (relative to the scenario) and
    checked here, before anything is built: a missing key file would otherwise only show as ssh's
    "Permission denied" on the first command."""
    if m.ssh is None:
        return remote.SshHosts()
    if m.where != "hosts":
        raise InvalidInput(f"{path}: ssh: only used with where = 'hosts'")
    names = {h.name: h for h in map(remote.parse_host, m.hosts)}
    for name in m.ssh.hosts:
        if name not in names:
            known = ", ".join(sorted(names))
            raise InvalidInput(f"{path}: ssh.hosts.{toml_key(name)}: not a host name in hosts ({known})")
        if names[name].is_local:
            raise InvalidInput(f"{path}: ssh.hosts.{toml_key(name)}: this machine: its stacks are built here")
    default = m.ssh.model_dump(exclude_unset=True, exclude={"hosts"})
    per_host = {
        name: _ssh_settings(
            path, f"ssh.hosts.{toml_key(name)}", {**default, **o.model_dump(exclude_unset=True)}
        )
        for name, o in m.ssh.hosts.items()
    }
    return remote.SshHosts(_ssh_settings(path, "ssh", default), per_host)


def _ssh_settings(path: Path, where: str, values: dict[str, Any]) -> remote.SshSettings:
    for key in ("identity_file", "config_file"):
        if values.get(key) is not None:
            values[key] = _ssh_file(path, f"{where}.{key}", values[key], private=key == "identity_file")
    if values.get("connect_timeout_s") is None:
        values.pop("connect_timeout_s", None)
    return remote.SshSettings(**values)


def _ssh_file(path: Path, where: str, value: str, *, private: bool) -> str:
    p = Path(value).expanduser()
    p = p if p.is_absolute() else path.parent / p
    if not p.is_file():
        raise InvalidInput(f"{path}: {where}: file not found: {value}")
    if private and p.stat().st_mode & 0o077:
        # ssh ignores such a key ("UNPROTECTED PRIVATE KEY FILE") and the login then fails obscurely.
        raise InvalidInput(f"{path}: {where}: {value} is readable by others (ssh refuses it: chmod 600 it)")
    return str(p.resolve())


def available_profiles() -> tuple[str, ...]:
    """Shaping profile names: from skycache.net.shaping when it is installed, else the defaults."""
    try:
        from skycache.net import shaping  # type: ignore[attr-defined,unused-ignore]  # optional module
    except ImportError:
        return DEFAULT_PROFILES
    profiles = getattr(shaping, "PROFILES", None)
    return tuple(profiles) if profiles else DEFAULT_PROFILES
