"""Run a scenario: build each stack, run fio, tear it down; interleaved, recorded, never aborted by
one failing condition.

Order: repetitions are rounds; each round runs every condition once, in an order shuffled with the
scenario's seed (recorded), so slow drifts of the machine spread over all conditions instead of
biasing the ones that ran last. Each condition x repetition builds its stack fresh (empty caches =
cold; the page cache is dropped too), runs the precondition workloads and, for ``warm``, one untimed
pass of the measured workload, then the measured fio run. A failure anywhere in that is recorded as a
failed condition (with the reason) and the run goes on with the next one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from skycache.bench import fiojob, fioparse, stacks, store, tidy
from skycache.bench.scenario import Condition, Scenario, Workload
from skycache.errors import InvalidInput, SkycacheError
from skycache.runner import CommandError, Runner

log = logging.getLogger("skycache.bench.orchestrate")


class Reporter(Protocol):
    def begin(self, total: int) -> None: ...
    def step(self, text: str) -> None: ...
    def finished(self, text: str, ok: bool) -> None: ...
    def note(self, text: str) -> None: ...


class NullReporter:
    def begin(self, total: int) -> None:
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


@dataclass
class RunOutcome:
    run: store.RunDir
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# -- environment --------------------------------------------------------------------------------


def _accel() -> str:
    if os.environ.get("SKYCACHE_IN_LAB") != "1":
        return "none"
    try:
        sources = Path("/sys/devices/system/clocksource/clocksource0/available_clocksource").read_text()
    except OSError:
        return "unknown"
    # A KVM guest gets the paravirtual kvm-clock; under TCG there is none.
    return "kvm" if "kvm-clock" in sources else "tcg"


def environment(runner: Runner, where: str) -> dict[str, Any]:
    def q(argv: list[str]) -> str:
        try:
            return runner.query(argv, check=False, timeout_s=20).stdout.strip()
        except SkycacheError:
            return ""

    try:
        sky = version("skycache")
    except PackageNotFoundError:
        sky = "unknown"
    commit = q(["git", "rev-parse", "HEAD"]) or "unknown"
    if commit != "unknown" and q(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "+dirty"
    return {
        "where": where,
        "accel": _accel(),
        "kernel": os.uname().release,
        "hostname": os.uname().nodename,
        "cpus": os.cpu_count(),
        "fio_version": q(["fio", "--version"]) or "fio not found",
        "skycache_version": sky,
        "git_commit": commit,
    }


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
    argv = fiojob.fio_argv(job_path, json_path)
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


class Orchestrator:
    def __init__(self, scenario: Scenario, options: RunOptions, runner: Runner, reporter: Reporter) -> None:
        self.scenario = scenario
        self.opts = options
        self.runner = runner
        self.reporter = reporter
        self.t0 = time.time()

    def schedule(self) -> list[tuple[int, Condition]]:
        """(repetition, condition) in run order: rounds of all conditions, each round shuffled."""
        rng = random.Random(self.scenario.model.seed)  # noqa: S311 (reproducible order, not crypto)
        order: list[tuple[int, Condition]] = []
        for rep in range(1, self.scenario.model.repetitions + 1):
            conds = list(self.scenario.conditions)
            rng.shuffle(conds)
            order += [(rep, c) for c in conds]
        return order

    def _job_text(self, w: Workload) -> str | None:
        if w.job_file is None:
            return None
        return (self.scenario.path.parent / w.job_file).read_text()

    def _untimed(self, run: store.RunDir, rep: int, target: str, w: Workload, device: str, what: str) -> None:
        text = self._job_text(w)
        if what == "warmup" and w.job_file is None and w.time_based:
            # One pass = the measured job once over its whole working set (each block once, in random
            # order), not "for runtime seconds": how warm the caches get must not depend on how fast
            # the machine happens to be.
            w = w.model_copy(update={"time_based": False, "runtime_s": max(600.0, w.runtime_s)})
        sh = fiojob.shape(w, text)
        job = fiojob.render(
            w, device, log_dir=None, header=f"{what} (untimed)", job_file_text=text, untimed=True
        )
        path = run.job_path(rep, target, sh.bs, f"{what}-{sh.stem}", untimed=True)
        run.write_new(path, job)
        run_fio(self.runner, path, path.with_suffix(".json"), _timeout(w))

    def _one(self, run: store.RunDir, ws: stacks.Workspace, rep: int, cond: Condition) -> dict[str, Any]:
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
        built: stacks.BuiltStack | None = None
        samples: list[dict[str, Any]] = record["cache"]
        timings: dict[str, float] = {}
        record["timings_s"] = timings
        mark = [time.monotonic()]

        def lap(name: str) -> None:
            now = time.monotonic()
            timings[name] = round(now - mark[0], 2)
            mark[0] = now

        def sample(when: str) -> None:
            if built is not None:
                for smp in stacks.cache_sample(self.runner, built):
                    smp.update(t=smp.pop("t_wall") - self.t0, when=when, label=cond.label, rep=rep)
                    samples.append(smp)

        try:
            self.reporter.step(f"rep {rep} {cond.label}: building {stack.name}")
            built = stacks.build(ws, stack)
            lap("build")
            record["layers"] = built.layers
            record["device"] = built.device
            stacks.drop_page_cache(self.runner)
            sample("built")
            for pre in s.model.phases.precondition:
                self.reporter.step(f"rep {rep} {cond.label}: precondition {pre}")
                self._untimed(run, rep, target, s.workload(pre), built.device, f"precondition-{pre}")
            if cond.cache_state == "warm":
                self.reporter.step(f"rep {rep} {cond.label}: warm-up pass")
                self._untimed(run, rep, target, cond.workload, built.device, "warmup")
                sample("warm")
            lap("untimed")
            w = cond.workload
            text = self._job_text(w)
            sh = fiojob.shape(w, text)
            log_dir = run.fio_dir(rep, target, sh.bs)
            header = (
                f"skycache bench: scenario {s.name}, run {run.run_id}\ncondition {cond.id}, repetition {rep}"
            )
            job = fiojob.render(w, built.device, log_dir=log_dir, header=header, job_file_text=text)
            job_path = run.write_new(run.job_path(rep, target, sh.bs, sh.stem), job)
            json_path = log_dir / f"{sh.stem}.json"
            if json_path.exists():
                raise SkycacheError(f"{json_path} exists: results are never overwritten")
            self.reporter.step(f"rep {rep} {cond.label}: fio {sh.stem} ({w.runtime_s:g}s)")
            run_fio(self.runner, job_path, json_path, _timeout(w))
            lap("fio")
            record.update(status="ok", json=run.rel(json_path), job=run.rel(job_path))
            sample("measured")
        except (SkycacheError, OSError) as exc:
            record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("condition %s rep %d failed: %s", cond.id, rep, exc)
        finally:
            if built is not None:
                self.reporter.step(f"rep {rep} {cond.label}: teardown")
                mark[0] = time.monotonic()
                errors = built.teardown()
                lap("teardown")
                if errors:
                    record["teardown_errors"] = errors
                    if record["status"] == "ok":
                        record["status"] = "failed"
                        record["error"] = f"teardown: {errors[0]}"
            record["end"] = time.time()
        return record

    def run(self) -> RunOutcome:
        s = self.scenario
        run = store.RunDir.create(self.opts.results, s.name, self.opts.run_id)
        outcome = RunOutcome(run)
        shutil.copyfile(s.path, run.path / "scenario.toml")
        for w in s.model.workloads:
            if w.job_file is not None:
                run.write_new(run.path / "jobfiles" / Path(w.job_file).name, self._job_text(w) or "")
        manifest: dict[str, Any] = {
            "scenario": s.name,
            "description": s.model.description,
            "run_id": run.run_id,
            "environment": environment(self.runner, self.opts.where),
            "shaping": shaping_info(s.model.shaping),
            "stacks": {st.name: st.describe() for st in s.model.stacks},
            "factors": list(s.factor_names),
            "varying_factors": list(s.conditions[0].varying),
            "conditions": [c.id for c in s.conditions],
            "repetitions": s.model.repetitions,
            "seed": s.model.seed,
            "baseline": s.model.baseline,
            "image_size": str(s.model.image_size),
            "command": self.opts.command,
            "started": _iso(self.t0),
            "status": "running",
        }
        run.write_manifest(manifest)
        order = self.schedule()
        self.reporter.begin(len(order))
        shaped = False
        ws: stacks.Workspace | None = None
        try:
            shaped = self._shape(s.model.shaping)
            self.reporter.note("preparing the repository and node storage")
            ws = stacks.Workspace.prepare(
                self.runner, list(s.model.stacks), s.model.image_size, self.opts.workdir
            )
            ws.fill(self.reporter.note)
            for rep, cond in order:
                record = self._one(run, ws, rep, cond)
                run.append_record(record)
                ok = record["status"] == "ok"
                outcome.ok += ok
                outcome.failed += not ok
                if not ok:
                    outcome.errors.append(f"{cond.label} rep {rep}: {record['error']}")
                self.reporter.finished(f"rep {rep} {cond.label}", ok)
        except (SkycacheError, OSError) as exc:
            outcome.errors.append(f"run aborted: {exc}")
            manifest["error"] = str(exc)
        finally:
            if ws is not None:
                outcome.errors += [f"workspace teardown: {e}" for e in ws.teardown()]
            if shaped:
                self._unshape()
            df = tidy.build(run)
            if not df.empty:
                tidy.write(run, df)
            manifest.update(
                ended=_iso(time.time()),
                status="complete" if outcome.failed == 0 and "error" not in manifest else "partial",
                ok=outcome.ok,
                failed=outcome.failed,
            )
            run.write_manifest(manifest)
        return outcome

    def _shape(self, profile: str) -> bool:
        if profile == "none":
            return False
        from skycache.net import shaping  # type: ignore[attr-defined,unused-ignore]

        shaping.apply(self.runner, shaping.PROFILES[profile], dev="lo", port=stacks.PORTAL_PORT)
        return True

    def _unshape(self) -> None:
        from skycache.net import shaping  # type: ignore[attr-defined,unused-ignore]

        try:
            shaping.remove(self.runner, dev="lo")
        except SkycacheError as exc:
            log.warning("removing shaping failed: %s", exc)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_scenario(
    scenario: Scenario,
    options: RunOptions,
    *,
    runner: Runner | None = None,
    reporter: Reporter | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> RunOutcome:
    if options.where not in ("lab", "host"):
        raise InvalidInput(
            f"--where {options.where!r}: use lab or host (hosts: fio client/server, not wired yet)"
        )
    if options.where == "lab" and os.environ.get("SKYCACHE_IN_LAB") != "1":
        raise InvalidInput("--where lab: not inside the lab (run through `skycache lab run ... --`)")
    out = Orchestrator(scenario, options, runner or Runner(), reporter or NullReporter()).run()
    if on_done is not None:
        on_done(out)
    return out
