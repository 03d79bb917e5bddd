"""Simulation scenarios: a TOML file describing the cluster, repository, images, workload and NAT.

A scenario file may define ``[variants.NAME]`` tables (overrides deep-merged into the base, e.g. the
same boot storm without read caches) and a ``[sweep]`` grid of dotted parameters with replications.
Every variant and every sweep point is validated when the file is loaded, before anything runs,
against the pydantic schema of :mod:`skycache.sim.scenario_schema`; a problem is one line,
``FILE: key.path: what is wrong`` (the same line as a bench file's), naming the bad value. The
dataclasses below are what the model reads.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from skycache import files, validators
from skycache.errors import InvalidInput
from skycache.sim import budget
from skycache.sim.scenario_schema import SECTIONS, ScenarioFileModel, ScenarioModel
from skycache.validation import Location, Relocate, first_error, toml_key


@dataclass(frozen=True)
class ClusterSpec:
    nodes: int
    slots_per_node: int
    nic_bw: float  # bytes/s each direction
    read_cache: float  # bytes of local read cache per node; 0 = no read cache
    write_cache: bool  # write-back cache for the VM's COW clone on the node
    sync_fraction: float  # fraction of VMs whose COW clone is synchronised back at the end
    placement: str  # "random" | "cache-aware"
    racks: int = 0  # 0 = no racks (NICs straight on the repository's links)
    rack_uplink: float = 0.0  # bytes/s of each rack's uplink, each direction


@dataclass(frozen=True)
class RepositorySpec:
    kind: str  # "central" | "distributed"
    backend: str  # calibration backend key
    targets: int  # central: number of targets, each with its own link and disk
    link_bw: float  # central: bytes/s of each target's link
    read_bw: float | None  # override of the calibrated disk read rate
    write_bw: float | None
    latency: float | None
    replicas: int  # distributed: copies of each image on worker nodes


@dataclass(frozen=True)
class ImagesSpec:
    count: int
    zipf: float  # popularity exponent; 0 = uniform
    working_set: float  # bytes read at boot


@dataclass(frozen=True)
class WorkloadSpec:
    arrivals: str  # "poisson" | "burst" | "swf"
    count: int  # VMs (poisson, burst); cap on jobs read (swf, 0 = all)
    rate: float  # poisson: VMs per second
    window: float  # burst: arrivals spread uniformly over this many seconds (0 = all at t=0)
    trace: Path | None  # swf
    runtime: float  # mean run time, seconds
    runtime_dist: str  # "exponential" | "fixed"
    write_bytes: float  # bytes written while running


@dataclass(frozen=True)
class NatSpec:
    mode: str  # "none" | "per-node" | "central"
    gateways: int
    cores: float  # per gateway (central) or per node (per-node)
    egress_bw: float  # per running VM, bytes/s
    packet_size: float
    conn_rate: float  # new connections per second per running VM
    conn_lifetime: float
    conntrack_max: int
    gateway_link_bw: float  # central gateways: bytes/s each


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    variant: str
    seed: int
    duration: float  # 0 = until every VM has finished
    sample_interval: float
    calibration: Path | None
    cluster: ClusterSpec
    repository: RepositorySpec
    images: ImagesSpec
    workload: WorkloadSpec
    nat: NatSpec


@dataclass(frozen=True)
class ScenarioFile:
    """A loaded file: the base scenario, its variants and its sweep grid, all validated."""

    path: Path
    raw: Mapping[str, Any]
    base: Scenario
    variants: Mapping[str, Scenario]
    grid: Mapping[str, tuple[Any, ...]]
    replications: int

    def all_variants(self) -> list[Scenario]:
        return [self.base, *self.variants.values()]

    def sweep_points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]

    def with_overrides(self, variant: str, overrides: Mapping[str, Any]) -> Scenario:
        """The variant with ``overrides`` ({"SECTION.KEY": value}, a sweep point) set over it."""
        data = _variant_data(self.raw, variant)
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return parse_scenario(
            data,
            base_dir=self.path.parent,
            variant=variant,
            path=self.path,
            relocate=_in_point(self.raw, variant, self.grid, overrides),
        )


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_dotted(dotted: str) -> tuple[str, str]:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise InvalidInput(f"{dotted!r} is not SECTION.KEY (sections: {', '.join(SECTIONS)})")
    return parts[0], parts[1]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = _check_dotted(dotted)
    table = data.setdefault(section, {})
    if not isinstance(table, dict):  # refused by the schema of the file; not replaced here
        return
    table[key] = value


def _variant_data(raw: Mapping[str, Any], variant: str) -> dict[str, Any]:
    base = {k: v for k, v in raw.items() if k not in ("variants", "sweep")}
    if variant == "base":
        return copy.deepcopy(base)
    return _deep_merge(base, raw["variants"][variant])


def _has(data: Any, loc: Location) -> bool:
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True


def _in_variant(raw: Mapping[str, Any], variant: str) -> Relocate | None:
    """A problem of a merged variant at the key the variant sets, or at the base's key, noted."""
    if variant == "base":
        return None
    overrides = raw["variants"][variant]

    def relocate(loc: Location) -> tuple[Location, str]:
        # a key the variant sets (or a key inside a table it sets): the problem is in the variant
        for n in range(len(loc), 0, -1):
            if _has(overrides, loc[:n]):
                return ["variants", variant, *loc], ""
        return loc, f" (in variant {variant})"

    return relocate


def _in_point(
    raw: Mapping[str, Any], variant: str, grid: Mapping[str, tuple[Any, ...]], point: Mapping[str, Any]
) -> Relocate:
    """A problem of a sweep point at its value in ``sweep.grid``, else where the variant puts it."""
    in_variant = _in_variant(raw, variant)

    def relocate(loc: Location) -> tuple[Location, str]:
        dotted = ".".join(str(p) for p in loc[:2])
        note = "" if variant == "base" else f" (in variant {variant})"
        if dotted in point and dotted in grid and point[dotted] in grid[dotted]:
            return ["sweep", "grid", dotted, grid[dotted].index(point[dotted])], note
        if dotted in point:  # set by the caller (sim bench, --param): not a place in the file
            return loc, f" (set to {point[dotted]!r}){note}"
        return in_variant(loc) if in_variant else (loc, "")

    return relocate


def _validate(data: Mapping[str, Any], where: str, relocate: Relocate | None) -> ScenarioModel:
    try:
        return ScenarioModel.model_validate(data)
    except ValidationError as exc:
        raise first_error(where, exc, relocate, unknown_first=True) from None


def _to_scenario(m: ScenarioModel, base_dir: Path, variant: str) -> Scenario:
    """The dataclasses the model reads, from a validated scenario (keys keep their file names)."""
    s, c, r, i, w, n = m.scenario, m.cluster, m.repository, m.images, m.workload, m.nat
    return Scenario(
        name=s.name,
        description=s.description,
        variant=variant,
        seed=s.seed,
        duration=s.duration,
        sample_interval=s.sample_interval,
        calibration=(base_dir / s.calibration) if s.calibration else None,
        cluster=ClusterSpec(
            nodes=c.nodes,
            slots_per_node=c.slots_per_node,
            nic_bw=c.nic,
            read_cache=c.read_cache,
            write_cache=c.write_cache,
            sync_fraction=c.sync_fraction,
            placement=c.placement,
            racks=c.racks,
            rack_uplink=c.rack_uplink,
        ),
        repository=RepositorySpec(
            kind=r.kind,
            backend=r.backend,
            targets=r.targets,
            link_bw=r.link,
            read_bw=r.read_bw,
            write_bw=r.write_bw,
            latency=r.latency,
            replicas=r.replicas,
        ),
        images=ImagesSpec(count=i.count, zipf=i.zipf, working_set=i.working_set),
        workload=WorkloadSpec(
            arrivals=w.arrivals,
            count=w.count,
            rate=w.rate,
            window=w.window,
            trace=(base_dir / w.trace) if w.trace else None,
            runtime=w.runtime,
            runtime_dist=w.runtime_dist,
            write_bytes=w.write_bytes,
        ),
        nat=NatSpec(
            mode=n.mode,
            gateways=n.gateways,
            cores=n.cores,
            egress_bw=n.egress,
            packet_size=n.packet_size,
            conn_rate=n.conn_rate,
            conn_lifetime=n.conn_lifetime,
            conntrack_max=n.conntrack_max,
            gateway_link_bw=n.gateway_link,
        ),
    )


def parse_scenario(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    variant: str = "base",
    path: str | Path | None = None,
    relocate: Relocate | None = None,
) -> Scenario:
    """One scenario (the six sections, no variants or sweep) as the model reads it; ``path`` names
    the file in errors, ``relocate`` says where in it a problem of assembled ``data`` really is."""
    where = files.shown(path) if path is not None else "scenario"
    sc = _to_scenario(_validate(data, where, relocate), base_dir, variant)
    note = "" if variant == "base" else f" (in variant {variant})"
    if sc.repository.kind == "distributed" and sc.repository.replicas > sc.cluster.nodes:
        raise InvalidInput(
            f"{where}: repository.replicas: {sc.repository.replicas} copies of each image on "
            f"{sc.cluster.nodes} nodes (cluster.nodes){note}"
        )
    try:  # what the run would allocate: refused before anything is
        budget.check_scenario(sc)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}{note}") from None
    return sc


def parse_scenario_file(data: Mapping[str, Any], path: Path, *, yes: bool = False) -> ScenarioFile:
    """Validate a whole file; a sweep above ``sweep.max_points`` runs is refused unless ``yes``."""
    where = files.shown(path)
    try:
        model = ScenarioFileModel.model_validate(data)
    except ValidationError as exc:
        raise first_error(where, exc, unknown_first=True) from None
    base = parse_scenario(_variant_data(data, "base"), base_dir=path.parent, path=path)
    variants = {
        name: parse_scenario(
            _variant_data(data, name),
            base_dir=path.parent,
            variant=name,
            path=path,
            relocate=_in_variant(data, name),
        )
        for name in model.variants
    }
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in model.sweep.grid.items():
        try:
            _check_dotted(key)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: sweep.grid.{toml_key(key)}: {exc}") from None
        grid[key] = tuple(values)
    replications = model.sweep.replications
    # Counted before a single point is expanded: validating 10**6 points is itself the hang.
    runs = math.prod(len(v) for v in grid.values()) * (1 + len(variants)) * replications
    budget.check_points(runs, model.sweep.max_points, yes, f"{where}: the sweep" if grid else where)
    sf = ScenarioFile(path=path, raw=data, base=base, variants=variants, grid=grid, replications=replications)
    for point in sf.sweep_points():  # every grid point must be a valid scenario, before any run
        for vname in ("base", *variants):
            sf.with_overrides(vname, point)
    return sf


def load_scenario(path: str | Path, *, yes: bool = False) -> ScenarioFile:
    p = Path(path)
    data = files.load_toml(p, what="scenario file")  # one line for a directory, FIFO, binary, ...
    try:
        return parse_scenario_file(data, p, yes=yes)
    except InvalidInput:
        hint = validators.misfiled(data, p, "sim scenario")  # a fio suite: name the verb for it
        if hint is not None:
            raise InvalidInput(hint) from None
        raise
