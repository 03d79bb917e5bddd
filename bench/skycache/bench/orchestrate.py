"""Run a scenario: build each stack, run fio, tear it down; interleaved, recorded, never aborted by
one failing condition.

Order: repetitions are rounds; each round runs every condition once, in an order shuffled with the
scenario's seed (recorded), so slow drifts of the machine spread over all conditions instead of
biasing the ones that ran last. Each condition x repetition builds its stack fresh (empty caches =
cold; the page cache is dropped too), runs the precondition workloads and, for ``warm``, one untimed
pass of the measured workload, then the measured fio run. A failure anywhere in that is recorded as a
failed condition (with the reason) and the run goes on with the next one. Before the first measured
run, one untimed warm-up run of the first planned condition (``_warm_up``: the first fio run after a
boot is slow).

What runs is planned first (:mod:`skycache.bench.plan`: rounds, ``--only``, what a resumed or re-run
run directory still needs), so that a dry run shows that same plan. With ``repetitions = "auto"``
the rule of :mod:`skycache.bench.autoreps` is checked after each round from ``min_repetitions`` on,
and the rounds stop when it holds.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from skycache import files
from skycache.bench import (
    autoreps,
    cachemetrics,
    comparable,
    fiojob,
    fioparse,
    plan,
    provenance,
    remote,
    stacks,
    store,
    tidy,
)
from skycache.bench.scenario import Condition, Scenario, Workload
from skycache.errors import InvalidInput, SkycacheError
from skycache.runner import CommandError, Runner, SystemRunner

log = logging.getLogger("skycache.bench.orchestrate")


class Reporter(Protocol):
    def begin(self, total: int, *, at_most: bool = False) -> None: ...
    def step(self, text: str) -> None: ...
    def finished(self, text: str, ok: bool) -> None: ...
    def note(self, text: str) -> None: ...


class NullReporter:
    def begin(self, total: int, *, at_most: bool = False) -> None:
        pass

    def step(self, text: str) -> None:
        pass

    def finished(self, text: str, ok: bool) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class RunOptions:
    results: Path = Path("results")
    where: str = "lab"
    workdir: Path | None = None  # where images live (default: the lab's scratch disk or /var/tmp)
    run_id: str | None = None
    command: str = ""
    hosts: tuple[str, ...] = ()  # where = "hosts": the fio servers (default: the scenario's list)
    only: tuple[str, ...] = ()  # --only FACTOR=GLOB[,...] filters (OR'd); the baselines are kept
    baseline: str | None = None  # --baseline (default: the scenario's): what --only and "auto" pair with
    resume: Path | None = None  # continue this run directory
    rerun_failed: Path | None = (
        None  # re-run, in this run directory, the repetitions whose last record failed
    )


@dataclass(frozen=True)
class Prepared:
    """The plan of a run before anything is built: what ``--dry-run`` prints and ``run`` runs."""

    mode: plan.Mode
    selection: plan.Selection
    rounds: list[list[plan.Planned]]  # per round (index 0 = repetition 1), the runs to do
    run: store.RunDir | None = None  # the existing run directory (resume, rerun-failed)
    skipped: int = 0  # repetitions of the schedule already recorded (resume)

    @property
    def planned(self) -> list[plan.Planned]:
        return [p for r in self.rounds for p in r]

    @property
    def warmup(self) -> plan.Planned | None:
        """The run the untimed warm-up repeats before the first measured one (``_warm_up``)."""
        planned = self.planned
        return planned[0] if planned else None

    def first_rounds(self, n: int) -> list[plan.Planned]:
        return [p for r in self.rounds[:n] for p in r]


@dataclass
class RunOutcome:
    run: store.RunDir
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# -- environment --------------------------------------------------------------------------------


def environment(runner: Runner, where: str) -> dict[str, Any]:
    return provenance.environment(runner, where)


def shaping_info(name: str) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name, "detail": "" if name != "none" else "(no tc shaping)"}
    if name == "none":
        return info
    try:
        from skycache.net import shaping  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        info["detail"] = "(skycache.net.shaping not available)"
        return info
    prof = shaping.PROFILES.get(name)
    if prof is not None:
        info.update(rate_bps=prof.rate_bps, delay_ms=prof.delay_ms, loss_pct=prof.loss_pct)
        rate = f"{prof.rate_bps / 1e6:g} Mbit/s" if prof.rate_bps else "unlimited rate"
        info["detail"] = f"(tc on the iSCSI port: {rate}, {prof.delay_ms:g} ms one-way delay)"
    return info


# -- one fio invocation -------------------------------------------------------------------------


def run_fio(runner: Runner, job_path: Path, json_path: Path, timeout_s: float) -> fioparse.FioResult:
    """Run one job file; fio's JSON goes to ``json_path``. Errors (exit code, job error, unparsable
    output) raise SkycacheError naming fio's own reason."""
    return run_fio_argv(runner, fiojob.fio_argv(job_path, json_path), json_path, timeout_s)


def run_fio_argv(runner: Runner, argv: list[str], json_path: Path, timeout_s: float) -> fioparse.FioResult:
    """Run fio (local or as the client of fio servers) with its JSON going to ``json_path``."""
    failure: CommandError | None = None
    try:
        done = runner.run(argv, timeout_s=timeout_s)
        extra = done.stdout
    except CommandError as exc:
        failure, extra = exc, exc.stdout + "\n" + exc.stderr
    text = json_path.read_text() if json_path.is_file() else ""
    try:
        result = fioparse.parse(text + "\n" + extra if text else extra)
    except fioparse.FioParseError:
        if failure is not None:
            raise failure from None
        raise
    result.check()
    if failure is not None:
        raise failure
    return result


def _timeout(w: Workload) -> float:
    return w.runtime_s + w.ramp_s + 300.0 if w.time_based else max(3600.0, w.runtime_s + 300.0)


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Site:
    """Where stacks are built: this machine (``host`` None: lab or host mode), or one fio server of a
    ``where = "hosts"`` run with the runner that reaches it."""

    runner: Runner
    host: remote.Host | None = None
    ws: stacks.Workspace | None = None


class Orchestrator:
    def __init__(self, scenario: Scenario, options: RunOptions, runner: Runner, reporter: Reporter) -> None:
        self.scenario = scenario
        self.opts = options
        self.runner = runner
        self.reporter = reporter
        self.t0 = time.time()
        self.sites = [Site(runner)]
        if options.where == "hosts":
            entries = options.hosts or tuple(scenario.model.hosts)
            hosts = [remote.parse_host(e) for e in entries]
            ssh = scenario.ssh
            self.sites = [Site(remote.runner_for(h, runner, ssh.settings(h.name)), h) for h in hosts]

    @property
    def client_mode(self) -> bool:
        return self.sites[0].host is not None

    def _stem(self, stem: str, site: Site) -> str:
        # One job file per fio server (the device path is the one built there); a single server
        # keeps host mode's names.
        return stem if len(self.sites) == 1 or site.host is None else f"{stem}.{site.host.safe}"

    def _fio(self, jobs: list[Path], json_path: Path, timeout_s: float) -> fioparse.FioResult:
        if not self.client_mode:
            return run_fio(self.runner, jobs[0], json_path, timeout_s)
        pairs = [(site.host, job) for site, job in zip(self.sites, jobs, strict=True) if site.host]
        return run_fio_argv(self.runner, remote.client_argv(pairs, json_path), json_path, timeout_s)

    def schedule(self) -> list[tuple[int, Condition]]:
        """(repetition, condition) in run order: rounds of all conditions, each round shuffled."""
        rounds = plan.rounds(self.scenario, self.scenario.conditions)
        return [(rep, c) for rep, conds in enumerate(rounds, 1) for c in conds]

    @property
    def baseline(self) -> str | None:
        return self.opts.baseline or self.scenario.model.baseline

    def prepare(self) -> Prepared:
        """The plan; for --resume and --rerun-failed the run directory is checked first (same
        scenario, something left to do): a refusal changes nothing."""
        s = self.scenario
        if self.opts.resume is not None and self.opts.rerun_failed is not None:
            raise InvalidInput("--resume and --rerun-failed: give one of them")
        existing = self.opts.resume or self.opts.rerun_failed
        if existing is None:
            selection = plan.select(s, self.opts.only, self.baseline)
            return Prepared("new", selection, plan.pending(s, selection.conditions, "new"))
        mode: plan.Mode = "resume" if self.opts.resume is not None else "rerun-failed"
        flag = f"--{mode}"
        if self.opts.only:
            raise InvalidInput(f"--only with {flag}: the run keeps the conditions it was started with")
        run, manifest = _open_run(existing, s, flag)
        ids = manifest.get("conditions")
        chosen = [c for c in s.conditions if isinstance(ids, list) and c.id in ids] or list(s.conditions)
        recorded = manifest.get("only")
        only: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        selection = plan.Selection(
            tuple(chosen),
            tuple(str(f) for f in only.get("filters", [])),
            tuple(c for c in s.conditions if c.id in only.get("baselines_added", [])),
        )
        records = run.latest_records()
        if mode == "resume" and manifest.get("status") == "complete":
            raise InvalidInput(f"{flag} {existing}: the run is complete (nothing to resume)")
        rounds = plan.pending(s, selection.conditions, mode, records, run)
        todo = sum(len(r) for r in rounds)
        if todo == 0:
            what = "no failed repetition to re-run" if mode == "rerun-failed" else "nothing left to run"
            raise InvalidInput(f"{flag} {existing}: {what}")
        skipped = sum(1 for r in records if r.get("status") == "ok") if mode == "resume" else 0
        return Prepared(mode, selection, rounds, run, skipped)

    def _job_text(self, w: Workload) -> str | None:
        if w.job_file is None:
            return None
        # a user's file like the scenario itself: the one reader refuses FIFOs, devices, binary
        return files.read_text(self.scenario.path.parent / w.job_file, what="fio job file")

    def _untimed(
        self, run: store.RunDir, rep: int, target: str, w: Workload, devices: list[str], what: str
    ) -> None:
        text = self._job_text(w)
        if what == "warmup" and w.job_file is None and w.time_based:
            # One pass = the measured job once over its whole working set (each block once, in random
            # order), not "for runtime seconds": how warm the caches get must not depend on how fast
            # the machine happens to be.
            w = w.model_copy(update={"time_based": False, "runtime_s": max(600.0, w.runtime_s)})
        sh = fiojob.shape(w, text)
        stem = f"{what}-{sh.stem}"
        jobs = []
        for site, device in zip(self.sites, devices, strict=True):
            job = fiojob.render(
                w, device, log_dir=None, header=f"{what} (untimed)", job_file_text=text, untimed=True
            )
            path = run.job_path(rep, target, sh.bs, self._stem(stem, site), untimed=True)
            jobs.append(run.write_new(path, job))
        json_path = run.job_path(rep, target, sh.bs, stem, untimed=True).with_suffix(".json")
        self._fio(jobs, json_path, _timeout(w))

    def _warm_up(self, run: store.RunDir, cond: Condition, manifest: dict[str, Any]) -> None:
        """One run of the first planned condition before the first measured one, exactly as measured
        (build, samplers, fio, flush, teardown) but into ``untimed/session-warmup-N/`` and recorded
        only in the manifest (``warmups``), never in the results. Why: in the lab the first measured
        run after boot ran at 0.25-0.45 of that condition's later repetitions, three quickstart runs
        out of three, while no other condition's first repetition was slow; the first condition of
        the schedule is always the same one (the seed), so that was a bias, not noise. A warm-up of
        fio alone (no samplers) did not remove it."""
        done = manifest.setdefault("warmups", [])
        name = f"session-warmup-{len(done) + 1}"
        entry: dict[str, Any] = {"condition": cond.label, "at": _iso(time.time()), "dir": f"untimed/{name}"}
        done.append(entry)
        started = time.monotonic()
        self.reporter.note(f"warm-up (untimed, not recorded): {cond.label}")
        record = self._one(store.RunDir(run.path / "untimed" / name), 0, cond)
        entry.update(status=record["status"], s=round(time.monotonic() - started, 2))
        if record.get("error"):  # a failed warm-up costs its condition nothing
            entry["error"] = record["error"]
            log.warning("warm-up on %s failed: %s", cond.label, record["error"])
        run.write_manifest(manifest)
        if record.get("teardown_errors"):  # what the next run builds would collide with what this left
            raise SkycacheError(f"warm-up teardown on {cond.label}: {record['teardown_errors'][0]}")

    def _one(self, run: store.RunDir, rep: int, cond: Condition) -> dict[str, Any]:
        s = self.scenario
        stack = cond.stack
        target = store.target_name(cond.label)
        record: dict[str, Any] = {
            "scenario": s.name,
            "run_id": run.run_id,
            "condition": cond.id,
            "label": cond.label,
            "rep": rep,
            "phase": "measure",
            "status": "failed",
            "error": "",
            "factors": {k: v for k, v in cond.factors},
            "stack_attrs": {
                "backend": stack.backend,
                "transport": stack.transport,
                "cow": stack.cow,
                "read_cache": str(stack.read_cache or ""),
                "write_cache": str(stack.write_cache or ""),
                "write_engine": stack.engine or "",
                "repo_delay_ms": stack.repo_delay_ms,
            },
            "start": time.time(),
            "cache": [],
        }
        if self.client_mode:
            record["hosts"] = [site.host.label for site in self.sites if site.host]
        builts: list[stacks.BuiltStack] = []
        samples: list[dict[str, Any]] = record["cache"]
        timings: dict[str, float] = {}
        record["timings_s"] = timings
        mark = [time.monotonic()]

        def lap(name: str) -> None:
            now = time.monotonic()
            timings[name] = round(now - mark[0], 2)
            mark[0] = now

        def take(when: str) -> list[dict[str, Any]]:
            taken = []
            for site, built in zip(self.sites, builts, strict=False):
                for smp in stacks.cache_sample(site.runner, built):
                    smp.update(t=smp.pop("t_wall") - self.t0, when=when, label=cond.label, rep=rep)
                    if site.host is not None:
                        smp["host"] = site.host.label
                    taken.append(smp)
            return taken

        def sample(when: str) -> list[dict[str, Any]]:
            taken = take(when)
            samples.extend(taken)
            return taken

        try:
            self.reporter.step(f"rep {rep} {cond.label}: building {stack.name}")
            for site in self.sites:
                assert site.ws is not None
                builts.append(stacks.build(site.ws, stack))
            lap("build")
            devices = [b.device for b in builts]
            if self.client_mode:
                record["layers"] = [
                    f"{site.host.label}: {layer}"
                    for site, b in zip(self.sites, builts, strict=True)
                    if site.host
                    for layer in b.layers
                ]
                record["device"] = ", ".join(devices)
            else:
                record["layers"] = builts[0].layers
                record["device"] = devices[0]
            for site in self.sites:
                stacks.drop_page_cache(site.runner)
            sample("built")
            for pre in s.model.phases.precondition:
                self.reporter.step(f"rep {rep} {cond.label}: precondition {pre}")
                self._untimed(run, rep, target, s.workload(pre), devices, f"precondition-{pre}")
            if cond.cache_state == "warm":
                self.reporter.step(f"rep {rep} {cond.label}: warm-up pass")
                self._untimed(run, rep, target, cond.workload, devices, "warmup")
                sample("warm")
            lap("untimed")
            w = cond.workload
            text = self._job_text(w)
            sh = fiojob.shape(w, text)
            log_dir = run.fio_dir(rep, target, sh.bs)
            header = (
                f"skycache bench: scenario {s.name}, run {run.run_id}\ncondition {cond.id}, repetition {rep}"
            )
            jobs: list[Path] = []
            log_dirs: list[Path] = []
            for site, device in zip(self.sites, devices, strict=True):
                # Several fio servers: each one's logs in its own directory (fio-plot's layout there).
                site_logs = log_dir if len(self.sites) == 1 or site.host is None else log_dir / site.host.safe
                site_logs.mkdir(parents=True, exist_ok=True)
                log_dirs.append(site_logs)
                job = fiojob.render(w, device, log_dir=site_logs, header=header, job_file_text=text)
                jobs.append(run.write_new(run.job_path(rep, target, sh.bs, self._stem(sh.stem, site)), job))
            json_path = log_dir / f"{sh.stem}.json"
            if json_path.exists():
                raise SkycacheError(f"{json_path} exists: results are never overwritten")
            self.reporter.step(f"rep {rep} {cond.label}: fio {sh.stem} ({w.runtime_s:g}s)")
            before = sample("before")
            cpu_before = provenance.cpu_times(self.sites[0].runner)
            sampler = cachemetrics.Sampler(lambda: take("during")).start()
            try:
                self._fio(jobs, json_path, _timeout(w))
            finally:
                samples.extend(sampler.stop())
                if sampler.error:
                    record["cache_sampler_error"] = sampler.error
                if self.client_mode:
                    for d in log_dirs:
                        remote.restore_log_names(d)
            lap("fio")
            record["noise"] = provenance.noise(self.sites[0].runner, cpu_before, timings["fio"])
            record.update(status="ok", json=run.rel(json_path), job=run.rel(jobs[0]))
            if len(jobs) > 1:
                record["jobs"] = [run.rel(j) for j in jobs]
            record["cache_metrics"] = cachemetrics.measured(before, sample("measured"))
        except (SkycacheError, OSError) as exc:
            record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("condition %s rep %d failed: %s", cond.id, rep, exc)
        finally:
            if builts:
                self.reporter.step(f"rep {rep} {cond.label}: teardown")
                mark[0] = time.monotonic()
                errors = [e for b in builts for e in b.teardown()]
                lap("teardown")
                flushes = [b.flush for b in builts if b.flush]
                if flushes:
                    record.setdefault("cache_metrics", {}).update(cachemetrics.merge_flushes(flushes))
                if errors:
                    record["teardown_errors"] = errors
                    if record["status"] == "ok":
                        record["status"] = "failed"
                        record["error"] = f"teardown: {errors[0]}"
            record["end"] = time.time()
        return record

    def run(self, on_plan: Callable[[Prepared], None] | None = None) -> RunOutcome:
        s = self.scenario
        prep = self.prepare()  # a refused --resume/--only writes nothing
        if prep.run is None:
            run, manifest = self._new_run(prep)
        else:
            run, manifest = prep.run, prep.run.manifest()
            manifest.setdefault("resumed", []).append(
                {
                    "at": _iso(self.t0),
                    "mode": prep.mode,
                    "command": self.opts.command,
                    "skipped": prep.skipped,
                    "planned": len(prep.planned),
                }
            )
            manifest.update(status="running")
            manifest.pop("error", None)
        rule = autoreps.Rule.of(s.model) if s.model.auto else None
        if rule is not None:
            manifest["auto_repetitions"] = {**rule.describe(), **manifest.get("auto_repetitions", {})}
        run.write_manifest(manifest)
        outcome = RunOutcome(run)
        if on_plan is not None:
            on_plan(prep)
        # "auto": the count is the cap; a re-run of failures runs exactly what it lists
        self.reporter.begin(len(prep.planned), at_most=rule is not None and prep.mode != "rerun-failed")
        shaped: list[Runner] = []
        through = False  # the plan ran to its end (an interrupted run is partial, and can be resumed)
        try:
            for site in self.sites:
                if site.runner not in shaped and self._shape(site.runner, s.model.shaping):
                    shaped.append(site.runner)
            for site in self.sites:
                where = f" on {site.host.label}" if site.host else ""
                self.reporter.note(f"preparing the repository and node storage{where}")
                site.ws = stacks.Workspace.prepare(
                    site.runner, list(s.model.stacks), s.model.image_size, self._workdir(site)
                )
                site.ws.fill(self.reporter.note)
            if prep.warmup is not None:
                self._warm_up(run, prep.warmup.condition, manifest)
            for rep, todo in enumerate(prep.rounds, 1):
                for p in todo:
                    self._record(run, p, outcome)
                if rule is not None and prep.mode != "rerun-failed" and rep >= rule.min_repetitions:
                    status = self._auto_status(run, rule, prep.selection, rep, manifest)
                    if status.done:
                        self.reporter.note(
                            f"auto repetitions: every ratio interval within {rule.target * 100:g}% "
                            f"after {rep} rounds: stopping"
                        )
                        break
            through = True
        except (SkycacheError, OSError) as exc:
            outcome.errors.append(f"run aborted: {exc}")
            manifest["error"] = str(exc)
        finally:
            for site in self.sites:
                if site.ws is not None:
                    # minutes on a loaded lab (flushes, iSCSI logouts, LV removal): said, and timed
                    where = f" on {site.host.label}" if site.host else ""
                    began = time.monotonic()
                    self.reporter.note(f"tearing down the repository and node storage{where}")
                    outcome.errors += [f"workspace teardown: {e}" for e in site.ws.teardown()]
                    self.reporter.note(
                        f"teardown{where} done in {time.monotonic() - began:.1f} s"
                    )
            for runner in shaped:
                self._unshape(runner)
            df = tidy.build(run)
            if not df.empty:
                tidy.write(run, df)
            latest = run.latest_records()
            ok = sum(1 for r in latest if r.get("status") == "ok")
            if rule is not None:
                rounds = max((int(r["rep"]) for r in latest if isinstance(r.get("rep"), int)), default=0)
                self._auto_status(run, rule, prep.selection, rounds, manifest)
            manifest.update(
                ended=_iso(time.time()),
                status="complete" if through and ok == len(latest) and "error" not in manifest else "partial",
                ok=ok,
                failed=len(latest) - ok,
            )
            run.write_manifest(manifest)
        return outcome

    def _new_run(self, prep: Prepared) -> tuple[store.RunDir, dict[str, Any]]:
        s = self.scenario
        # job files read before the run directory exists: a bad one (binary, a FIFO) changes nothing
        job_texts = {w.name: self._job_text(w) or "" for w in s.model.workloads if w.job_file is not None}
        run = store.RunDir.create(self.opts.results, s.name, self.opts.run_id)
        shutil.copyfile(s.path, run.path / "scenario.toml")
        for w in s.model.workloads:
            if w.job_file is not None:
                run.write_new(run.path / "jobfiles" / Path(w.job_file).name, job_texts[w.name])
        manifest: dict[str, Any] = {
            "scenario": s.name,
            "description": s.model.description,
            "run_id": run.run_id,
            "environment": environment(self.runner, self.opts.where),
            "shaping": shaping_info(s.model.shaping),
            "stacks": {st.name: st.describe() for st in s.model.stacks},
            "workloads": comparable.workload_descriptions(s),
            "factors": list(s.factor_names),
            "varying_factors": list(s.conditions[0].varying),
            "conditions": [c.id for c in prep.selection.conditions],
            # "auto": the rounds run so far (updated after each round); the rule is auto_repetitions
            "repetitions": s.model.repetitions if not s.model.auto else 0,
            "repetitions_rule": "auto" if s.model.auto else "fixed",
            "seed": s.model.seed,
            "baseline": s.model.baseline,
            "image_size": str(s.model.image_size),
            "command": self.opts.command,
            "started": _iso(self.t0),
            "status": "running",
        }
        if prep.selection.filters:
            manifest["only"] = prep.selection.as_dict()
        if self.client_mode:
            manifest["hosts"] = [site.host.label for site in self.sites if site.host]
            manifest["host_environment"] = {
                site.host.label: {**_host_environment(site.runner), "reached": remote.reached(site.runner)}
                for site in self.sites
                if site.host
            }
        return run, manifest

    def _record(self, run: store.RunDir, p: plan.Planned, outcome: RunOutcome) -> None:
        cond, rep = p.condition, p.rep
        record = self._one(run.for_attempt(p.attempt), rep, cond)
        if p.attempt > 1:
            record["attempt"] = p.attempt
        run.append_record(record)
        ok = record["status"] == "ok"
        outcome.ok += ok
        outcome.failed += not ok
        if not ok:
            outcome.errors.append(f"{cond.label} rep {rep}: {record['error']}")
        self.reporter.finished(f"rep {rep} {cond.label}", ok)

    def _auto_status(
        self,
        run: store.RunDir,
        rule: autoreps.Rule,
        selection: plan.Selection,
        rounds: int,
        manifest: dict[str, Any],
    ) -> autoreps.Status:
        """The rule on the records so far, written to the manifest (a killed run keeps the last)."""
        df = tidy.build(run)
        labels = [c.label for c in selection.conditions]
        status = (
            autoreps.evaluate(df, labels, self.baseline, rule.target, rounds)
            if not df.empty
            else autoreps.Status(rounds, not_reached={label: "no data" for label in labels})
        )
        manifest["auto_repetitions"] = {**rule.describe(), **status.as_dict()}
        manifest["repetitions"] = rounds
        run.write_manifest(manifest)
        return status

    def _workdir(self, site: Site) -> Path | None:
        """Several fio servers on this machine (a test, a demo) each get their own image directory."""
        local = [x for x in self.sites if x.host is not None and x.host.is_local]
        if site.host is None or site not in local or len(local) < 2:
            return self.opts.workdir
        return (self.opts.workdir or stacks.SCRATCH_MOUNT) / site.host.safe

    def _shape(self, runner: Runner, profile: str) -> bool:
        if profile == "none":
            return False
        from skycache.net import shaping  # type: ignore[attr-defined,unused-ignore]

        shaping.apply(runner, shaping.PROFILES[profile], dev="lo", port=stacks.PORTAL_PORT)
        return True

    def _unshape(self, runner: Runner) -> None:
        from skycache.net import shaping  # type: ignore[attr-defined,unused-ignore]

        try:
            shaping.remove(runner, dev="lo")
        except SkycacheError as exc:
            log.warning("removing shaping failed: %s", exc)


def _open_run(path: Path, sc: Scenario, flag: str) -> tuple[store.RunDir, dict[str, Any]]:
    """An existing run directory of this very scenario (its scenario.toml has the same content)."""
    if not (path / store.MANIFEST).is_file() or not (path / "scenario.toml").is_file():
        raise InvalidInput(f"{flag} {path}: not a run directory (no {store.MANIFEST} and scenario.toml)")
    files.check_output_dir(path, what=f"{flag} run directory")
    run = store.RunDir(path)
    manifest = run.manifest()
    if manifest.get("scenario") != sc.name:
        raise InvalidInput(f"{flag} {path}: a run of scenario {manifest.get('scenario')!r}, not {sc.name!r}")
    theirs = files.load_toml(path / "scenario.toml", what="run's scenario file")
    ours = files.load_toml(sc.path, what="scenario file")
    if theirs != ours:
        keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise InvalidInput(
            f"{flag} {path}: {sc.path} differs from the run's scenario.toml ({', '.join(keys)})"
        )
    return run, manifest


def _host_environment(runner: Runner) -> dict[str, str]:
    """Kernel and fio version of a fio server's machine (through its runner: ssh or local)."""

    def q(argv: list[str]) -> str:
        try:
            return runner.query(argv, check=False, timeout_s=20).stdout.strip()
        except SkycacheError:
            return ""

    return {"kernel": q(["uname", "-r"]) or "unknown", "fio_version": q(["fio", "--version"]) or "unknown"}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_scenario(
    scenario: Scenario,
    options: RunOptions,
    *,
    runner: Runner | None = None,
    reporter: Reporter | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
    on_plan: Callable[[Prepared], None] | None = None,
) -> RunOutcome:
    if options.where not in ("lab", "host", "hosts"):
        raise InvalidInput(f"--where {options.where!r}: use lab, host or hosts")
    if options.where == "hosts":
        entries = options.hosts or tuple(scenario.model.hosts)
        if not entries:
            raise InvalidInput(f"{scenario.path}: hosts: where = 'hosts' needs a list of fio server hosts")
        bad = remote.check_hosts(entries)
        if bad:
            i, entry, problem = bad[0]
            raise InvalidInput(f"hosts[{i}]: {entry!r}: {problem}")
    if options.where == "lab" and os.environ.get("SKYCACHE_IN_LAB") != "1":
        raise InvalidInput("--where lab: not inside the lab (run through `skycache lab run ... --`)")
    files.check_output_dir(options.results, what="--out")  # before any stack is built
    orch = Orchestrator(scenario, options, runner or SystemRunner(), reporter or NullReporter())
    out = orch.run(on_plan)
    if on_done is not None:
        on_done(out)
    return out
