"""The schema of sim scenario files, in pydantic, as bench's is: every key known, every value of its
type and within the model's bounds, quantities in the one grammar of :mod:`skycache.units`.

The models here only validate; :mod:`skycache.sim.scenario` turns a validated file into the frozen
dataclasses the model reads. The validators raise ``ValueError`` with a message that names the bad
value, which :func:`skycache.validation.first_error` puts after the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from skycache.errors import InvalidInput
from skycache.numbers import SEED_MAX, parse_float, parse_int
from skycache.sim import budget, quantities
from skycache.units import shown
from skycache.validation import StrictModel

# The sections of a scenario, in the order the file documents them; "SECTION.KEY" of a sweep or an
# override names one of them.
SECTIONS = ("scenario", "cluster", "repository", "images", "workload", "nat")


def _refusing(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse`` with its InvalidInput as the ValueError pydantic reports at the key's location.
    The parsers are called with an empty ``what`` (pydantic gives the key), so their messages may
    start with the space that came before it."""

    def check(value: Any) -> Any:
        try:
            return parse(value)
        except InvalidInput as exc:
            raise ValueError(str(exc).strip()) from None

    return check


def _quantity(parse: Callable[..., float]) -> BeforeValidator:
    return BeforeValidator(_refusing(lambda v: parse(v, what="")))


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be positive")
    return value


Size = Annotated[float, _quantity(quantities.parse_bytes)]
PositiveSize = Annotated[Size, AfterValidator(_positive)]
Duration = Annotated[float, _quantity(quantities.parse_duration)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
Bandwidth = Annotated[float, _quantity(quantities.parse_bandwidth)]
PositiveBandwidth = Annotated[Bandwidth, AfterValidator(_positive)]
EventRate = Annotated[float, _quantity(quantities.parse_frequency)]


def _count(minimum: int, maximum: int, bound: str = "") -> BeforeValidator:
    """A TOML integer (not a string of digits, not a bool) in [minimum, maximum]: TOML integers are
    unbounded in Python, and 10**30 would reach numpy and fail there."""

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{shown(value)} is not a whole number")
        return parse_int(value, what="", minimum=minimum, maximum=maximum, bound=bound)

    return BeforeValidator(_refusing(parse))


def _number(minimum: float, maximum: float) -> BeforeValidator:
    """A TOML integer or float, finite (TOML has nan and inf) and in [minimum, maximum]."""

    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{shown(value)} is not a number")
        return parse_float(value, what="", minimum=minimum, maximum=maximum)

    return BeforeValidator(_refusing(parse))


def _text(value: Any) -> Any:
    # A NUL, newline or escape would reach file names and reports.
    if isinstance(value, str) and not value.isprintable():
        raise ValueError(f"{shown(value)} has a control character")
    return value


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _name(value: Any) -> Any:
    if not (isinstance(value, str) and _NAME.fullmatch(value)):
        raise ValueError(f"{shown(value)} is not a name (letters, digits, . _ -; at most 64)")
    return value


Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[str, BeforeValidator(_name)]
Nodes = Annotated[int, _count(1, budget.MAX_NODES, "the model's node bound")]


class ScenarioSection(StrictModel):
    name: Name
    description: Text = ""  # printed in reports: one line, no control characters
    seed: Annotated[int, _count(0, SEED_MAX, "a 32-bit seed")] = 1
    duration: Duration = 0.0  # 0 = until every VM has finished
    sample_interval: PositiveDuration = 10.0
    calibration: Text = ""  # relative to the scenario file


class ClusterSection(StrictModel):
    nodes: Nodes
    slots_per_node: Annotated[int, _count(1, 100_000)] = 8
    nic: PositiveBandwidth
    read_cache: Size = 0.0
    write_cache: bool = True
    sync_fraction: Annotated[float, _number(0.0, 1.0)] = 0.0
    placement: Literal["random", "cache-aware"] = "random"
    # Racks: nodes in `racks` contiguous groups, each behind one uplink (per direction) to the core.
    # 0 = no racks: NICs straight on the repository's links, as before racks existed.
    racks: Annotated[int, _count(0, budget.MAX_NODES, "the model's node bound")] = 0
    rack_uplink: Bandwidth = 0.0

    @model_validator(mode="after")
    def _racks(self) -> ClusterSection:
        if self.racks > self.nodes:
            raise ValueError(f"racks = {self.racks} is more racks than nodes ({self.nodes})")
        if self.racks > 0 and self.rack_uplink <= 0:
            raise ValueError("rack_uplink is required (and positive) when racks > 0")
        if self.racks == 0 and self.rack_uplink > 0:
            raise ValueError("rack_uplink is set but racks = 0 (no racks): set racks or drop rack_uplink")
        return self


class RepositorySection(StrictModel):
    kind: Literal["central", "distributed"] = "central"
    backend: Text = "lvm"
    targets: Nodes = 1
    link: Bandwidth = 0.0
    read_bw: PositiveBandwidth | None = None
    write_bw: PositiveBandwidth | None = None
    latency: Duration | None = None
    replicas: Nodes = 1

    @model_validator(mode="after")
    def _central_link(self) -> RepositorySection:
        if self.kind == "central" and self.link <= 0:
            raise ValueError("link is required (and positive) for a central repository")
        return self


class ImagesSection(StrictModel):
    count: Annotated[int, _count(1, budget.MAX_IMAGES, "the model's image bound")] = 1
    zipf: Annotated[float, _number(0.0, 100.0)] = 1.0
    working_set: Size


class WorkloadSection(StrictModel):
    arrivals: Literal["poisson", "burst", "swf"]
    count: Annotated[int, _count(0, budget.MAX_VMS, "the model's VM bound")] = 0
    rate: EventRate = 0.0
    window: Duration = 0.0
    trace: Text = ""  # relative to the scenario file
    runtime: Duration = 3600.0
    runtime_dist: Literal["exponential", "fixed"] = "exponential"
    write_bytes: Size = 0.0

    @model_validator(mode="after")
    def _arrivals(self) -> WorkloadSection:
        if self.arrivals == "poisson" and (self.rate <= 0 or self.count <= 0):
            raise ValueError("arrivals = 'poisson' needs a positive rate and count")
        if self.arrivals == "burst" and self.count <= 0:
            raise ValueError("arrivals = 'burst' needs a positive count")
        if self.arrivals == "swf" and not self.trace:
            raise ValueError("arrivals = 'swf' needs workload.trace")
        return self


class NatSection(StrictModel):
    mode: Literal["none", "per-node", "central"] = "none"
    gateways: Nodes = 1
    cores: Annotated[float, _number(0.0, 1e6)] = 1.0
    egress: Bandwidth = 0.0
    packet_size: PositiveSize = 1200.0
    conn_rate: EventRate = 0.0
    conn_lifetime: Duration = 120.0
    conntrack_max: Annotated[int, _count(1, 2**32 - 1, "nf_conntrack_max is 32-bit")] = 262144
    gateway_link: Bandwidth = 1.25e9

    @model_validator(mode="after")
    def _cores(self) -> NatSection:
        if self.mode != "none" and self.cores <= 0:
            raise ValueError(f"cores must be positive when mode = {self.mode!r}")
        return self


def _section() -> Any:
    # A missing section is an empty one: its required keys are then named one by one.
    return Field(default_factory=dict, validate_default=True)


class ScenarioModel(StrictModel):
    """One scenario: the base of a file, or a variant deep-merged over it, or a sweep point."""

    scenario: ScenarioSection = _section()
    cluster: ClusterSection = _section()
    repository: RepositorySection = _section()
    images: ImagesSection = _section()
    workload: WorkloadSection = _section()
    nat: NatSection = _section()


def _grid_values(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{shown(value)} is not a non-empty list of values")
    return value


class SweepSection(StrictModel):
    replications: Annotated[int, _count(1, budget.HARD_MAX_POINTS)] = 1
    # runs (points x variants x replications) accepted without --yes
    max_points: Annotated[int, _count(1, budget.HARD_MAX_POINTS)] = budget.DEFAULT_MAX_POINTS
    # "SECTION.KEY" -> values; each point is checked as a whole scenario when the file is loaded
    grid: dict[str, Annotated[list[Any], BeforeValidator(_grid_values)]] = Field(default_factory=dict)


def _variant_name(value: Any) -> Any:
    if value == "base":
        raise ValueError("'base' is reserved for the scenario itself")
    return _text(value)


class ScenarioFileModel(ScenarioModel):
    """A whole file: the base scenario, ``[variants.NAME]`` overrides and the ``[sweep]`` table.
    A variant's overrides are checked when merged over the base (in :mod:`skycache.sim.scenario`)."""

    variants: dict[Annotated[str, AfterValidator(_variant_name)], dict[str, Any]] = Field(
        default_factory=dict
    )
    sweep: SweepSection = Field(default_factory=SweepSection)
