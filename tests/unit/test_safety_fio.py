"""Scenario files must not run commands or touch devices the stack did not build (issue 18): fio
options and job files are limited to the allow-list of skycache.bench.fioopts, values checked."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skycache.bench import fiojob, fioopts, scenario
from skycache.bench.scenario import Workload
from skycache.errors import InvalidInput

HEAD = """
name = "t"
[[stacks]]
name = "s"
backend = "lvm"
transport = "iscsi"
"""
RW = '[[workloads]]\nname = "w"\nrw = "randread"\n'
JOB = '[[workloads]]\nname = "w"\njob_file = "{name}"\n'
DOCS = Path(__file__).parents[2] / "docs" / "bench.md"


def refused(tmp_path: Path, body: str) -> str:
    f = tmp_path / "s.toml"
    f.write_text(HEAD + body)
    with pytest.raises(InvalidInput) as err:
        scenario.load(f, profiles=("none",))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{f}: workloads[0]")
    return msg


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('{ exec_prerun = "touch /tmp/x" }', "options.exec_prerun: not allowed: it runs a command"),
        ('{ exec_postrun = "/bin/sh" }', "options.exec_postrun: not allowed: it runs a command"),
        ('{ trigger_cmd = "reboot" }', "options.trigger_cmd: not allowed: it runs a command"),
        ('{ filename = "/dev/vda" }', "options.filename: not allowed: it names a file or device"),
        ('{ directory = "/" }', "options.directory: not allowed"),
        ('{ filename_format = "/etc/$jobname" }', "options.filename_format: not allowed"),
        ('{ write_iolog = "/etc/passwd" }', "options.write_iolog: not allowed: it reads or writes a file"),
        ('{ ioscheduler = "none" }', "options.ioscheduler: not allowed"),
        ("{ unlink = 1 }", "options.unlink: not allowed: it deletes files"),
        ("{ made_up = 1 }", "options.made_up: not in the allow-list of fio options"),
        ('{ iodepth = "4\\nexec_prerun=id" }', "options.iodepth: the value holds a line break or NUL"),
        ('{ bs = "4k\\u0000" }', "options.bs: the value holds a line break or NUL"),
        ('{ iodepth = "many" }', "options.iodepth: 'many' must be an integer from 1 to 65536"),
        ('{ random_distribution = "zipf:x" }', "options.random_distribution: 'zipf:x' must be random, zipf"),
        ('{ "exec_prerun " = "id" }', "options.'exec_prerun ': not in the allow-list"),
    ],
)
def test_options_outside_the_allow_list_are_refused(tmp_path: Path, options: str, expected: str) -> None:
    assert expected in refused(tmp_path, RW + f"options = {options}\n")


def test_ioengine_from_a_list(tmp_path: Path) -> None:
    assert "ioengine: the value holds a line break" in refused(
        tmp_path, RW + 'ioengine = "libaio\\nexec_prerun=id"\n'
    )
    assert "ioengine: 'external:/tmp/x.so' must be one of libaio" in refused(
        tmp_path, RW + 'ioengine = "external:/tmp/x.so"\n'
    )
    assert "ioengine: 'exec' must be one of" in refused(tmp_path, RW + 'ioengine = "exec"\n')


def test_allowed_options_pass(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    opts = (
        '{ random_distribution = "zipf:1.2", norandommap = 1, rate_iops = 500, bssplit = "4k/60:64k/40", '
        'ramp_time = "2s", percentile_list = "50:99:99.9", offset = "10%", cpus_allowed = "0-1" }'
    )
    f.write_text(HEAD + RW + f'ioengine = "io_uring"\noptions = {opts}\n')
    (cond,) = scenario.load(f, profiles=("none",)).conditions
    assert cond.workload.options["random_distribution"] == "zipf:1.2"


def test_job_file_lines_are_checked_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "j.fio").write_text(
        "; mine\n[global]\nbs=4k\n\n[j]\nrw=randread\ntime_based\nfilename=/dev/vda\n"
    )
    msg = refused(tmp_path, JOB.format(name="j.fio"))
    assert "job_file j.fio: line 8: filename: not allowed: it names a file or device (the stack" in msg
    for line, why in (
        ("exec_prerun=/bin/sh", "line 2: exec_prerun: not allowed: it runs a command"),
        ("include /etc/fio.d/x", "line 2: include: not allowed: it includes another file"),
        ("iodepth", "line 2: iodepth: needs a value"),
        ("iodepth=lots", "line 2: iodepth: the value must be an integer"),
        ("[bad name!]", "line 2: not a job section name"),
    ):
        (tmp_path / "j.fio").write_text(f"[j]\n{line}\nrw=read\n")
        assert why in refused(tmp_path, JOB.format(name="j.fio")), line
    (tmp_path / "j.fio").write_text("[j]\r\nrw=read\n")
    assert "holds a NUL or a carriage return" in refused(tmp_path, JOB.format(name="j.fio"))


def test_job_file_errors_never_quote_its_content(tmp_path: Path) -> None:
    secret = "root:$y$j9T$Zq9secret:19000:0:99999:7:::"
    (tmp_path / "x.fio").write_text(f"{secret}\n")
    assert "Zq9" not in refused(tmp_path, JOB.format(name="x.fio"))
    (tmp_path / "x.fio").write_text("[j]\nbs=Zq9secret\n")
    assert "Zq9" not in refused(tmp_path, JOB.format(name="x.fio"))


def test_job_file_must_be_a_regular_file_inside_the_scenario_dir(tmp_path: Path) -> None:
    assert "'/etc/shadow' must be a path inside the scenario's directory" in refused(
        tmp_path, JOB.format(name="/etc/shadow")
    )
    assert "must be a path inside" in refused(tmp_path, JOB.format(name="../x.fio"))
    assert "file not found: nothere.fio" in refused(tmp_path, JOB.format(name="nothere.fio"))
    os.mkfifo(tmp_path / "fifo.fio")  # refused at once: opened without blocking
    assert "fifo.fio: fio job file is a FIFO" in refused(tmp_path, JOB.format(name="fifo.fio"))
    (tmp_path / "d.fio").mkdir()
    assert "d.fio: fio job file is a directory" in refused(tmp_path, JOB.format(name="d.fio"))
    (tmp_path / "real.fio").write_text("[j]\nrw=read\n")
    (tmp_path / "link.fio").symlink_to(tmp_path / "real.fio")
    assert "link.fio is a symbolic link" in refused(tmp_path, JOB.format(name="link.fio"))
    (tmp_path / "big.fio").write_text("; x\n" * 20000)
    assert "big.fio: fio job file is too large" in refused(tmp_path, JOB.format(name="big.fio"))
    (tmp_path / "l1.fio").write_bytes(b"[j]\nrw=read\n; caf\xe9\n")
    assert "l1.fio: fio job file is not UTF-8 text" in refused(tmp_path, JOB.format(name="l1.fio"))


def test_render_checks_again_what_runs() -> None:
    w = Workload(name="w", job_file="j.fio")
    with pytest.raises(InvalidInput, match=r"workloads\.w\.job_file: line 2: exec_prerun: not allowed"):
        fiojob.render(w, "/dev/x", log_dir=None, job_file_text="[j]\nexec_prerun=id\n")
    bad = Workload(name="w", rw="read", options={"filename": "/dev/vda"})
    with pytest.raises(InvalidInput, match=r"workloads\.w\.options\.filename: not allowed"):
        fiojob.render(bad, "/dev/x", log_dir=None)
    ok = fiojob.render(Workload(name="w", rw="read", options={"norandommap": 1}), "/dev/x", log_dir=None)
    assert "norandommap=1" in ok.splitlines()


def test_suite_validate_refuses_such_a_file(tmp_path: Path) -> None:
    from skycache.cli.main import app

    f = tmp_path / "bad.toml"
    f.write_text(HEAD + RW + 'options = { exec_prerun = "touch /tmp/skycache-pwned" }\n')
    result = CliRunner().invoke(app, ["suite", "validate", str(f)])
    assert result.exit_code == 2
    assert "options.exec_prerun: not allowed: it runs a command" in result.output
    assert ": ok" not in result.output


def test_the_docs_list_exactly_the_allow_list() -> None:
    text = DOCS.read_text()
    section = text[text.index("### fio options") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section else len(section)]
    listed = set(re.findall(r"`([a-z_0-9]+)`", section))
    assert set(fioopts.ALLOWED) <= listed, sorted(set(fioopts.ALLOWED) - listed)
    assert set(fioopts.REFUSED) <= listed, sorted(set(fioopts.REFUSED) - listed)
    assert set(fioopts.IOENGINES) <= listed
