"""The examples of issue 18, one test per family: each ends in one ``skycache: error:`` line naming the
bad value, a non-zero exit and no change on disk (tests/unit/_hostile.py says how that is checked).

Only ``--dry-run`` and validation verbs run (``bench run`` and ``sim run`` only where the bad value must
stop them before any work; the runner's changing calls are blocked throughout).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _hostile import SCENARIOS, World, invoke, toml_document, world

from skycache.runner import SystemRunner

DATA = Path(__file__).parent / "data"
BOOT_STORM = SCENARIOS / "sim-boot-storm.toml"
CALIBRATION = SCENARIOS / "sim-calibration-example.toml"
FIFTY_NINES = "9" * 50


def _sim_copy(w: World, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a sim scenario (with the files it refers to) after ``edit`` of its data."""
    for f in ("sim-calibration-example.toml", "sim-sample.swf"):
        (w.files / f).write_bytes((SCENARIOS / f).read_bytes())
    data = tomllib.loads((SCENARIOS / name).read_text())
    edit(data)
    return w.text(f"edited-{name}", toml_document(data))


def _bench_copy(w: World, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = tomllib.loads((SCENARIOS / name).read_text())
    edit(data)
    return w.text(name, toml_document(data))


# -- sizes and numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["image", "create", "r1/new", "--size", FIFTY_NINES, "--dry-run"], FIFTY_NINES),
        (["repo", "init", "r2", "--loop", FIFTY_NINES, "--dry-run"], FIFTY_NINES),
        (["attach", "r1/img", "--portal", "127.0.0.1:\u00b2", "--dry-run"], "\u00b2"),
        (["disk", "clone", "vm1", "r1/base", "--portal", "127.0.0.1:\u00b2", "--dry-run"], "\u00b2"),
        (["export", "add", "r1/img", "--listen", "127.0.0.1:" + "1" * 5000, "--dry-run"], "127.0.0.1:111"),
        (["attach", "r1/img", "--portal", "127.0.0.1:" + "1" * 5000, "--dry-run"], "127.0.0.1:111"),
        (["net", "shape", "gbe-2009", "--port", "1" * 5000, "--dry-run"], "111"),
        (["sim", "run", str(BOOT_STORM), "--seed", "-1", "--no-plots"], "-1"),
        (["sim", "run", str(BOOT_STORM), "--seed", "1" * 28, "--no-plots"], "1" * 28),
    ],
    ids=[
        "size-50-digits",
        "loop-50-digits",
        "attach-portal-superscript",
        "clone-portal-superscript",
        "listen-5000-digit-port",
        "portal-5000-digit-port",
        "shape-5000-digit-port",
        "seed-negative",
        "seed-28-digits",
    ],
)
def test_sizes_and_numbers(args: list[str], needle: str) -> None:
    with world(repo=True) as w:
        extra = ["--out", str(w.sys / "out")] if args[:2] == ["sim", "run"] else []
        result = invoke(w, [*args, *extra], timeout_s=30)
    bad = result.problems(needle=needle)
    assert not bad, result.explain(bad)


@pytest.mark.parametrize("where", ["sim", "bench"])
def test_scenario_size_of_inf(where: str) -> None:
    with world() as w:
        if where == "sim":
            path = _sim_copy(w, "sim-boot-storm.toml", lambda d: d["images"].update(working_set="inf MiB"))
            args = ["sim", "check", str(path), "-c", str(CALIBRATION)]
        else:
            path = _bench_copy(w, "quickstart.toml", lambda d: d.update(image_size="inf"))
            args = ["suite", "validate", str(path)]
        result = invoke(w, args)
    bad = result.problems(needle="inf")
    assert not bad, result.explain(bad)


# -- files ---------------------------------------------------------------------------------------------

FILE_KINDS: dict[str, Callable[[World], str]] = {
    "directory": lambda w: str(w.directory()),
    "binary": lambda w: str(w.binary()),
    "latin-1": lambda w: str(w.latin1()),
    "fifo": lambda w: str(w.fifo()),
    "proc-self-mem": lambda _w: "/proc/self/mem",
    "symlink-loop": lambda w: str(w.symlink_loop()),
    "deeply-nested-arrays": lambda w: str(w.deep_nesting()),
    "embedded-nul": lambda w: str(w.embedded_nul()),
}
FILE_VERBS: dict[str, Callable[[str], list[str]]] = {
    "bench-scenario": lambda p: ["suite", "validate", p],
    "sim-scenario": lambda p: ["sim", "check", p, "-c", str(CALIBRATION)],
    "calibration": lambda p: ["sim", "check", str(BOOT_STORM), "-c", p],
}


@pytest.mark.parametrize("verb", sorted(FILE_VERBS))
@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_files(kind: str, verb: str) -> None:
    with world() as w:
        path = FILE_KINDS[kind](w)
        # a reader that refuses a FIFO does so at once; one that opens it blocks until the deadline
        result = invoke(w, FILE_VERBS[verb](path), timeout_s=2 if kind == "fifo" else 5)
    bad = result.problems(needle=path)
    assert not bad, result.explain(bad)


# -- state and result directories -------------------------------------------------------------------

STATE_KINDS: dict[str, Callable[[World], object]] = {
    "state-dir-is-a-file": lambda w: w.state.write_text("not a directory\n"),
    "registry-corrupt-json": lambda w: _registry(w, b'{"r1": '),
    "registry-json-list": lambda w: _registry(w, b'["r1"]\n'),
    "registry-binary": lambda w: _registry(w, b"\x00\xff\xfe" + bytes(range(256))),
    "registry-directory": lambda w: _registry(w, None),
}


def _registry(w: World, content: bytes | None) -> None:
    w.state.mkdir(mode=0o700)
    path = w.state / "file-repos.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)


@pytest.mark.parametrize(
    "args",
    [["repo", "list"], ["repo", "init", "r2", "--backend", "file", "--dir", "DIR", "--dry-run"]],
    ids=["repo-list", "repo-init-dry-run"],
)
@pytest.mark.parametrize("kind", sorted(STATE_KINDS))
def test_state_directory(kind: str, args: list[str]) -> None:
    with world() as w:
        STATE_KINDS[kind](w)
        target = w.state if kind == "state-dir-is-a-file" else w.state / "file-repos.json"
        result = invoke(w, [str(w.files / "r2") if a == "DIR" else a for a in args])
    bad = result.problems(exit_code=None, needle=str(target))
    assert not bad, result.explain(bad)


def _run_dir(w: World, edit: Callable[[Path], object]) -> Path:
    """A copy of a real bench run directory (tidy.parquet + manifest.json), then ``edit`` of it."""
    run = w.files / "run"
    run.mkdir()
    for f in ("tidy.parquet", "manifest.json"):
        (run / f).write_bytes((DATA / "sim" / "fio-run" / f).read_bytes())
    edit(run)
    return run


RUN_KINDS: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated-tidy-parquet": (
        lambda r: (r / "tidy.parquet").write_bytes((r / "tidy.parquet").read_bytes()[:100]),
        "tidy.parquet",
    ),
    "corrupt-manifest": (lambda r: (r / "manifest.json").write_text('{"run_id": '), "manifest.json"),
    "list-manifest": (
        lambda r: (r / "manifest.json").write_text('["not", "a", "manifest"]\n'),
        "manifest.json",
    ),
}


@pytest.mark.parametrize("verb", ["show", "compare", "plots"])
@pytest.mark.parametrize("kind", sorted(RUN_KINDS))
def test_result_directory(kind: str, verb: str) -> None:
    edit, needle = RUN_KINDS[kind]
    with world() as w:
        run = _run_dir(w, edit)
        result = invoke(w, ["bench", verb, str(run)])
    bad = result.problems(exit_code=None, needle=needle)
    assert not bad, result.explain(bad)


def test_read_only_run_directory_for_bench_plots() -> None:
    with world() as w:
        run = _run_dir(w, lambda r: None)
        run.chmod(0o555)
        result = invoke(w, ["bench", "plots", str(run)])
    bad = result.problems(exit_code=None, needle=str(run))
    assert not bad, result.explain(bad)


OUT_KINDS: dict[str, Callable[[World], str]] = {
    "a-file": lambda w: str(w.text("out-file", "a file\n")),
    "under-a-file": lambda w: str(w.under_a_file("out-parent")),
    "read-only": lambda w: _read_only_dir(w),
    "under-proc": lambda _w: "/proc/self/skycache-out",
}


def _read_only_dir(w: World) -> str:
    # (root could write into it anyway: skycache refuses a directory without any write bit for root too)
    d = w.directory("read-only-out")
    d.chmod(0o555)
    return str(d)


@pytest.mark.parametrize("verb", ["bench run", "sim run"])
@pytest.mark.parametrize("kind", sorted(OUT_KINDS))
def test_out_directory(kind: str, verb: str) -> None:
    with world() as w:
        out = OUT_KINDS[kind](w)
        if verb == "bench run":
            # host mode: were --out not checked first, the first change command would be blocked
            args = ["bench", "run", str(SCENARIOS / "quickstart.toml"), "--where", "host", "--out", out]
        else:
            args = ["sim", "run", str(BOOT_STORM), "--out", out, "--no-plots"]
        result = invoke(w, args, timeout_s=30)
    bad = result.problems(exit_code=None, needle=out)
    assert not bad, result.explain(bad)


# -- values the model cannot take --------------------------------------------------------------------


def _swf_with_processors(w: World, processors: int) -> None:
    text = (SCENARIOS / "sim-sample.swf").read_text().splitlines()
    jobs = [i for i, line in enumerate(text) if line.strip() and not line.lstrip().startswith(";")]
    fields = text[jobs[0]].split()
    fields[4] = str(processors)  # field 5: allocated processors
    text[jobs[0]] = " ".join(fields)
    (w.files / "sim-sample.swf").write_text("\n".join(text) + "\n")


MODEL_CASES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "infinite-nic": ("sim-boot-storm.toml", lambda d: d["cluster"].update(nic="inf Gbit/s"), "inf"),
    "infinite-disk-rate": (
        "sim-boot-storm.toml",
        lambda d: d["repository"].update(read_bw="inf MiB/s"),
        "inf",
    ),
    "one-ns-sample-interval": (
        "sim-boot-storm.toml",
        lambda d: d["scenario"].update(sample_interval="1 ns"),
        "1 ns",
    ),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_values_the_model_cannot_take(case: str) -> None:
    name, edit, needle = MODEL_CASES[case]
    with world() as w:
        path = _sim_copy(w, name, edit)
        result = invoke(w, ["sim", "check", str(path), "-c", str(CALIBRATION)])
    bad = result.problems(needle=needle)
    assert not bad, result.explain(bad)


def test_infinite_disk_rate_in_the_calibration() -> None:
    with world() as w:
        data = tomllib.loads(CALIBRATION.read_text())
        data["repository"]["lvm"]["read_bw"] = "inf MiB/s"
        cal = w.text("calibration.toml", toml_document(data))
        result = invoke(w, ["sim", "check", str(BOOT_STORM), "-c", str(cal)])
    bad = result.problems(needle="inf")
    assert not bad, result.explain(bad)


def test_swf_trace_with_10_to_the_12_processors() -> None:
    with world() as w:
        path = _sim_copy(w, "sim-swf-trace.toml", lambda d: None)
        _swf_with_processors(w, 10**12)
        result = invoke(w, ["sim", "check", str(path), "-c", str(CALIBRATION)])
    bad = result.problems(needle=str(10**12))
    assert not bad, result.explain(bad)


# -- disks at risk in --dry-run -------------------------------------------------------------------------


def _root_disk() -> str:
    """The disk holding / on this machine (the issue's /dev/vda), or skip."""
    source = SystemRunner().query(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
    if not source.startswith("/dev/"):
        pytest.skip(f"/ is on {source!r}, not a disk")
    parent = SystemRunner().query(["lsblk", "-n", "-d", "-o", "PKNAME", source]).stdout.strip()
    return f"/dev/{parent}" if parent else source


@pytest.mark.parametrize(
    ("args", "device"),
    [
        (["repo", "init", "r2", "--device", "ROOT", "--dry-run"], "ROOT"),
        (["repo", "init", "r2", "--device", "/dev/null", "--dry-run"], "/dev/null"),
        (["node", "init", "--cache-vg", "c1", "--device", "/dev/nosuch", "--dry-run"], "/dev/nosuch"),
    ],
    ids=["repo-init-root-disk", "repo-init-dev-null", "node-init-nosuch"],
)
def test_disks_at_risk(args: list[str], device: str) -> None:
    if device == "ROOT":
        device = _root_disk()
    with world() as w:
        result = invoke(w, [device if a == "ROOT" else a for a in args])
    bad = result.problems(exit_code=None, needle=device)
    if "pvcreate" in result.stdout:
        bad.append("the dry run planned pvcreate on it")
    assert not bad, result.explain(bad)


# -- scenario fio options --------------------------------------------------------------------------


def _workload(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        w = d["workloads"][0]
        if key == "job_file":
            w.pop("rw")
        if key in ("exec_prerun", "filename"):
            w.setdefault("options", {})[key] = value
        else:
            w[key] = value

    return edit


FIO_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "exec_prerun": (_workload("exec_prerun", "touch /tmp/skycache-pwned"), "exec_prerun"),
    "filename-dev-vda": (_workload("filename", "/dev/vda"), "filename"),
    "newline-in-ioengine": (
        _workload("ioengine", "libaio\nexec_prerun=touch /tmp/skycache-pwned"),
        "ioengine",
    ),
    "job-file-etc-shadow": (_workload("job_file", "/etc/shadow"), "/etc/shadow"),
}


@pytest.mark.parametrize("case", sorted(FIO_CASES))
def test_scenario_fio_options(case: str) -> None:
    edit, needle = FIO_CASES[case]
    with world() as w:
        path = _bench_copy(w, "quickstart.toml", edit)
        result = invoke(w, ["suite", "validate", str(path)])
    bad = result.problems(needle=needle)
    assert not bad, result.explain(bad)


# -- names with a trailing newline ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["repo", "init", "abc\n", "--loop", "1G", "--dry-run"], repr("abc\n")),
        (["node", "init", "--cache-vg", "abc\n", "--loop", "1G", "--dry-run"], repr("abc\n")),
        (["net", "isolate", "abc\n", "--deny", "198.18.3.0/24", "--dry-run"], repr("abc\n")),
        (
            ["net", "isolate", "skycache-abc\n", "--deny", "198.18.3.0/24", "--dry-run"],
            repr("skycache-abc\n"),
        ),
    ],
    ids=["vg", "cache-vg", "iptables-interface", "iptables-netns"],
)
def test_names_with_a_trailing_newline(args: list[str], needle: str) -> None:
    with world() as w:
        result = invoke(w, args)
    bad = result.problems(needle=needle)
    if "plan:" in result.stdout:
        bad.append("a plan was printed")
    assert not bad, result.explain(bad)


# -- state directory mode --------------------------------------------------------------------------------


def test_state_directory_writable_by_others_is_refused() -> None:
    def open_state(w: World) -> None:
        w.file_repo()
        w.state.chmod(0o777)

    with world() as w:
        open_state(w)
        result = invoke(w, ["repo", "list"])
        mode = oct(w.state.stat().st_mode & 0o777)
    bad = result.problems(exit_code=None, needle=str(w.state))
    assert not bad, result.explain(bad)
    assert mode == "0o777"  # refused, not silently "fixed"


def test_state_directory_is_created_0700_under_umask_000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The state directory is made by skycache-agent write-file (state.write_command), in-process on
    # the local target: here straight into a temporary state directory, with the umask at 000.
    from skycache import agent, state

    monkeypatch.setenv("SKYCACHE_STATE_DIR", str(tmp_path / "state"))
    target = state.secrets_dir() / "x.chap"
    old = os.umask(0)
    try:
        argv = state.write_command(target, "secret").argv
        done = agent.run_inprocess(list(argv[1:]), "secret")
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "secrets").stat().st_mode & 0o777 == 0o700
    assert Path(str(target)).stat().st_mode & 0o777 == 0o600
