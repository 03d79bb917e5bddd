"""Issue 18, scenario files that run commands, on a real kernel: a scenario whose fio options or job
file carry ``exec_prerun`` or ``filename`` is refused by ``skycache bench run`` before anything runs:
no command that changes the system, no fio, no stack, no run directory, the hook's marker file never
made and the named disk unchanged."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from _storage import read_sha

from skycache.runner import COMMAND_LOG_ENV, Runner

SCENARIO = """
name = "unsafe"
where = "lab"
repetitions = 1
image_size = "16M"
[[stacks]]
name = "lvm-local"
backend = "lvm"
transport = "local"
[[workloads]]
name = "w"
"""


def bench_run(*args: str) -> tuple[int, str, str]:
    """``skycache bench run`` in this process, with the ``skycache`` error handling."""
    from skycache.cli.common import run_app
    from skycache.cli.main import app

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_app(app, ["bench", "run", *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", ["exec_prerun", "filename", "job_file"])
def test_unsafe_scenario_is_refused_before_anything_runs(
    runner: Runner, spare_disk: str, scratch_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:  # fmt: skip
    marker = tmp_path / "hook-ran"
    if case == "exec_prerun":
        body = f'rw = "randread"\noptions = {{ exec_prerun = "touch {marker}" }}\n'
        expected = "workloads[0].options.exec_prerun: not allowed: it runs a command"
    elif case == "filename":
        body = f'rw = "randwrite"\noptions = {{ filename = "{spare_disk}" }}\n'
        expected = "workloads[0].options.filename: not allowed: it names a file or device"
    else:
        (tmp_path / "hook.fio").write_text(f"[j]\nrw=randread\nexec_prerun=touch {marker}\n")
        body = 'job_file = "hook.fio"\n'
        expected = "workloads[0].job_file hook.fio: line 3: exec_prerun: not allowed: it runs a command"
    scenario = tmp_path / "unsafe.toml"
    scenario.write_text(SCENARIO + body)
    disk_before = read_sha(runner, spare_disk, scratch_dir)
    vgs_before = runner.query(["vgs", "--noheadings", "-o", "vg_name"]).stdout.split()
    results = tmp_path / "results"
    log = tmp_path / "commands.jsonl"  # what the refused run itself executed
    monkeypatch.setenv(COMMAND_LOG_ENV, str(log))
    code, out, err = bench_run(str(scenario), "--where", "lab", "--out", str(results))
    monkeypatch.delenv(COMMAND_LOG_ENV)
    assert code == 2, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"skycache: error: {scenario}: ") and expected in line, line
    assert not marker.exists()
    assert not results.exists()
    logged = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    assert [r["argv"] for r in logged if r["kind"] == "run"] == []  # nothing that changes the system
    assert not any(r["argv"][0] == "fio" for r in logged)
    assert runner.query(["vgs", "--noheadings", "-o", "vg_name"]).stdout.split() == vgs_before
    assert read_sha(runner, spare_disk, scratch_dir) == disk_before
