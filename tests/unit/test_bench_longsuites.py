"""Long suites without a lab: the plan (--only, --resume, --rerun-failed) on fake run directories,
the duration estimate, the ETA log line, "auto" repetitions in scenarios, and bench run --dry-run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from skycache.bench import estimate, orchestrate, plan, scenario, store
from skycache.bench.progress import PlainReporter
from skycache.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "scenarios" / "quickstart.toml"

MINI = """
name = "mini"
where = "host"
repetitions = 3
baseline = "stack=b"
[[stacks]]
name = "a"
backend = "file"
[[stacks]]
name = "b"
backend = "lvm"
[[stacks]]
name = "c"
backend = "lvm"
[[workloads]]
name = "randread"
rw = "randread"
runtime_s = 4
[[workloads]]
name = "randwrite"
rw = "randwrite"
runtime_s = 4
"""


def _mini(tmp_path: Path, text: str = MINI) -> scenario.Scenario:
    f = tmp_path / "mini.toml"
    f.write_text(text)
    return scenario.load(f)


def _orch(sc: scenario.Scenario, **opts: object) -> orchestrate.Orchestrator:
    return orchestrate.Orchestrator(
        sc,
        orchestrate.RunOptions(**opts),  # type: ignore[arg-type]
        runner=None,  # type: ignore[arg-type]
        reporter=orchestrate.NullReporter(),
    )


def _fake_run(tmp_path: Path, sc: scenario.Scenario, records: list[tuple[int, str, str]]) -> Path:
    """A run directory of ``sc`` with records (rep, label, status), as a killed run leaves it."""
    run = store.RunDir.create(tmp_path / "results", sc.name, "r1")
    (run.path / "scenario.toml").write_text(sc.path.read_text())
    by_label = {c.label: c for c in sc.conditions}
    run.write_manifest(
        {"scenario": sc.name, "status": "running", "conditions": [c.id for c in sc.conditions]}
    )
    for rep, label, status in records:
        c = by_label[label]
        run.append_record(
            {"condition": c.id, "label": label, "rep": rep, "status": status, "start": 100.0, "end": 112.0}
        )
    return run.path


def test_fixed_repetitions_keep_the_order_they_always_had(tmp_path: Path) -> None:
    import random

    sc = _mini(tmp_path)
    rng = random.Random(sc.model.seed)
    expected = []
    for rep in (1, 2, 3):
        conds = list(sc.conditions)
        rng.shuffle(conds)
        expected += [(rep, c) for c in conds]
    assert _orch(sc).schedule() == expected
    assert [(p.rep, p.condition) for p in _orch(sc).prepare().planned] == expected


def test_only_keeps_the_baseline_and_the_full_run_order(tmp_path: Path) -> None:
    sc = _mini(tmp_path)
    prep = _orch(sc, only=("stack=a,workload=*read",)).prepare()
    labels = {c.label for c in prep.selection.conditions}
    assert labels == {"a/randread", "b/randread"}  # b kept: the baseline of a
    assert [c.label for c in prep.selection.baselines_added] == ["b/randread"]
    full = [(p.rep, p.condition.label) for p in _orch(sc).prepare().planned]
    assert [(p.rep, p.condition.label) for p in prep.planned] == [x for x in full if x[1] in labels]
    # several --only are OR'd
    both = _orch(sc, only=("stack=a,workload=randread", "stack=c,workload=randwrite")).prepare()
    assert {c.label for c in both.selection.conditions} == {
        "a/randread", "b/randread", "c/randwrite", "b/randwrite"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("flt", "why"),
    [("stack=nothere", "matches no condition"), ("color=red", "not a factor"), ("stack", "expected FACTOR")],
)
def test_only_errors_name_the_filter(tmp_path: Path, flt: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as exc:
        _orch(_mini(tmp_path), only=(flt,)).prepare()
    assert flt in str(exc.value) and "\n" not in str(exc.value)


def test_resume_skips_pairs_recorded_ok_and_reruns_failed_ones_as_new_attempts(tmp_path: Path) -> None:
    sc = _mini(tmp_path)
    full = _orch(sc).prepare().planned
    done = [(p.rep, p.condition.label, "ok") for p in full[:5]]
    done[2] = (done[2][0], done[2][1], "failed")
    run = _fake_run(tmp_path, sc, done)
    # a killed run may leave the files of a try without its record: that attempt is taken
    failed_target = store.target_name(done[2][1])
    (run / "fio" / f"rep-{done[2][0]}.attempt-2" / failed_target).mkdir(parents=True)
    prep = _orch(sc, resume=run).prepare()
    assert prep.mode == "resume" and prep.skipped == 4
    todo = [(p.rep, p.condition.label) for p in prep.planned]
    assert todo == [(p.rep, p.condition.label) for i, p in enumerate(full) if i == 2 or i >= 5]
    again = next(p for p in prep.planned if p.condition.label == done[2][1] and p.rep == done[2][0])
    assert again.attempt == 3
    # --rerun-failed: only the failed pair
    rerun = _orch(sc, rerun_failed=run).prepare()
    assert [(p.rep, p.condition.label) for p in rerun.planned] == [(done[2][0], done[2][1])]


def test_resume_refuses_another_scenario_a_complete_run_and_only(tmp_path: Path) -> None:
    sc = _mini(tmp_path)
    run = _fake_run(tmp_path, sc, [(1, sc.conditions[0].label, "ok")])
    (tmp_path / "other").mkdir()
    other = _mini(tmp_path / "other", MINI.replace("runtime_s = 4", "runtime_s = 5"))
    with pytest.raises(InvalidInput, match=r"differs from the run's scenario\.toml"):
        _orch(other, resume=run).prepare()
    with pytest.raises(InvalidInput, match=r"--only with \-\-resume"):
        _orch(sc, resume=run, only=("stack=a",)).prepare()
    with pytest.raises(InvalidInput, match="no failed repetition"):
        _orch(sc, rerun_failed=run).prepare()
    manifest = store.read_manifest(run)
    store.RunDir(run).write_manifest({**manifest, "status": "complete"})
    with pytest.raises(InvalidInput, match="the run is complete"):
        _orch(sc, resume=run).prepare()


def test_latest_record_per_condition_and_rep_wins() -> None:
    recs = [
        {"condition": "x", "rep": 1, "status": "failed"},
        {"condition": "y", "rep": 1, "status": "ok"},
        {"condition": "x", "rep": 1, "status": "ok", "attempt": 2},
    ]
    latest = store.latest(iter(recs))
    assert [(r["condition"], r["status"]) for r in latest] == [("x", "ok"), ("y", "ok")]
    assert store.rep_dir(3) == "rep-3" and store.rep_dir(3, 2) == "rep-3.attempt-2"


def test_estimate_uses_the_newest_earlier_run_else_the_default(tmp_path: Path) -> None:
    sc = _mini(tmp_path)
    prep = _orch(sc).prepare()
    rt = estimate.runtimes(prep.planned)
    none = estimate.measured_overhead(tmp_path / "results", sc.name, rt)
    assert none.source == "" and none.mean_s == estimate.DEFAULT_OVERHEAD_S
    line = estimate.line(prep.planned, prep.planned, none)
    # 18 runs x (4 s + 10 s) = 252 s
    assert line == "estimate: 18 runs, about 4 min (default overhead 10 s/run)"
    # the warm-up run costs its time (5 runs x 14 s = 70 s, plus one: 84 s), and is not one of the runs
    five = prep.planned[:5]
    assert estimate.line(five, five, none, five[0]) == (
        "estimate: 5 runs and a warm-up run, about 84 s (default overhead 10 s/run)"
    )
    _fake_run(tmp_path, sc, [(1, c.label, "ok") for c in sc.conditions])  # 12 s wall, 4 s fio
    measured = estimate.measured_overhead(tmp_path / "results", sc.name, rt)
    assert measured.source == "r1" and measured.mean_s == pytest.approx(8.0)
    assert estimate.seconds(prep.planned, measured) == pytest.approx(18 * 12.0)
    assert "(overhead from run r1)" in estimate.line(prep.planned, prep.planned, measured)
    assert estimate.fmt_duration(250) == "4m10s" and estimate.fmt_duration(3900) == "1h05m"


def test_plain_reporter_writes_count_and_eta() -> None:
    lines: list[str] = []
    now = [0.0]
    r = PlainReporter(lines.append, clock=lambda: now[0])
    r.begin(24)
    r.note("preparing the repository")
    r.step("rep 1 a: building")
    for i in range(7):
        now[0] += 10.0
        r.finished(f"rep 1 c{i}", ok=i != 3)
    assert lines[0] == "bench: preparing the repository"
    assert lines[-1] == "[7/24] ok rep 1 c6, ETA 2m50s"  # 10 s a run, 17 left
    assert lines[4].startswith("[4/24] FAILED rep 1 c3")
    auto = PlainReporter(lines.append, clock=lambda: now[0])
    auto.begin(40, at_most=True)
    auto.step("x")
    now[0] += 5.0
    auto.finished("rep 1 a", ok=True)
    assert lines[-1] == "[1/40 at most] ok rep 1 a, ETA 3m15s at most"


def test_auto_repetitions_in_scenarios(tmp_path: Path) -> None:
    sc = _mini(tmp_path, MINI.replace("repetitions = 3", 'repetitions = "auto"\nmax_repetitions = 6'))
    assert sc.model.auto and sc.model.rounds == 6 and sc.runs == 36
    assert sc.model.target_ci_pct == 10 and sc.model.min_repetitions == 3
    assert len(plan.rounds(sc, sc.conditions)) == 6
    with pytest.raises(InvalidInput, match=r"36 fio runs .* max_repetitions"):
        scenario.check_runs(
            _mini(
                tmp_path,
                MINI.replace("repetitions = 3", 'repetitions = "auto"\nmax_repetitions = 6\nmax_runs = 20'),
            ),
            yes=False,
        )
    for bad, why in (
        ('repetitions = "often"', "neither an integer"),
        ("repetitions = 3\ntarget_ci_pct = 5", 'only used with repetitions = "auto"'),
        ('repetitions = "auto"\nmax_repetitions = 2', "max_repetitions"),
        ('repetitions = "auto"\nmin_repetitions = 5\nmax_repetitions = 4', "above max_repetitions"),
    ):
        with pytest.raises(InvalidInput, match=why):
            _mini(tmp_path, MINI.replace("repetitions = 3", bad))


def test_quickstart_uses_auto_within_the_demo_budget() -> None:
    sc = scenario.load(QUICK)
    assert sc.model.auto and sc.model.max_repetitions == 4 and sc.runs == 32


def _sky(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skycache.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_dry_run_shows_the_plan_with_only_and_resume(tmp_path: Path) -> None:
    sc = _mini(tmp_path)
    r = _sky(
        "bench", "run", str(sc.path), "--dry-run", "--json", "--only", "stack=c", "--out", str(tmp_path / "o")
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    prep = _orch(sc, only=("stack=c",)).prepare()
    assert [(x["rep"], x["label"]) for x in doc["runs"]] == [(p.rep, p.condition.label) for p in prep.planned]
    assert doc["only"]["baselines_added"] and doc["estimate"].startswith(
        "estimate: 12 runs and a warm-up run"
    )
    assert doc["warmup"] == prep.planned[0].condition.label  # the run's untimed warm-up, shown too
    assert not (tmp_path / "o").exists()  # nothing written
    run = _fake_run(tmp_path, sc, [(1, sc.conditions[0].label, "ok")])
    r = _sky("bench", "run", str(sc.path), "--dry-run", "--resume", str(run))
    assert r.returncode == 0, r.stderr
    assert "dry run (resume)" in r.stdout and "17 fio runs" in r.stdout
    bad = _sky("bench", "run", str(QUICK), "--dry-run", "--resume", str(run))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "skycache: error:" in bad.stderr


class _Workspace:
    def fill(self, progress: object = None) -> None:
        pass

    def teardown(self) -> list[str]:
        return []


def _fake_runs(
    monkeypatch: pytest.MonkeyPatch, iops_of: dict[str, list[float]], fail: set[tuple[str, int]]
) -> None:
    """Orchestrator._one writes a fio JSON with the next IOPS of the condition (no stack, no fio)."""
    from bench_fixtures import fio_json

    monkeypatch.setattr(orchestrate, "environment", lambda runner, where: {"where": where})
    monkeypatch.setattr(orchestrate.stacks.Workspace, "prepare", lambda *a, **k: _Workspace())

    def one(self: orchestrate.Orchestrator, run: store.RunDir, rep: int, cond: scenario.Condition) -> dict:
        rec = {"scenario": self.scenario.name, "run_id": run.run_id, "condition": cond.id,
               "label": cond.label, "rep": rep, "phase": "measure", "factors": dict(cond.factors),
               "start": 0.0, "end": 1.0, "error": ""}  # fmt: skip
        if (cond.label, rep) in fail:
            return {**rec, "status": "failed", "error": "boom"}
        d = run.fio_dir(rep, store.target_name(cond.label), "4k")
        p = run.write_new(d / "randread-1-1.json", fio_json(iops_of[cond.label][rep - 1], 1e6))
        return {**rec, "status": "ok", "json": run.rel(p)}

    monkeypatch.setattr(orchestrate.Orchestrator, "_one", one)

    def warm_up(
        self: orchestrate.Orchestrator, run: store.RunDir, cond: scenario.Condition, manifest: dict
    ) -> None:
        manifest.setdefault("warmups", []).append({"condition": cond.label, "status": "ok"})

    monkeypatch.setattr(orchestrate.Orchestrator, "_warm_up", warm_up)


AUTO = """
name = "auto"
where = "host"
repetitions = "auto"
max_repetitions = 6
baseline = "stack=b"
[[stacks]]
name = "a"
backend = "file"
[[stacks]]
name = "b"
backend = "lvm"
[[workloads]]
name = "randread"
rw = "randread"
"""


def test_auto_run_stops_when_two_rounds_in_a_row_are_narrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = _mini(tmp_path, AUTO)
    quiet = [1000.0, 1001.0, 999.0, 1000.5, 999.5, 1000.0]
    # the baseline's noise decides: wide after rounds 2 and 3, within 10 % from round 4 on
    _fake_runs(
        monkeypatch,
        {"a": [2 * x for x in quiet], "b": [1000.0, 1100.0, 1050.0, 1050.0, 1050.0, 1050.0]},
        set(),
    )
    out = orchestrate.run_scenario(sc, orchestrate.RunOptions(results=tmp_path / "r", where="host"))
    m = out.run.manifest()
    auto = m["auto_repetitions"]
    # within after round 4, and the rule wants it after the round before too: the stop is round 5
    assert m["repetitions"] == auto["rounds_run"] == 5 and auto["not_reached"] == {} and out.ok == 10
    assert auto["half_width_pct"]["a"] < 10
    assert auto["target_ci_pct"] == 10 and auto["max_repetitions"] == 6 and "rule" in auto
    assert m["status"] == "complete" and m["repetitions_rule"] == "auto"
    # one warm-up, on the first planned run's condition, before round 1
    first = json.loads((out.run.path / "conditions.jsonl").read_text().splitlines()[0])["label"]
    assert m["warmups"] == [{"condition": first, "status": "ok"}]


def test_auto_run_to_the_cap_names_the_condition_and_rerun_failed_adds_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skycache.bench import report

    sc = _mini(tmp_path, AUTO)
    _fake_runs(
        monkeypatch,
        {
            "a": [500.0, 1500.0, 900.0, 1200.0, 700.0, 1400.0],
            "b": [1000.0, 1001.0, 999.0, 1000.0, 1000.0, 1000.0],
        },
        {("a", 2)},
    )
    out = orchestrate.run_scenario(sc, orchestrate.RunOptions(results=tmp_path / "r", where="host"))
    m = out.run.manifest()
    assert m["repetitions"] == 6 and list(m["auto_repetitions"]["not_reached"]) == ["a"]
    assert m["status"] == "partial" and m["failed"] == 1
    assert "1 did not get there: a (interval" in report.auto_line(m)
    _fake_runs(monkeypatch, {"a": [500.0, 1000.0, 900.0, 1200.0, 700.0, 1400.0], "b": [1000.0] * 6}, set())
    again = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=tmp_path / "r", where="host", rerun_failed=out.run.path)
    )
    assert again.ok == 1 and again.failed == 0
    m = again.run.manifest()
    assert m["failed"] == 0 and m["resumed"][0]["mode"] == "rerun-failed" and m["resumed"][0]["planned"] == 1
    recs = list(again.run.records())
    assert len(recs) == 13 and recs[-1]["attempt"] == 2  # nothing replaced: the re-run is a new record
    assert (again.run.path / "fio" / "rep-2.attempt-2" / "a" / "4k" / "randread-1-1.json").is_file()
    import skycache.bench

    df = skycache.bench.load(again.run.path)
    assert (df["status"] == "ok").all() and df[df["label"] == "a"]["rep"].nunique() == 6
