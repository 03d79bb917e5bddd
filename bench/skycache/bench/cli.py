"""``skycache bench`` (run, compare, plots, report) and ``skycache suite`` (list, show, validate)."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skycache import files, validators
from skycache.bench import cli_net
from skycache.bench import validate as bench_validate
from skycache.errors import InvalidInput, SkycacheError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    # compare imports pandas, which takes seconds to load (a minute in the TCG lab) and every
    # `skycache` invocation registers these verbs: the verbs import it when they run.
    from skycache.bench import compare as comparing
    from skycache.bench import orchestrate, relative

    # Every `skycache` start that names `bench` registers these verbs: their implementation (the
    # scenario schema's pydantic, rich's tables and progress bars) is imported by the verbs that run.
    from skycache.bench import scenario as scenarios

app = typer.Typer(
    help="Run fio scenarios and the NAT benchmark, show and compare runs, draw plots and reports.",
    no_args_is_help=True,
)
app.command("nat")(cli_net.nat_bench)
# `skycache validate` checks fio suites, and other verbs name `suite validate` for one
validators.register(bench_validate.KIND)
suite_app = typer.Typer(help="Scenario suites (scenarios/*.toml).", no_args_is_help=True)

# What the lab's command server imports ahead for its warm forks (skycache.lab.command_server).
LAB_WARM_IMPORTS = ("skycache.bench.scenario",)
_consoles: dict[str, Console] = {}


def _console(stream: str = "stdout") -> Console:
    """rich's console for stdout or stderr, made on first use (rich is not imported before)."""
    if stream not in _consoles:
        from rich.console import Console

        tty = (sys.stdout if stream == "stdout" else sys.stderr).isatty()
        # Piped output (make demo | tee, CI logs) would wrap at 80 columns; tables need more.
        _consoles[stream] = Console(stderr=stream == "stderr", width=None if tty else 160)
    return _consoles[stream]


# -- progress ----------------------------------------------------------------------------------------


class RichReporter:
    """A progress bar with ETA; each finished condition is one line above it."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]bench"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=_console("stderr"),
            transient=False,
        )
        self.task = self.progress.add_task("starting", total=None)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def begin(self, total: int, *, at_most: bool = False) -> None:
        # "auto" repetitions: the cap; the bar ends early when the rule stops the rounds
        self.progress.update(self.task, total=total)

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def finished(self, text: str, ok: bool) -> None:
        from rich.markup import escape

        mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
        self.progress.console.print(f"  {mark} {escape(text)}")
        self.progress.advance(self.task)

    def note(self, text: str) -> None:
        self.progress.update(self.task, description=text)


# -- tables ------------------------------------------------------------------------------------------


def comparison_table(
    comps: list[comparing.Comparison], metrics: tuple[str, ...], title: str, relative_to: str | None = None
) -> Table:
    """``relative_to``: the speeds are ratios to that stack (``bench compare --relative-to``), shown
    as such rather than in the metric's unit."""
    from rich.markup import escape
    from rich.table import Table

    from skycache.bench import compare as comparing
    from skycache.bench import relative

    def shown(metric: str, value: float) -> str:
        if relative_to is not None and metric in relative.SPEED and not math.isnan(value):
            return f"{value:.3g}x {relative_to}"
        return comparing.fmt_metric(metric, value)

    t = Table(title=title, show_lines=False)
    right = ("geo mean", "baseline geo mean", "p (Holm)", "CV")
    for col in (
        "condition",
        "baseline",
        "dir",
        "metric",
        "geo mean",
        "baseline geo mean",
        "ratio [95% CI] (method)",
        "p (Holm)",
        "CV",
        "verdict",
    ):
        t.add_column(col, justify="right" if col in right else "left")
    for c in comps:
        if c.metric not in metrics:
            continue
        style = {"better": "green", "worse": "red"}.get(c.verdict, "dim")
        if c.ratio.unstable:
            style = "yellow"
        t.add_row(
            escape(c.condition),
            escape(c.baseline),
            c.direction,
            c.metric,
            shown(c.metric, c.mean),
            shown(c.metric, c.base_mean),
            escape(c.ratio.fmt()),
            comparing.fmt_p(c.ratio.p_adj),
            comparing.fmt_cvs(c.ratio),
            f"[{style}]{escape(c.verdict)}[/]",
        )
    return t


def _finite(x: object) -> object:
    """JSON has no NaN or infinity: those become null."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _comparisons_json(comps: list[comparing.Comparison]) -> list[dict[str, object]]:
    from skycache.bench import compare as comparing

    return [{k: _finite(v) for k, v in comparing.record(c).items()} for c in comps]


RUN_SUMMARY = "summary.json"  # bench run's closing summary, in the run directory

YesOpt = Annotated[
    bool, typer.Option("--yes", help="Accept a scenario of more fio runs than its max_runs (default 1000).")
]

# -- bench -------------------------------------------------------------------------------------------


def _plain_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # a log line: no markup, no wrapping


def _bench_line(text: str) -> None:
    """Progress of a long step (drawing, writing report.md): stderr, so stdout stays the result."""
    _plain_line(f"bench: {text}")


def _estimate_line(sc: scenarios.Scenario, prep: orchestrate.Prepared, out: Path) -> str:
    from skycache.bench import estimate

    root = prep.run.path.parent.parent if prep.run is not None else out
    overhead = estimate.measured_overhead(root, sc.name, estimate.runtimes(prep.planned))
    auto = sc.model.auto and prep.mode != "rerun-failed"
    first = prep.first_rounds(sc.model.min_repetitions) if auto else []
    return estimate.line(first or prep.planned, prep.planned, overhead, prep.warmup)


def _dry_run(sc: scenarios.Scenario, opts: orchestrate.RunOptions, as_json: bool) -> None:
    """The plan ``bench run`` would run (with --only, --resume, --rerun-failed applied); nothing is
    built or written."""
    from skycache.bench import orchestrate
    from skycache.runner import SystemRunner

    prep = orchestrate.Orchestrator(sc, opts, SystemRunner(), orchestrate.NullReporter()).prepare()
    est = _estimate_line(sc, prep, opts.results)
    rule = sc.model.repetitions_text
    if as_json:
        doc = {
            "mode": prep.mode,
            "run_dir": str(prep.run.path) if prep.run is not None else None,
            "repetitions": rule,
            "skipped": prep.skipped,
            "only": prep.selection.as_dict(),
            "estimate": est,
            "warmup": prep.warmup.condition.label if prep.warmup else None,
            "runs": [
                {"rep": p.rep, "attempt": p.attempt, "condition": p.condition.id, "label": p.condition.label}
                for p in prep.planned
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"dry run ({prep.mode}): {sc.name}, {rule}, {len(prep.planned)} fio runs")
    for c in prep.selection.baselines_added:
        typer.echo(f"  kept as a baseline: {c.label}")
    if prep.warmup is not None:
        typer.echo(f"  warm-up (untimed, not recorded) {prep.warmup.condition.label}")
    for p in prep.planned:
        again = f" (attempt {p.attempt})" if p.attempt > 1 else ""
        typer.echo(f"  rep {p.rep} {p.condition.label}{again}")
    if sc.model.auto and prep.mode != "rerun-failed":
        typer.echo(f"  (rounds after {sc.model.min_repetitions} run only until the stopping rule holds)")
    typer.echo(est)


@app.command("run")
def run_cmd(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (scenarios/*.toml).")],
    out: Annotated[
        Path, typer.Option("--out", help="Results root; the run goes to OUT/<scenario>/<run-id>/.")
    ] = Path("results"),
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help="lab (inside `skycache lab run`), host, or hosts (fio servers); default: the scenario's.",
        ),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Where image files live (default: lab scratch disk).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name of the run directory (must be new).")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Baseline for the closing table (default: the scenario's)."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only the conditions matching FACTOR=VALUE[,FACTOR=VALUE] (values may be globs; "
            "several --only are OR'd); their baselines are kept.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue this partial run directory (same scenario, same schedule)."),
    ] = None,
    rerun_failed: Annotated[
        Path | None,
        typer.Option("--rerun-failed", help="Re-run, in this run directory, the repetitions that failed."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the runs that would run, in order; build nothing.")
    ] = False,
    yes: YesOpt = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the closing summary as JSON (also kept as summary.json)."),
    ] = False,
    no_report: Annotated[
        bool,
        typer.Option(
            "--no-report",
            help="Skip the plots and report.md (later: `skycache bench plots RUN`, then "
            "`skycache bench report RUN`).",
        ),
    ] = False,
    host_draws: Annotated[
        bool, typer.Option("--host-draws", hidden=True, help="Internal: the host that booted the lab draws.")
    ] = False,
) -> None:
    """Build each stack, run fio on it, tear it down; conditions interleaved; then plots and report.md.

    A scenario for the lab run from outside it boots the lab first (3G memory, scratch disks of 8G and
    2G) and runs there; OUT must then be under the current directory. The plots and report.md are then
    drawn on the host once the lab is done (matplotlib under TCG takes minutes).

    Example: skycache bench run scenarios/quickstart.toml
    """
    from rich.markup import escape

    from skycache.bench import orchestrate
    from skycache.bench import scenario as scenarios
    from skycache.bench.progress import PlainReporter

    sc = scenarios.load(scenario)
    scenarios.check_runs(sc, yes=yes)
    files.check_output_dir(out, what="--out")  # before a lab boots or a stack is built
    place = where or sc.model.where
    if place not in ("lab", "host", "hosts"):
        raise InvalidInput(f"--where {place!r}: use lab, host or hosts")
    if place == "hosts" and not sc.model.hosts:
        raise InvalidInput(f"--where hosts: {scenario} lists no fio server hosts (hosts = [...])")
    existing = resume or rerun_failed
    if existing is not None and run_id is not None:
        raise InvalidInput("--run-id with --resume/--rerun-failed: the run keeps its directory")
    command = "skycache bench run " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else [str(scenario)])
    opts = orchestrate.RunOptions(
        results=out,
        where=place,
        workdir=workdir,
        run_id=run_id,
        command=command,
        only=tuple(only or ()),
        baseline=baseline,
        resume=resume,
        rerun_failed=rerun_failed,
    )
    if dry_run:
        _dry_run(sc, opts, as_json)
        return
    if place == "lab" and os.environ.get("SKYCACHE_IN_LAB") != "1":
        from skycache.bench import store
        from skycache.runner import SystemRunner

        # refused here, before a lab boots: a --resume of another scenario, an --only matching nothing
        orchestrate.Orchestrator(sc, opts, SystemRunner(), orchestrate.NullReporter()).prepare()
        # The run id is chosen here, so that the run directory the lab wrote can be found
        if run_id is None and existing is None:
            run_id = store.new_run_id()
        extra = [*(["--workdir", str(workdir)] if workdir else []), *(["--run-id", run_id] if run_id else [])]
        extra += ["--baseline", baseline] if baseline else []
        extra += [a for f in only or () for a in ("--only", f)]
        extra += ["--resume", str(resume)] if resume else []
        extra += ["--rerun-failed", str(rerun_failed)] if rerun_failed else []
        extra += ["--yes"] if yes else []
        extra += ["--json"] if as_json else []
        # the lab runs the fio runs only; the plots and report are drawn here, at the host's speed
        run_dir = existing or out / sc.name / str(run_id)
        earlier = _mtime(run_dir / RUN_SUMMARY)  # a resumed run's summary from before is not this one's
        code = _run_in_lab(
            scenario, out, [*extra, "--no-report", "--host-draws"], quiet=as_json, also=existing
        )
        finished = _lab_outcome(run_dir) if _mtime(run_dir / RUN_SUMMARY) != earlier else None
        if finished is None:  # the lab stopped before its closing summary: nothing to draw
            raise typer.Exit(code)
        _close(sc, finished, baseline, as_json=as_json, draw=not no_report)
        raise typer.Exit(code)
    _console("stderr").print(
        f"bench: {sc.name}: {len(sc.conditions)} conditions x {sc.model.repetitions_text} "
        f"= {sc.runs} fio runs{' at most' if sc.model.auto else ''}, {place}",
        markup=False,
    )

    def announce(prep: orchestrate.Prepared) -> None:
        for c in prep.selection.baselines_added:
            _plain_line(f"bench: --only: kept {c.label} as a baseline")
        if prep.run is not None:
            _plain_line(
                f"bench: {prep.mode} {prep.run.path}: {prep.skipped} repetitions recorded ok are skipped, "
                f"{len(prep.planned)} to run"
            )
        _plain_line("bench: " + _estimate_line(sc, prep, out))

    if sys.stderr.isatty():
        with RichReporter() as reporter:
            outcome = orchestrate.run_scenario(sc, opts, reporter=reporter, on_plan=announce)
    else:  # a log: a line per run with its ETA
        outcome = orchestrate.run_scenario(sc, opts, reporter=PlainReporter(_plain_line), on_plan=announce)
    finished = _Finished(
        outcome.run.path, outcome.run.run_id, outcome.ok, outcome.failed, tuple(outcome.errors)
    )
    for e in outcome.errors[:10]:
        _console("stderr").print(f"[red]failed[/] {escape(e)}")
    if host_draws:  # the host prints the closing table (and any "no condition succeeded") once
        _write_summary(_summary(sc, finished, outcome.run.manifest(), baseline, [], [], None))
        _plain_line(f"bench: fio runs done ({finished.ok} ok, {finished.failed} failed); the host draws")
        return
    _close(sc, finished, baseline, as_json=as_json, draw=not no_report)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@dataclass(frozen=True)
class _Finished:
    """What the closing summary needs of a run whose fio runs are over."""

    run_dir: Path
    run_id: str
    ok: int
    failed: int
    errors: tuple[str, ...]


def _lab_outcome(run_dir: Path) -> _Finished | None:
    """The outcome the lab left in RUN_DIR's summary.json, or None when it wrote none (it stopped
    before its runs were over)."""
    path = run_dir / RUN_SUMMARY
    try:
        doc = json.loads(files.read_text(path, what="run summary"))
        return _Finished(
            run_dir, str(doc["run_id"]), int(doc["ok"]), int(doc["failed"]), tuple(map(str, doc["errors"]))
        )
    except (InvalidInput, KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


def _close(
    sc: scenarios.Scenario, finished: _Finished, baseline: str | None, *, as_json: bool, draw: bool
) -> None:
    """Plots and report.md (unless ``draw`` is off), summary.json, then the closing table or JSON."""
    from skycache.bench import estimate, report, store

    run_dir = finished.run_dir
    comps: list[comparing.Comparison] = []
    pngs: list[Path] = []
    report_path: Path | None = None
    if draw:
        started = time.monotonic()
        _plain_line(f"bench: drawing plots and report.md of {run_dir}")
        comps, pngs, report_path = report.finish(run_dir, baseline, _bench_line)
        _plain_line(f"bench: plots and report.md done in {estimate.fmt_duration(time.monotonic() - started)}")
        for p in pngs:
            _console("stderr").print(f"plot: {p}")
        _console("stderr").print(f"report: {report_path}")
    manifest = store.RunDir(run_dir).manifest()
    closing = _summary(sc, finished, manifest, baseline, comps, pngs, report_path)
    _write_summary(closing)
    if as_json:
        typer.echo(json.dumps(closing, indent=2))
    else:
        if draw:
            title = f"{sc.name} run {finished.run_id}: ratio to baseline ({closing['baseline']})"
            _console().print(comparison_table(comps, ("iops", "lat_mean_ns"), title))
        else:
            _console().print(
                f"plots and report.md not drawn (--no-report): skycache bench plots {run_dir}; "
                f"skycache bench report {run_dir}",
                markup=False,
                soft_wrap=True,
            )
        auto_line = report.auto_line(manifest)
        if auto_line:
            _console().print(auto_line, markup=False, soft_wrap=True)
        _console().print(f"run directory: {run_dir}  ({finished.ok} ok, {finished.failed} failed)")
    if finished.ok == 0 and not manifest.get("ok"):
        raise SkycacheError(f"no condition of {sc.name} succeeded (see {run_dir}/conditions.jsonl)")


def _summary(
    sc: scenarios.Scenario,
    finished: _Finished,
    manifest: dict[str, Any],
    baseline: str | None,
    comps: list[comparing.Comparison],
    pngs: list[Path],
    report_path: Path | None,
) -> dict[str, object]:
    """bench run's closing summary (summary.json, --json)."""
    base = baseline or sc.model.baseline or "default"
    closing: dict[str, object] = {
        "run_dir": str(finished.run_dir),
        "run_id": finished.run_id,
        "scenario": sc.name,
        "ok": finished.ok,
        "failed": finished.failed,
        "errors": list(finished.errors),
        "baseline": base,
        "repetitions": manifest.get("repetitions"),
        "plots": [str(p) for p in pngs],
        "report": str(report_path) if report_path is not None else None,
        "comparisons": _comparisons_json(comps),
    }
    for key in ("auto_repetitions", "only", "resumed"):
        if key in manifest:
            closing[key] = manifest[key]
    return closing


def _write_summary(closing: dict[str, object]) -> None:
    # derived, like report.md: a resumed run's summary replaces the one before (whole or not at all)
    run_dir = Path(str(closing["run_dir"]))
    tmp = run_dir / (RUN_SUMMARY + ".tmp")
    tmp.write_text(json.dumps(closing, indent=2) + "\n")
    tmp.replace(run_dir / RUN_SUMMARY)


def _run_in_lab(
    scenario: Path, out: Path, extra: list[str], *, quiet: bool = False, also: Path | None = None
) -> int:
    """Boot the lab (like `skycache lab run --memory 3G --disk 8G --disk 2G --`) and run this same
    command inside it; the results land in OUT, which must be under the current directory (the only
    directory the guest may write)."""
    from skycache.lab import accel, kernel
    from skycache.lab.vm import LabSpec, boot
    from skycache.runner import SystemRunner
    from skycache.units import parse_positive_size

    cwd = Path.cwd()
    if not out.resolve().is_relative_to(cwd):
        raise InvalidInput(f"--out {out}: must be under the current directory to run in the lab")
    if also is not None and not also.resolve().is_relative_to(cwd):
        raise InvalidInput(f"{also}: the run directory must be under the current directory to run in the lab")
    runner = SystemRunner()
    lab_kernel = kernel.require()
    choice = accel.choose("auto", runner, lab_kernel)
    spec = LabSpec(
        memory="3G",
        accel=choice.accel,
        disk_sizes=(parse_positive_size("8G"), parse_positive_size("2G")),
        rwdirs=(cwd,),
        timeout_s=4 * 3600,
        cwd=cwd,
    )
    argv = [sys.executable, "-m", "skycache.cli.main", "bench", "run", str(scenario), "--out", str(out)]
    argv += ["--where", "lab", *extra]
    _console("stderr").print(
        f"bench: booting the lab ({lab_kernel.version}, {choice.accel}) to run {scenario}"
    )
    # --json: stdout is the JSON alone, so the lab's lines go to stderr
    stream = sys.stderr if quiet else sys.stdout
    return boot(runner, lab_kernel, spec, argv, on_line=lambda line: print(line, file=stream, flush=True))


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or directories holding runs).")],
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Baseline condition (label or id) or FACTOR=VALUE; default: the first run is the baseline "
            "of the others, or the scenario's baseline for one run.",
        ),
    ] = None,
    fail_on_regression: Annotated[
        float | None,
        typer.Option(
            "--fail-on-regression",
            help="Exit 3 when a condition is significantly worse than the baseline by more than PCT %.",
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="Metrics to show and, with --fail-on-regression, to gate (repeatable); default: IOPS, "
            "latency and the cache metrics a run has, gating iops, bw_bytes, lat_mean_ns, "
            "repo_read_per_byte.",
        ),
    ] = None,
    allow_different: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-different",
            help="Compare runs although these manifest facts differ (or are not recorded): "
            "acceleration, kernel, fio, stacks, workloads, shaping (repeatable or comma-separated).",
        ),
    ] = None,
    relative_to: Annotated[
        str | None,
        typer.Option(
            "--relative-to",
            metavar="STACK",
            help="Compare speeds relative to STACK: each condition's IOPS, bandwidth and latencies are "
            "divided by those of its counterpart on STACK in the same round of the same run, so that "
            "a machine's speed, which moves both, cancels (the CI gate: --relative-to lvm-local).",
        ),
    ] = None,
    max_reference_drift: Annotated[
        float,
        typer.Option(
            "--max-reference-drift",
            metavar="FACTOR",
            help="With --relative-to: exit 2 (not comparable) when the reference stack's own IOPS moved "
            "by more than FACTOR either way from the first run's; under heavy contention the ratios "
            "stop cancelling the machine's speed.",
        ),
    ] = 4.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Ratios of geometric means to a baseline: Welch t 95% intervals on log values, verdicts from
    Holm-adjusted p per metric, "unstable (CV NN %)" when repetitions disagree beyond 50 %.

    Runs are compared only when their manifests agree on acceleration, kernel, fio, stacks, workloads
    and shaping (else exit 2, naming the difference). With --fail-on-regression (the gate) it also
    fails when there is nothing to compare, and prints the smallest change it could have detected.
    """
    from skycache.bench import comparable, gate, natresults, store, tidy
    from skycache.bench import compare as comparing

    if not (math.isfinite(max_reference_drift) and max_reference_drift > 1):
        raise InvalidInput(f"--max-reference-drift {max_reference_drift:g}: use a factor above 1")
    if fail_on_regression is not None and not 0 <= fail_on_regression < 1000:
        raise InvalidInput(
            f"--fail-on-regression {fail_on_regression:g}: use a percentage between 0 and 1000"
        )
    allowed = comparable.parse_allowed(allow_different or [])
    comparable.check_distinct(runs)
    df = comparable.identify_runs(tidy.load(runs))  # one run per directory, whatever its id
    run_dirs = list(dict.fromkeys(df["run_dir"]))
    manifests = {d: store.read_manifest(Path(d)) for d in run_dirs}  # format checked here
    nat = _nat_runs(manifests)
    if nat:
        if relative_to is not None:
            raise InvalidInput("--relative-to: a stack of fio runs; NAT benchmark runs have none")
        df = natresults.as_compared(df)
    fio_default = ("iops", "lat_mean_ns", "lat_p99_ns", *comparing.CACHE_METRICS)
    default = tuple(natresults.METRICS) if nat else fio_default
    metrics = tuple(metric or default)
    for m in metrics:
        if m not in comparing.METRICS:
            raise InvalidInput(f"--metric {m!r}: use one of {', '.join(comparing.METRICS)}")
    gated = tuple(metric) if metric else natresults.GATED if nat else comparing.GATED
    if fail_on_regression is not None:
        gate.check_metrics(gated)
    labels = comparable.run_labels(df)
    differences = comparable.check([(labels[d], Path(d), manifests[d]) for d in run_dirs], allowed)
    run_ids = [labels[d] for d in run_dirs]
    if baseline is None and len(run_ids) == 1:
        baseline = natresults.BASELINE if nat else manifests[run_dirs[0]].get("baseline")
    comps = comparing.compare(df, baseline, relative_to=relative_to)
    drifts = _reference_drift(df, relative_to, run_ids[0], run_dirs, labels) if relative_to else []
    gating = fail_on_regression is not None
    if gating:
        gate.check_gated(comps, gated)
    regressed = (
        comparing.regressions(comps, fail_on_regression, gated) if fail_on_regression is not None else []
    )
    base_run = run_ids[0]
    seen = gate.detectable(df, comps, base_run, gate.ALPHA, gated, relative_to=relative_to) if gating else []
    if as_json:
        out: dict[str, object] = {
            "relative_to": relative_to,
            "comparisons": _comparisons_json(comps),
            "regressions": _comparisons_json(regressed),
            "runs": [{"run": labels[d], "run_dir": d} for d in run_dirs],
            "differences": [d.as_dict() for d in differences],
            "reference_drift": [x.as_dict() for x in drifts],
            "max_reference_drift": max_reference_drift if relative_to else None,
        }
        if gating:
            out["detectable"] = {
                "method": gate.METHOD,
                "alpha": gate.ALPHA,
                "changes": [x.as_dict() for x in seen],
            }
        typer.echo(json.dumps(out, indent=2))
    else:
        for d in differences:
            _console().print(f"note: allowed difference: {d.line()}", markup=False)
        title = f"ratio to baseline ({baseline or run_ids[0]})"
        if relative_to is not None:
            title += f", of speeds relative to {relative_to} in the same round"
        _console().print(comparison_table(comps, metrics, title, relative_to))
        for drift in drifts:
            _console().print(f"note: {drift.line()}", markup=False, soft_wrap=True)
    too_far = [drift for drift in drifts if drift.beyond(max_reference_drift)]
    if too_far:
        raise InvalidInput(
            f"not comparable: {too_far[0].line()}, beyond --max-reference-drift {max_reference_drift:g}; the "
            f"machine was too disturbed for the ratios to cancel its speed (rerun on a quieter machine)"
        )
    if gating and not as_json:
        _console().print(
            f"gate: smallest worsening detectable with the baseline's noise ({gate.METHOD}, "
            f"alpha {gate.ALPHA:g}, 50% power), flagged only beyond {fail_on_regression:g}% too:",
            markup=False,
            soft_wrap=True,
        )
        for x in seen:
            _console().print(f"  {x.fmt()}", markup=False, soft_wrap=True)
    if regressed:
        speed_of = f" relative to {relative_to}" if relative_to is not None else ""
        for c in regressed:
            _console("stderr").print(
                f"regression: {c.condition} [{c.direction}] {c.metric}{speed_of} {c.ratio.fmt()} vs "
                f"{c.baseline} (threshold {fail_on_regression:g}%)",
                markup=False,
            )
        raise typer.Exit(3)
    if fail_on_regression is not None and not as_json:
        _console().print(f"no regression beyond {fail_on_regression:g}% (Holm-adjusted p < 0.05)")


def _nat_runs(manifests: dict[str, dict[str, Any]]) -> bool:
    """True when every run is a NAT benchmark run, False when none is; refused when mixed."""
    from skycache.bench import natresults

    kinds = {d: natresults.is_nat(m) for d, m in manifests.items()}
    if len(set(kinds.values())) > 1:
        nat_dir = next(d for d, k in kinds.items() if k)
        fio_dir = next(d for d, k in kinds.items() if not k)
        raise InvalidInput(f"not comparable: {nat_dir} is a NAT benchmark run and {fio_dir} a fio run")
    return any(kinds.values())


def _reference_drift(
    df: pd.DataFrame, stack: str, base_run: str, run_dirs: list[str], labels: dict[str, str]
) -> list[relative.Drift]:
    """How far each run's reference stack moved from the first run's, with each run's host load."""
    from skycache.bench import compare as comparing
    from skycache.bench import relative, store

    loads = {labels[d]: relative.max_load1(store.RunDir(Path(d)).latest_records()) for d in run_dirs}
    return relative.reference_drift(comparing.per_rep(df), stack, base_run, loads)


def _run_dir(run: Path) -> None:
    from skycache.bench import store

    if not (run / store.TIDY).is_file():
        raise InvalidInput(f"{run}: not a run directory (no {store.TIDY})")


@app.command("plots")
def plots_cmd(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    baseline: Annotated[
        str | None, typer.Option("--baseline", hidden=True, help="Was report.md's: see `bench report`.")
    ] = None,
) -> None:
    """(Re)draw a run's plots (RUN/plots/*.png) from its tidy table; prints the PNG paths.

    report.md is left as it is: `skycache bench report RUN` (re)writes it.
    """
    from skycache.bench import report

    _run_dir(run)
    if baseline is not None:  # the form from before `bench report` existed still runs, and says so
        _bench_line(f"--baseline is report.md's: skycache bench report {run} --baseline {baseline}")
    pngs = report.draw_plots(run, _bench_line)
    if as_json:
        typer.echo(json.dumps({"plots": [str(p) for p in pngs]}, indent=2))
        return
    for p in pngs:
        typer.echo(str(p))


@app.command("report")
def report_cmd(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Baseline condition (default: the run's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """(Re)write a run's report.md from its tidy table, linking the plots RUN/plots/ holds; prints
    its path. Draws no plots (`skycache bench plots RUN` does)."""
    from skycache.bench import report

    _run_dir(run)
    comps, path = report.write_report(run, baseline, _bench_line)
    if as_json:
        typer.echo(json.dumps({"report": str(path), "comparisons": _comparisons_json(comps)}, indent=2))
        return
    typer.echo(str(path))


SHOWN_PERCENTILES = (("clat", "p50"), ("clat", "p99"), ("clat", "p99_9"), ("lat", "p99"), ("lat", "p99_9"))


def _records(df: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as JSON objects: NaN as null, numpy numbers as JSON numbers."""
    rows: list[dict[str, object]] = json.loads(df.to_json(orient="records"))
    return rows


def _us(ns: float) -> str:
    return "-" if math.isnan(ns) else f"{ns / 1000.0:.0f}"


def _ci(value: float, lo: float, hi: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isnan(lo):
        return f"{value:.0f}"
    return f"{value:.0f} [{lo:.0f}, {hi:.0f}]"


@app.command("show")
def show_cmd(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per condition: geometric mean IOPS and latency with 95% intervals, the CV of the repetitions,
    and latency percentiles of all the repetitions' I/Os (fio's histograms merged; clat = completion,
    lat = total latency)."""
    from rich.markup import escape
    from rich.table import Table

    from skycache.bench import latency, natresults, report, store, tidy

    manifest = store.read_manifest(run) if run.is_dir() else {}  # a damaged one is refused here
    if natresults.is_nat(manifest):
        _show_nat(run, tidy.load(run), as_json)
        return
    s = latency.condition_summary(tidy.load(run))
    if as_json:
        typer.echo(json.dumps(_records(s), indent=2))
        return
    t = Table(title=str(run))
    cols = ["condition", "dir", "n", "IOPS geo mean [95% CI]", "IOPS CV", "mean lat us [95% CI]"]
    cols += ["clat p50 us", "clat p99 us", "clat p99.9 us", "lat p99 us", "lat p99.9 us"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("condition", "dir") else "right")
    methods: set[str] = set()
    for r in s.to_dict(orient="records"):
        methods |= {str(r.get(f"{kind}_from") or "") for kind in latency.KINDS}
        pct = [_us(float(r.get(latency.pct_column(k, n), math.nan))) for k, n in SHOWN_PERCENTILES]
        t.add_row(
            escape(str(r["condition"])),
            str(r["direction"]),
            str(r["n"]),
            _ci(r["iops"], r["iops_lo"], r["iops_hi"]),
            report.fmt_cv(float(r.get("iops_cv", math.nan)), bool(r.get("unstable", False))),
            _ci(r["lat_mean_us"], r["lat_lo_us"], r["lat_hi_us"]),
            *pct,
        )
    _console().print(t)
    auto = report.auto_line(store.read_manifest(run)) if run.is_dir() else ""
    if auto:
        _console().print(auto, markup=False, soft_wrap=True)
    methods.discard("")
    _console().print(f"percentiles: {', '.join(sorted(methods)) or 'none recorded'}", markup=False)


def _show_nat(run: Path, df: pd.DataFrame, as_json: bool) -> None:
    """A NAT benchmark run: NAT against routed per metric, as `bench nat` printed it."""
    from skycache.bench import natbench

    rows = natbench.summarize(df)
    if as_json:
        typer.echo(json.dumps({"run_dir": str(run), "summary": natbench.summary_json(rows)}, indent=2))
        return
    reps = int(df["repetition"].nunique()) if "repetition" in df.columns else 0
    _console().print(f"{run} (NAT benchmark)", markup=False)
    _console().print(natbench.format_table(rows, reps), markup=False, soft_wrap=True)


# -- suite -------------------------------------------------------------------------------------------


def _scenario_files(paths: list[Path] | None) -> list[Path]:
    out: list[Path] = []
    for p in paths or [Path("scenarios")]:
        if p.is_dir():
            # sim-*.toml are the simulator's scenarios (skycache sim), not fio suites
            out += sorted(f for f in p.glob("*.toml") if not f.name.startswith("sim-"))
        else:
            out.append(p)
    if not out:
        raise InvalidInput(f"no scenario files in {', '.join(str(p) for p in paths or [Path('scenarios')])}")
    return out


@suite_app.command("list")
def suite_list(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Scenario files or directories (default: scenarios/).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List scenarios with their size (conditions x repetitions) and where they run."""
    from rich.table import Table

    from skycache.bench import scenario as scenarios

    rows = []
    for f in _scenario_files(paths):
        try:
            sc = scenarios.load(f)
            rows.append(
                {
                    "file": str(f),
                    "name": sc.name,
                    "where": sc.model.where,
                    "conditions": len(sc.conditions),
                    "repetitions": sc.model.repetitions,
                    "runs": sc.runs,
                    "valid": True,
                    "error": "",
                }
            )
        except InvalidInput as exc:
            rows.append({"file": str(f), "name": "", "valid": False, "error": str(exc)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table()
    for col in ("file", "name", "where", "conditions", "reps", "fio runs", "status"):
        t.add_column(col)
    for r in rows:
        if r["valid"]:
            t.add_row(
                str(r["file"]), str(r["name"]), str(r["where"]), str(r["conditions"]), str(r["repetitions"]),
                str(r["runs"]), "[green]valid[/]",
            )  # fmt: skip
        else:
            t.add_row(str(r["file"]), "", "", "", "", "", f"[red]{r['error']}[/]")
    _console().print(t)


@suite_app.command("show")
def suite_show(
    scenario: Annotated[Path, typer.Argument(help="Scenario file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the stacks and the expanded conditions of a scenario (nothing is built)."""
    from skycache.bench import scenario as scenarios

    sc = scenarios.load(scenario)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "name": sc.name,
                    "where": sc.model.where,
                    "repetitions": sc.model.repetitions,
                    "max_repetitions": sc.model.rounds,
                    "runs": sc.runs,
                    "stacks": {s.name: s.describe() for s in sc.model.stacks},
                    "conditions": [
                        {"id": c.id, "label": c.label, "factors": dict(c.factors)} for c in sc.conditions
                    ],
                },
                indent=2,
            )
        )
        return
    _console().print(f"[bold]{sc.name}[/]: {sc.model.description.strip()}")
    _console().print(
        f"where {sc.model.where}, shaping {sc.model.shaping}, {sc.model.repetitions_text}", markup=False
    )
    for s in sc.model.stacks:
        _console().print(f"  stack {s.name}: {s.describe()}")
    for c in sc.conditions:
        w = c.workload
        what = (
            f"job file {w.job_file}"
            if w.job_file
            else f"{w.rw} bs={w.bs} iodepth={w.iodepth} numjobs={w.numjobs}"
        )
        _console().print(f"  condition {c.label}: {what}, {c.cache_state}")
    most = " at most" if sc.model.auto else ""
    _console().print(f"{len(sc.conditions)} conditions x {sc.model.rounds} = {sc.runs} fio runs{most}")


@suite_app.command("validate")
def suite_validate(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files or directories.")],
    yes: YesOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate scenario files; one line per file; exits non-zero if any is invalid. With
    repetitions = "auto" the fio runs (and the max_runs check) count max_repetitions."""
    from skycache.bench import scenario as scenarios

    bad = 0
    rows: list[dict[str, object]] = []
    for f in _scenario_files(paths):
        try:
            sc = scenarios.load(f)
            scenarios.check_runs(sc, yes=yes)
            rows.append({"file": str(f), "valid": True, "conditions": len(sc.conditions), "runs": sc.runs})
            if not as_json:
                most = " at most" if sc.model.auto else ""
                typer.echo(f"{f}: ok ({len(sc.conditions)} conditions, {sc.runs} fio runs{most})")
        except InvalidInput as exc:
            rows.append({"file": str(f), "valid": False, "error": str(exc)})
            typer.echo(f"skycache: error: {exc}", err=True)
            bad += 1
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    if bad:
        raise typer.Exit(2)
