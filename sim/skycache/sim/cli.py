"""``skycache sim``: run, sweep, calibrate and benchmark the cluster model."""

from __future__ import annotations

import json
import math
import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skycache import files, validators
from skycache.errors import InvalidInput
from skycache.numbers import INT64_MAX, parse_float, parse_int, parse_seed
from skycache.sim import validate as sim_validate

if TYPE_CHECKING:
    # Every `skycache sim ...` start registers these verbs; the scenario and calibration schemas
    # (pydantic) are imported by the verbs that run.
    from skycache.sim.calibration import Calibration
    from skycache.sim.scenario import ScenarioFile

# Local Dask worker processes: each is a Python process with the model loaded (~150 MiB); more than
# this on one machine is a typo.
MAX_WORKERS = 256
# Below this many transfers at once, `sim bench --vms` says it is not a measure of bandwidth sharing.
FEW_TRANSFERS = 1000

app = typer.Typer(
    help="Simulate repository, network and NAT load for large clusters.",
    no_args_is_help=True,
)
# `skycache validate` checks these kinds of file, and other verbs name `sim check` for a sim scenario
# What the lab's command server imports ahead for its warm forks (skycache.lab.command_server).
LAB_WARM_IMPORTS = ("skycache.sim.scenario", "skycache.sim.calibration")
validators.register(sim_validate.SCENARIO_KIND)
validators.register(sim_validate.CALIBRATION_KIND)

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario TOML (scenarios/sim-*.toml).")]
YesOpt = Annotated[
    bool, typer.Option("--yes", help="Accept a sweep above sweep.max_points runs (default 1000).")
]
CalibrationOpt = Annotated[
    Path | None,
    typer.Option("--calibration", "-c", help="Calibration TOML (default: the scenario's calibration)."),
]


def _progress(text: str) -> None:
    """A progress line on stderr (a terminal or a log alike): stdout stays the table or the JSON."""
    typer.echo(f"sim: {text}", err=True)


def _calibration(sf: ScenarioFile, path: Path | None) -> Calibration:
    from skycache.sim.calibration import load_calibration

    chosen = path or sf.base.calibration
    if chosen is None:
        raise InvalidInput("no calibration: pass --calibration FILE or set scenario.calibration")
    return load_calibration(chosen)


def _provenance(sf: ScenarioFile, cal: Calibration, seed: int | None) -> dict[str, Any]:
    return {
        "scenario": str(sf.path),
        "calibration": cal.path or "(in memory)",
        "seed": seed if seed is not None else sf.base.seed,
        "skycache": version("skycache"),
        "python": platform.python_version(),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g} s"


def _summary_line(s: dict[str, Any]) -> str:
    parts = [
        f"{s['variant']}: {s['vms_started']}/{s['vms']} VMs started",
        f"start latency median {_secs(s['start_latency_median_s'])}, p99 {_secs(s['start_latency_p99_s'])}",
        f"peak repository link utilisation {_pct(s['repo_link_util_peak'])}"
        f" (instantaneous {_pct(s['repo_link_util_peak_instant'])}), disk {_pct(s['repo_disk_util_peak'])}",
        f"read-cache hits {_pct(s['cache_hit_ratio'])}",
    ]
    if s.get("racks"):
        parts.append(
            f"{s['racks']} racks: peak rack uplink utilisation {_pct(s['rack_uplink_util_peak'])}"
            f" (instantaneous {_pct(s['rack_uplink_util_peak_instant'])}),"
            f" mean while starting {_pct(s['rack_uplink_util_mean'])}"
        )
    if s["nat_mode"] != "none":
        parts.append(
            f"NAT ({s['nat_mode']}) peak CPU {_pct(s['nat_cpu_util_peak'])}, conntrack peak "
            f"{s['conntrack_peak']:.0f}/{s['conntrack_limit']}"
            + (" (FULL)" if s["conntrack_over_limit"] else "")
        )
    return "; ".join(parts)


def _parse_value(text: str) -> Any:
    """A ``--param`` value as the TOML value it stands for: a bool, an integer, a number, or text
    (a quantity such as "1 Gbit/s"), which the scenario schema then checks. Read by the number
    grammar: Python's int() and float() take "1_000", "٣" and "nan"."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return parse_int(text, what="--param", minimum=-INT64_MAX, maximum=INT64_MAX)
    except InvalidInput:
        pass
    try:
        return parse_float(text, what="--param", minimum=-math.inf)
    except InvalidInput:
        return text.strip()


@app.command("run")
def run_cmd(
    scenario: ScenarioArg,
    calibration: CalibrationOpt = None,
    seed_text: Annotated[
        str | None, typer.Option("--seed", help="RNG seed, 0 to 2**32-1 (default: the scenario's).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (default: results/sim/<name>-<time>)."),
    ] = None,
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="Run only these variants ('base' is the scenario).")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG figures.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    yes: YesOpt = False,
) -> None:
    """Simulate a scenario (every variant it defines) and write tidy tables, summary and plots."""
    from skycache.sim.model import simulate
    from skycache.sim.results import series_table, summarise, vm_table, write_run
    from skycache.sim.scenario import load_scenario

    seed = parse_seed(seed_text, what="--seed") if seed_text is not None else None
    files.check_output_dir(out or Path("results/sim"), what="--out")  # before the run, not after it
    sf = load_scenario(scenario, yes=yes)
    cal = _calibration(sf, calibration)
    chosen = sf.all_variants()
    if variant:
        known = {s.variant: s for s in chosen}
        for v in variant:
            if v not in known:
                raise InvalidInput(f"scenario has no variant {v!r} (has: {', '.join(known)})")
        chosen = [known[v] for v in variant]
    results, summaries = [], []
    began = time.monotonic()
    for i, sc in enumerate(chosen, 1):
        _progress(f"run: variant {sc.variant} ({i} of {len(chosen)}) ... {time.monotonic() - began:.1f} s")
        t0 = time.perf_counter()
        res = simulate(sc, cal, seed)
        summaries.append(summarise(res, wall_s=time.perf_counter() - t0))
        results.append(res)
    prov = _provenance(sf, cal, seed)
    out_dir = out or Path("results/sim") / f"{sf.base.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    write_run(out_dir, results, summaries, prov)
    if plots:
        import pandas as pd

        from skycache.sim.plots import plot_run

        _progress(f"run: drawing plots ... {time.monotonic() - began:.1f} s")
        vms = pd.concat([vm_table(r) for r in results], ignore_index=True)
        series = pd.concat([series_table(r) for r in results], ignore_index=True)
        plot_run(out_dir / "plots", vms, series, prov)
    _progress(f"run: done in {time.monotonic() - began:.1f} s")
    if as_json:
        typer.echo(json.dumps({"provenance": prov, "variants": summaries}, indent=2, default=str))
        return
    typer.echo(f"scenario {sf.base.name} ({sf.path}); calibration {cal.path}; output {out_dir}")
    for s in summaries:
        typer.echo(_summary_line(s))


@app.command("check")
def check_cmd(scenario: ScenarioArg, calibration: CalibrationOpt = None, yes: YesOpt = False) -> None:
    """Validate a scenario (all variants and sweep points), its trace and its calibration (every value
    a variant uses present and fit for its role); run nothing. `skycache validate FILE...` checks
    any kind of file."""
    checked = sim_validate.check_scenario(scenario, yes, calibration)
    typer.echo(f"ok: {checked.summary}")


@app.command("sweep")
def sweep_cmd(
    scenario: ScenarioArg,
    calibration: CalibrationOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="SECTION.KEY=V1,V2,... (replaces the scenario's [sweep.grid])."),
    ] = None,
    replications: Annotated[
        str | None, typer.Option("--replications", "-r", help="Seeds per point (default: scenario's).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Address of an existing Dask scheduler.")
    ] = None,
    workers: Annotated[
        str, typer.Option("--workers", help=f"Local cluster worker processes (1 to {MAX_WORKERS}).")
    ] = "2",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="Sweep only these variants ('base' is the scenario; repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON records.")] = False,
    yes: YesOpt = False,
) -> None:
    """Run a grid of parameters x variants x replications in parallel on Dask."""
    from skycache.sim import budget
    from skycache.sim.scenario import load_scenario, parse_scenario_file
    from skycache.sim.sweep import run_sweep, write_sweep
    from skycache.sim.tables import Table, as_int

    # Parsed by the one number grammar: click's int takes "٣" and 10**30 workers.
    n_workers = parse_int(workers, what="--workers", minimum=1, maximum=MAX_WORKERS, bound="local processes")
    reps_given = (
        None
        if replications is None
        else parse_int(replications, what="--replications", minimum=1, maximum=budget.HARD_MAX_POINTS)
    )
    files.check_output_dir(out or Path("results/sim"), what="--out")  # before the sweep, not after it
    # The file's own grid is checked on load, unless --param replaces it or -r changes the count.
    sf = load_scenario(scenario, yes=yes or bool(param) or reps_given is not None)
    limit = Table(sf.raw.get("sweep", {}), "sweep").get("max_points", as_int(1), budget.DEFAULT_MAX_POINTS)
    reps = reps_given or sf.replications
    if param:
        grid: dict[str, list[Any]] = {}
        for item in param:
            key, sep, values = item.partition("=")
            if not sep or not values:
                raise InvalidInput(f"--param {item!r} is not SECTION.KEY=V1,V2")
            grid[key.strip()] = [_parse_value(v) for v in values.split(",")]
        # Counted before the points are expanded and validated (that is the slow part).
        runs = math.prod(len(v) for v in grid.values()) * (1 + len(sf.variants)) * reps
        budget.check_points(runs, limit, yes, "--param grid")
        raw = dict(sf.raw)
        raw["sweep"] = {**dict(raw.get("sweep", {})), "grid": grid}
        sf = parse_scenario_file(raw, sf.path, yes=True)
    known = ["base", *sf.variants]
    for v in variant or []:
        if v not in known:
            raise InvalidInput(f"scenario has no variant {v!r} (has: {', '.join(known)})")
    n_variants = len(set(variant)) if variant else len(known)
    runs = len(sf.sweep_points()) * n_variants * reps
    budget.check_points(runs, limit, yes, f"{sf.path}: the sweep")
    cal = _calibration(sf, calibration)
    t0 = time.perf_counter()
    where = f"the Dask scheduler {scheduler}" if scheduler else f"{n_workers} local worker process(es)"
    _progress(f"sweep: {runs} runs on {where}")
    table = run_sweep(
        sf,
        cal,
        replications=reps,
        scheduler=scheduler,
        workers=n_workers,
        variants=variant or None,
        progress=_progress,
    )
    wall = time.perf_counter() - t0
    out_dir = (
        out or Path("results/sim") / f"{sf.base.name}-sweep-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    )
    path = write_sweep(out_dir, table)
    (out_dir / "provenance.json").write_text(json.dumps(_provenance(sf, cal, None), indent=2) + "\n")
    if as_json:
        typer.echo(table.to_json(orient="records"))
        return
    params = [c for c in table.columns if c.startswith("param:")]
    cols = [
        *params,
        "variant",
        "seed",
        "start_latency_median_s",
        "start_latency_p99_s",
        "repo_link_util_peak",
    ]
    typer.echo(table[cols].to_string(index=False))
    typer.echo(f"{len(table)} runs in {wall:.1f} s; table {path}")


@app.command("saturation")
def saturation_cmd(
    sweep: Annotated[Path, typer.Argument(help="A sweep's directory or its sweep.parquet.")],
    param: Annotated[
        str | None, typer.Option("--param", "-p", help="The swept SECTION.KEY (default: the only one).")
    ] = None,
    latency_factor: Annotated[
        str, typer.Option("--latency-factor", help="Saturated when p99 > this x the first point's.")
    ] = "2",
    util_limit: Annotated[
        str, typer.Option("--util-limit", help="Saturated when the busiest mean utilisation > this.")
    ] = "0.9",
    as_json: Annotated[bool, typer.Option("--json", help="Print the points as JSON.")] = False,
) -> None:
    """Where each variant of a sweep saturates (start-latency p99 or bottleneck utilisation)."""
    import dataclasses

    import pandas as pd

    from skycache.sim.saturation import find_saturation

    factor = parse_float(latency_factor, what="--latency-factor", minimum=1.0, maximum=1e6)
    limit = parse_float(util_limit, what="--util-limit", minimum=0.0, maximum=1.0)
    path = sweep / "sweep.parquet" if sweep.is_dir() else sweep
    if not path.is_file():
        raise InvalidInput(f"{files.shown(path)}: no sweep table (run skycache sim sweep first)")
    found = find_saturation(pd.read_parquet(path), param, latency_factor=factor, util_limit=limit)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(s) for s in found], indent=2, default=str))
        return
    for s in found:
        where = (
            f"saturates at {s.param} = {s.saturated_at} ({s.reason}); last below: {s.last_below}"
            if s.saturated_at is not None
            else f"not saturated up to {s.param} = {s.last_below} ({s.reason})"
        )
        typer.echo(f"{s.variant}: unloaded p99 {s.unloaded_p99_s:.3g} s; {where}")


@app.command("calibrate")
def calibrate_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Benchmark run directories (tidy.parquet + manifest.json).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Calibration TOML to write.")],
    base: Annotated[
        Path | None, typer.Option("--base", help="Calibration to take values from that no run provides.")
    ] = None,
    accept: Annotated[
        list[str] | None,
        typer.Option(
            "--accept-role-mismatch",
            help="Let the model use this value although its source workload misfits its role (repeatable).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print values, sources, missing values and notes as JSON.")
    ] = False,
) -> None:
    """Derive the model's rates from benchmark runs; each value records its source; lists what is missing."""
    from skycache.sim.calibrate import derive_report, missing_hint
    from skycache.sim.calibration import load_calibration, render_calibration

    report = derive_report(runs, load_calibration(base) if base else None, accept or ())
    cal = report.calibration
    header = "written by: skycache sim calibrate " + " ".join(str(r) for r in runs)
    if base:
        header += f" --base {base}"
    output.write_text(render_calibration(cal, header=header))
    load_calibration(output)  # what we wrote must load
    if as_json:
        doc = {
            "output": str(output),
            "values": {n: {"value": r.text, "source": r.source.as_dict()} for n, r in cal.values.items()},
            "accept_role_mismatch": list(cal.accept_role_mismatch),
            "role_mismatches": cal.mismatches(),
            "missing": [{"name": n, "how": missing_hint(n)} for n in cal.missing],
            "notes": report.notes,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(render_calibration(cal).rstrip())
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    for name in cal.missing:
        typer.echo(f"missing: {missing_hint(name)}", err=True)
    typer.echo(f"wrote {output}")


@app.command("bench")
def bench_cmd(
    vms_text: Annotated[
        str | None, typer.Option("--vms", help="VM starts to simulate (default 1000000).")
    ] = None,
    nodes_text: Annotated[
        str | None, typer.Option("--nodes", help="Worker nodes (default: scenario's).")
    ] = None,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="Scenario (default: sim-scale).")
    ] = None,
    calibration: CalibrationOpt = None,
    trace_memory: Annotated[
        bool, typer.Option("--trace-memory", help="Also measure Python allocations (tracemalloc; slower).")
    ] = False,
    network: Annotated[
        str | None,
        typer.Option(
            "--network",
            help="Time the flow network alone on a topology with --flows concurrent transfers: "
            "star (one 10 Gb/s repository link, a NIC per VM), racks (nodes behind rack uplinks), "
            "mixed-racks (racks, every third NIC 1 Gb/s), san-racks or peer-racks (the model's boot "
            "storm on its racks: from 8 targets, or from replica holders among the nodes).",
        ),
    ] = None,
    flows_text: Annotated[
        str, typer.Option("--flows", help="--network: transfers (one per VM or node).")
    ] = "10000",
    racks_text: Annotated[
        str | None, typer.Option("--racks", help="--network *racks: racks (default: one per 40 nodes).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Time a large run: wall and CPU time, events per second, peak concurrent transfers, peak memory."""
    from skycache.sim import budget
    from skycache.sim.bench import DEFAULT_SCENARIO, TOPOLOGIES, run_bench
    from skycache.sim.scenario import load_scenario

    if network is not None:
        if vms_text is not None or nodes_text is not None or scenario is not None or trace_memory:
            raise InvalidInput(
                "--network times the network alone: it takes --flows and --racks, not "
                "--vms, --nodes, --scenario or --trace-memory"
            )
        if network not in TOPOLOGIES:
            raise InvalidInput(f"--network = {network!r}: not one of {', '.join(TOPOLOGIES)}")
        flows = parse_int(flows_text, what="--flows", minimum=1, maximum=budget.MAX_NODES, bound="node bound")
        racks = None
        if racks_text is not None:
            if not network.endswith("racks"):
                raise InvalidInput("--racks is for --network racks, mixed-racks, san-racks or peer-racks")
            racks = parse_int(racks_text, what="--racks", minimum=1, maximum=flows, bound="--flows")
        _network_bench(network, flows, racks, as_json)
        return
    vms = parse_int(
        vms_text or "1000000", what="--vms", minimum=1, maximum=budget.MAX_VMS, bound="the model's VM bound"
    )
    nodes = None
    if nodes_text is not None:
        nodes = parse_int(nodes_text, what="--nodes", minimum=1, maximum=budget.MAX_NODES, bound="node bound")
    sf = load_scenario(scenario or DEFAULT_SCENARIO)
    cal = _calibration(sf, calibration)
    r = run_bench(sf, cal, vms=vms, nodes=nodes, trace_memory=trace_memory)
    doc = {
        "nodes": r.nodes,
        "vms": r.vms,
        "wall_s": round(r.wall_s, 3),
        "cpu_s": round(r.cpu_s, 3),
        "events": r.events,
        "events_per_s": round(r.events_per_s),
        "flows": r.flows,
        "peak_concurrent_transfers": r.peak_concurrent,
        "peak_rss_MiB": round(r.peak_rss_bytes / 2**20, 1),
        "peak_traced_MiB": None if r.peak_traced_bytes is None else round(r.peak_traced_bytes / 2**20, 1),
        "loadavg_1min": round(_loadavg(), 2),
    }
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(
        f"{r.nodes} nodes, {r.vms} VM starts: wall {r.wall_s:.1f} s (CPU {r.cpu_s:.1f} s), {r.events} events "
        f"({r.events_per_s:,.0f}/s), {r.flows} flows, peak RSS {doc['peak_rss_MiB']} MiB"
        + (f", peak traced {doc['peak_traced_MiB']} MiB" if r.peak_traced_bytes is not None else "")
        + f", load average {doc['loadavg_1min']}"
    )
    if r.peak_concurrent < FEW_TRANSFERS:
        typer.echo(
            f"peak {r.peak_concurrent} concurrent transfers: this times SimPy's events and the VM model, "
            "not bandwidth sharing (for that: --network star|racks|mixed-racks|san-racks|peer-racks "
            "--flows N)"
        )
    else:
        typer.echo(f"peak {r.peak_concurrent} concurrent transfers")


def _network_bench(name: str, flows: int, racks: int | None, as_json: bool) -> None:
    from skycache.sim.bench import run_network_bench, topology

    topo = topology(name, flows, racks)
    r = run_network_bench(topo)
    doc = {
        "topology": r.topology,
        "flows": r.flows,
        "peak_concurrent_transfers": r.peak_concurrent,
        "wall_s": round(r.wall_s, 3),
        "cpu_s": round(r.cpu_s, 3),
        "events": r.events,
        "events_per_s": round(r.events_per_s),
        "recomputes": r.recomputes,
        "classes_rated": r.classes_rated,
        "makespan_s": r.makespan_s,
        "mean_transfer_s": r.mean_transfer_s,
        "max_transfer_s": r.max_transfer_s,
        "peak_rss_MiB": round(r.peak_rss_bytes / 2**20, 1),
        "loadavg_1min": round(_loadavg(), 2),
    }
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(
        f"{topo.describe()}: peak {r.peak_concurrent:,} concurrent transfers; wall {r.wall_s:.2f} s "
        f"(CPU {r.cpu_s:.2f} s), {r.events:,} events ({r.events_per_s:,.0f}/s); makespan "
        f"{r.makespan_s:.6g} s, transfer time mean {r.mean_transfer_s:.6g} s, max {r.max_transfer_s:.6g} s; "
        f"peak RSS {doc['peak_rss_MiB']} MiB, load average {doc['loadavg_1min']}"
    )


def _loadavg() -> float:
    import os

    return os.getloadavg()[0]
