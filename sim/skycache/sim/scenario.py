"""Simulation scenarios: a TOML file describing the cluster, repository, images, workload and NAT.

A scenario file may define ``[variants.NAME]`` tables (overrides deep-merged into the base, e.g. the
same boot storm without read caches) and a ``[sweep]`` grid of dotted parameters with replications.
Every variant and every sweep point is validated when the file is loaded, before anything runs.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skycache import files
from skycache.errors import InvalidInput
from skycache.numbers import SEED_MAX
from skycache.sim import budget
from skycache.sim.quantities import parse_bandwidth, parse_bytes, parse_duration, parse_frequency
from skycache.sim.tables import Table, as_bool, as_float, as_int, as_name, as_str, unit


@dataclass(frozen=True)
class ClusterSpec:
    nodes: int
    slots_per_node: int
    nic_bw: float  # bytes/s each direction
    read_cache: float  # bytes of local read cache per node; 0 = no read cache
    write_cache: bool  # write-back cache for the VM's COW clone on the node
    sync_fraction: float  # fraction of VMs whose COW clone is synchronised back at the end
    placement: str  # "random" | "cache-aware"


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
        data = _variant_data(self.raw, variant)
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return parse_scenario(data, base_dir=self.path.parent, variant=variant)


_SECTIONS = ("scenario", "cluster", "repository", "images", "workload", "nat", "variants", "sweep")


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS[:6]:
        raise InvalidInput(f"parameter {dotted!r} is not SECTION.KEY (sections: {', '.join(_SECTIONS[:6])})")
    data.setdefault(parts[0], {})[parts[1]] = value


def _variant_data(raw: Mapping[str, Any], variant: str) -> dict[str, Any]:
    base = {k: v for k, v in raw.items() if k not in ("variants", "sweep")}
    if variant == "base":
        return copy.deepcopy(base)
    return _deep_merge(base, raw["variants"][variant])


def parse_scenario(data: Mapping[str, Any], *, base_dir: Path, variant: str = "base") -> Scenario:
    top = Table(data, "")
    for key in top.names():
        if key not in _SECTIONS:
            raise InvalidInput(f"unknown section [{key}] (known: {', '.join(_SECTIONS)})")
    s = top.sub("scenario")
    name = s.require("name", as_name)
    description = s.get("description", as_str(), "")
    seed = s.get("seed", as_int(0, SEED_MAX, "a 32-bit seed"), 1)
    duration = s.get("duration", unit(parse_duration), 0.0)
    sample = s.get("sample_interval", unit(parse_duration), 10.0)
    if sample <= 0:
        raise InvalidInput("scenario.sample_interval must be positive")
    cal_text = s.get("calibration", as_str(), "")
    calibration = (base_dir / cal_text) if cal_text else None
    s.done()

    c = top.sub("cluster")
    cluster = ClusterSpec(
        nodes=c.require("nodes", as_int(1, budget.MAX_NODES, "the model's node bound")),
        slots_per_node=c.get("slots_per_node", as_int(1, 100_000), 8),
        nic_bw=c.require("nic", unit(parse_bandwidth)),
        read_cache=c.get("read_cache", unit(parse_bytes), 0.0),
        write_cache=c.get("write_cache", as_bool, True),
        sync_fraction=c.get("sync_fraction", as_float(0.0, 1.0), 0.0),
        placement=c.get("placement", as_str("random", "cache-aware"), "random"),
    )
    c.done()
    if cluster.nic_bw <= 0:
        raise InvalidInput("cluster.nic must be positive")

    r = top.sub("repository")
    repository = RepositorySpec(
        kind=r.get("kind", as_str("central", "distributed"), "central"),
        backend=r.get("backend", as_str(), "lvm"),
        targets=r.get("targets", as_int(1, budget.MAX_NODES, "the model's node bound"), 1),
        link_bw=r.get("link", unit(parse_bandwidth), 0.0),
        read_bw=r.get("read_bw", unit(parse_bandwidth), None),
        write_bw=r.get("write_bw", unit(parse_bandwidth), None),
        latency=r.get("latency", unit(parse_duration), None),
        replicas=r.get("replicas", as_int(1, budget.MAX_NODES, "the model's node bound"), 1),
    )
    r.done()
    if repository.kind == "central" and repository.link_bw <= 0:
        raise InvalidInput("repository.link is required (and positive) for a central repository")
    if repository.kind == "distributed" and repository.replicas > cluster.nodes:
        raise InvalidInput(f"repository.replicas = {repository.replicas} exceeds cluster.nodes")
    for what, v in (("read_bw", repository.read_bw), ("write_bw", repository.write_bw)):
        if v is not None and v <= 0:
            raise InvalidInput(f"repository.{what} must be positive")

    i = top.sub("images")
    images = ImagesSpec(
        count=i.get("count", as_int(1, budget.MAX_IMAGES, "the model's image bound"), 1),
        zipf=i.get("zipf", as_float(0.0, 100.0), 1.0),
        working_set=i.require("working_set", unit(parse_bytes)),
    )
    i.done()

    w = top.sub("workload")
    arrivals = w.require("arrivals", as_str("poisson", "burst", "swf"))
    trace_text = w.get("trace", as_str(), "")
    workload = WorkloadSpec(
        arrivals=arrivals,
        count=w.get("count", as_int(0, budget.MAX_VMS, "the model's VM bound"), 0),
        rate=w.get("rate", unit(parse_frequency), 0.0),
        window=w.get("window", unit(parse_duration), 0.0),
        trace=(base_dir / trace_text) if trace_text else None,
        runtime=w.get("runtime", unit(parse_duration), 3600.0),
        runtime_dist=w.get("runtime_dist", as_str("exponential", "fixed"), "exponential"),
        write_bytes=w.get("write_bytes", unit(parse_bytes), 0.0),
    )
    w.done()
    if arrivals == "poisson" and (workload.rate <= 0 or workload.count <= 0):
        raise InvalidInput("workload.arrivals = 'poisson' needs a positive rate and count")
    if arrivals == "burst" and workload.count <= 0:
        raise InvalidInput("workload.arrivals = 'burst' needs a positive count")
    if arrivals == "swf" and workload.trace is None:
        raise InvalidInput("workload.arrivals = 'swf' needs workload.trace")

    n = top.sub("nat")
    nat = NatSpec(
        mode=n.get("mode", as_str("none", "per-node", "central"), "none"),
        gateways=n.get("gateways", as_int(1, budget.MAX_NODES, "the model's node bound"), 1),
        cores=n.get("cores", as_float(0.0, 1e6), 1.0),
        egress_bw=n.get("egress", unit(parse_bandwidth), 0.0),
        packet_size=n.get("packet_size", unit(parse_bytes), 1200.0),
        conn_rate=n.get("conn_rate", unit(parse_frequency), 0.0),
        conn_lifetime=n.get("conn_lifetime", unit(parse_duration), 120.0),
        conntrack_max=n.get("conntrack_max", as_int(1, 2**32 - 1, "nf_conntrack_max is 32-bit"), 262144),
        gateway_link_bw=n.get("gateway_link", unit(parse_bandwidth), 1.25e9),
    )
    n.done()
    if nat.mode != "none" and nat.cores <= 0:
        raise InvalidInput("nat.cores must be positive")
    if nat.packet_size <= 0:
        raise InvalidInput("nat.packet_size must be positive")
    top.raw("variants")
    top.raw("sweep")
    sc = Scenario(
        name=name,
        description=description,
        variant=variant,
        seed=seed,
        duration=duration,
        sample_interval=sample,
        calibration=calibration,
        cluster=cluster,
        repository=repository,
        images=images,
        workload=workload,
        nat=nat,
    )
    budget.check_scenario(sc)
    return sc


def parse_scenario_file(data: Mapping[str, Any], path: Path, *, yes: bool = False) -> ScenarioFile:
    """Validate a whole file; a sweep above ``sweep.max_points`` runs is refused unless ``yes``."""
    base = parse_scenario(_variant_data(data, "base"), base_dir=path.parent)
    variants_t = Table(data.get("variants", {}), "variants")
    variants: dict[str, Scenario] = {}
    for vname in variants_t.names():
        if vname == "base":
            raise InvalidInput("variants.base is reserved for the scenario itself")
        Table(variants_t.raw(vname), f"variants.{vname}")  # must be a table
        variants[vname] = parse_scenario(_variant_data(data, vname), base_dir=path.parent, variant=vname)
    sw = Table(data.get("sweep", {}), "sweep")
    replications = sw.get("replications", as_int(1, budget.HARD_MAX_POINTS), 1)
    max_points = sw.get("max_points", as_int(1, budget.HARD_MAX_POINTS), budget.DEFAULT_MAX_POINTS)
    grid_raw = sw.sub("grid")
    grid: dict[str, tuple[Any, ...]] = {}
    for key in grid_raw.names():
        values = grid_raw.raw(key)
        if not isinstance(values, list) or not values:
            raise InvalidInput(f"sweep.grid.{key} must be a non-empty list")
        grid[key] = tuple(values)
    sw.done()
    # Counted before a single point is expanded: validating 10**6 points is itself the hang.
    runs = math.prod(len(v) for v in grid.values()) * (1 + len(variants)) * replications
    budget.check_points(runs, max_points, yes, f"{path}: the sweep" if grid else f"{path}")
    sf = ScenarioFile(path=path, raw=data, base=base, variants=variants, grid=grid, replications=replications)
    for point in sf.sweep_points():  # every grid point must be a valid scenario, before any run
        for vname in ("base", *variants):
            sf.with_overrides(vname, point)
    return sf


def load_scenario(path: str | Path, *, yes: bool = False) -> ScenarioFile:
    p = Path(path)
    data = files.load_toml(p, what="scenario file")  # one line for a directory, FIFO, binary, ...
    return parse_scenario_file(data, p, yes=yes)
