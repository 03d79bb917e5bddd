"""where = "hosts": host entries, fio's client argv, client-mode JSON (recorded real fio 3.33 output in
tests/unit/data/bench/hosts/), and real runs against fio servers started on 127.0.0.1 by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_fixtures import TINY_FILE_STACK_AND_JOBS
from fakes import FakeRunner

import skycache.bench
from skycache.bench import fioparse, orchestrate, remote, scenario, tidy
from skycache.errors import InvalidInput
from skycache.runner import CommandError, Completed, SshTarget, SystemRunner

DATA = Path(__file__).parent / "data" / "bench" / "hosts"
PROFILES = ("none", "gbe-2009", "10gbe")

SCENARIO = (
    """
name = "hosts-tiny"
where = "hosts"
hosts = {hosts}
repetitions = {reps}
image_size = "8M"
"""
    + TINY_FILE_STACK_AND_JOBS
)


def write(tmp_path: Path, hosts: list[str], reps: int = 1) -> Path:
    f = tmp_path / "s.toml"
    f.write_text(SCENARIO.format(hosts="[" + ", ".join(f'"{h}"' for h in hosts) + "]", reps=reps))
    return f


# -- host entries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "name", "port"),
    [
        ("node1", "node1", 8765),
        ("node1.example.org:9000", "node1.example.org", 9000),
        ("10.0.0.7:8799", "10.0.0.7", 8799),
        ("127.0.0.1", "127.0.0.1", 8765),
        ("::1", "::1", 8765),
        ("[fe80::1]:8800", "fe80::1", 8800),
    ],
)
def test_good_host_entries(entry: str, name: str, port: int) -> None:
    assert remote.parse_host(entry) == remote.Host(name, port)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("", "empty host"),
        ("node1:", "port ''"),
        (":8765", "empty host name"),
        ("node1:http", "port 'http'"),
        ("node1:0", "port '0'"),
        ("node1:70000", "port '70000'"),
        ("node 1", "whitespace"),
        ("-node", "not a host name"),
        ("user@node1", "not a host name"),
        ("a:b:c", "not an IPv6 address"),
        ("[::1]", "use [ipv6]:port"),
        ("[zz::1]:8765", "not an IPv6 address"),
    ],
)
def test_bad_host_entry_is_one_line_naming_file_key_and_value(
    tmp_path: Path, entry: str, problem: str
) -> None:
    f = write(tmp_path, ["node0", entry])
    with pytest.raises(InvalidInput) as exc:
        scenario.load(f, profiles=PROFILES)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}: hosts[1]: {entry!r}: ") and problem in msg, msg


def test_duplicate_fio_server_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path, ["node1", "node1:8765"])
    with pytest.raises(InvalidInput, match=r"hosts\[1\]: 'node1:8765': the same fio server as hosts\[0\]"):
        scenario.load(f, profiles=PROFILES)


def test_fio_address_and_runner() -> None:
    assert remote.parse_host("node1").fio_address == "node1,8765"
    assert remote.parse_host("10.0.0.7:8799").fio_address == "10.0.0.7,8799"
    assert remote.parse_host("[::1]:8800").fio_address == "ip6:::1,8800"
    assert remote.parse_host("[::1]:8800").label == "[::1]:8800"
    local = SystemRunner()
    for entry in ("localhost", "127.0.0.1:8799", "::1"):
        assert remote.runner_for(remote.parse_host(entry), local) is local
    r = remote.runner_for(remote.parse_host("node1:9000"), local)
    assert isinstance(r.target, SshTarget) and r.target.host == "node1" and r.target.port is None


# -- fio's argv --------------------------------------------------------------------------------


def test_client_argv_pairs_each_host_with_its_job_file(tmp_path: Path) -> None:
    pairs = [
        (remote.parse_host("node1"), tmp_path / "a.fio"),
        (remote.parse_host("[::1]:9"), tmp_path / "b.fio"),
    ]
    assert remote.client_argv(pairs, tmp_path / "o.json") == [
        "fio", "--output-format=json+", f"--output={tmp_path / 'o.json'}",
        "--client=node1,8765", str(tmp_path / "a.fio"),
        "--client=ip6:::1,9", str(tmp_path / "b.fio"),
    ]  # fmt: skip


class Recorder(SystemRunner):
    """Records what would run; fio "fails" without output (like an unreachable server)."""

    def __init__(self) -> None:
        super().__init__()
        self.argvs: list[list[str]] = []

    def run(self, argv, **kwargs):  # type: ignore[no-untyped-def,override]
        self.argvs.append([str(a) for a in argv])
        raise CommandError([str(a) for a in argv], 1, "", "fio: connect: Connection refused")

    def query(self, argv, **kwargs):  # type: ignore[no-untyped-def,override]
        return Completed(tuple(str(a) for a in argv), 0, "", "")


def test_the_orchestrator_runs_one_local_fio_client_through_the_runner(tmp_path: Path) -> None:
    sc = scenario.load(write(tmp_path, ["127.0.0.1:8799", "node2"]), profiles=PROFILES)
    rec = Recorder()
    orch = orchestrate.Orchestrator(
        sc, orchestrate.RunOptions(where="hosts"), rec, orchestrate.NullReporter()
    )
    assert [s.runner is rec for s in orch.sites] == [True, False]
    jobs = [tmp_path / "j1.fio", tmp_path / "j2.fio"]
    with pytest.raises(CommandError, match="Connection refused"):
        orch._fio(jobs, tmp_path / "o.json", 60)
    assert rec.argvs == [
        ["fio", "--output-format=json+", f"--output={tmp_path / 'o.json'}",
         "--client=127.0.0.1,8799", str(jobs[0]), "--client=node2,8765", str(jobs[1])]
    ]  # fmt: skip


# -- client-mode JSON --------------------------------------------------------------------------


def test_parse_one_client() -> None:
    raw = (DATA / "client-1host.json").read_text()
    assert '"client_stats"' in raw and raw.startswith("<")  # fio's progress text before the document
    r = fioparse.parse(raw).check()
    (job,) = r.jobs
    assert (job.name, job.hostname, job.port, job.host) == ("randrw", "127.0.0.1", 8799, "127.0.0.1:8799")
    assert set(job.directions) == {"read", "write"} and job.directions["read"].iops > 0
    assert job.elapsed_s == pytest.approx(2.0, abs=0.5)  # from job_runtime (ms): no "elapsed" in client mode


def test_parse_two_clients_one_job_per_host_plus_fio_aggregate() -> None:
    r = fioparse.parse((DATA / "client-2hosts.json").read_text()).check()
    assert [j.host for j in r.jobs] == ["127.0.0.1:8799", "127.0.0.1:8798", fioparse.ALL_CLIENTS]
    per_host = sum(j.directions["read"].io_bytes for j in r.jobs[:2])
    assert r.jobs[2].directions["read"].io_bytes == per_host  # the aggregate sums the hosts


def test_tidy_rows_carry_the_host() -> None:
    r = fioparse.parse((DATA / "client-2hosts.json").read_text())
    rows = tidy.rows_for({"status": "ok", "rep": 1, "hosts": ["127.0.0.1:8799", "127.0.0.1:8798"]}, r)
    assert {(row["host"], row["direction"]) for row in rows} == {
        (h, d) for h in ("127.0.0.1:8799", "127.0.0.1:8798", "All clients") for d in ("read", "write")
    }
    failed = tidy.rows_for({"status": "failed", "hosts": ["a:1", "b:2"]}, None)
    assert failed[0]["host"] == "a:1, b:2"


def test_restore_log_names(tmp_path: Path) -> None:
    (tmp_path / "randread-iodepth-1-numjobs-1_iops.1.log.127.0.0.1").write_text("x")
    (tmp_path / "randread-iodepth-1-numjobs-1_lat.1.log.::1").write_text("x")
    remote.restore_log_names(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "randread-iodepth-1-numjobs-1_iops.1.log",
        "randread-iodepth-1-numjobs-1_lat.1.log",
    ]


# -- real runs against fio servers on 127.0.0.1 --------------------------------------------------

needs_fio = pytest.mark.skipif(
    shutil.which("fio") is None, reason="fio not installed (needed for fio --server)"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    # /proc/net/tcp: local address 0100007F:<port hex>, state 0A = LISTEN (no connection to the server)
    want = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in lines)


@pytest.fixture
def fio_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Two fio servers listening on 127.0.0.1 only, stopped after the test. The file repositories
    the runs make are registered in a state directory of the test's own, not the host's."""
    monkeypatch.setenv("SKYCACHE_STATE_DIR", str(tmp_path / "state"))
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for i in range(2):
            port = _free_port()
            log = (tmp_path / f"fio-server-{i}.log").open("wb")
            proc = subprocess.Popen(
                ["fio", f"--server=ip:127.0.0.1,{port}"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
            )
            procs.append((proc, port))
        deadline = time.monotonic() + 10
        while not all(_listening(p) for _, p in procs):
            if time.monotonic() > deadline:
                pytest.fail("fio --server did not start listening")
            time.sleep(0.1)
        yield [p for _, p in procs]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@needs_fio
def test_hosts_run_end_to_end(tmp_path: Path, fio_servers: list[int]) -> None:
    host = f"127.0.0.1:{fio_servers[0]}"
    sc = scenario.load(write(tmp_path, [host], reps=2), profiles=PROFILES)
    out = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=tmp_path / "results", where="hosts", workdir=tmp_path / "work")
    )
    assert out.failed == 0 and out.ok == 4, out.errors
    run = out.run.path
    manifest = out.run.manifest()
    assert manifest["status"] == "complete"
    assert manifest["environment"]["where"] == "hosts" and manifest["hosts"] == [host]
    assert manifest["host_environment"][host]["fio_version"].startswith("fio-")
    # fio-plot's layout as in host mode: the JSON per repetition, logs under their plain names
    for rep in (1, 2):
        d = run / f"fio/rep-{rep}/randread/4k"
        assert '"client_stats"' in (d / "randread-1-1.json").read_text()
        assert (d / "randread-iodepth-1-numjobs-1_iops.1.log").is_file()
        assert not list(d.glob("*.log.*"))  # fio's client suffix (.log.<server>) taken off
        assert (run / f"jobs/rep-{rep}/randread/4k/randread-1-1.fio").is_file()
    df = skycache.bench.load(run)
    assert (df["status"] == "ok").all() and (df["iops"] > 0).all()
    assert set(df["host"]) == {host} and set(df["workload"]) == {"randread", "randwrite"}
    assert not list((tmp_path / "work").glob("skycache-*"))  # the image is removed after the run


@needs_fio
def test_hosts_run_on_two_servers(tmp_path: Path, fio_servers: list[int]) -> None:
    hosts = [f"127.0.0.1:{p}" for p in fio_servers]
    sc = scenario.load(write(tmp_path, hosts), profiles=PROFILES)
    out = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=tmp_path / "r", where="hosts", workdir=tmp_path / "w")
    )
    assert out.failed == 0 and out.ok == 2, out.errors
    d = out.run.path / "fio/rep-1/randread/4k"
    for h in hosts:
        safe = remote.parse_host(h).safe
        assert (d / safe / "randread-iodepth-1-numjobs-1_iops.1.log").is_file()  # each server's logs
        assert (out.run.path / f"jobs/rep-1/randread/4k/randread-1-1.{safe}.fio").is_file()
    df = skycache.bench.load(out.run.path)
    assert set(df["host"]) == {*hosts, "All clients"}
    # each server got its own image: the job files name different devices
    jobs = sorted((out.run.path / "jobs/rep-1/randread/4k").glob("*.fio"))
    assert len({ln for j in jobs for ln in j.read_text().splitlines() if ln.startswith("filename=")}) == 2


@needs_fio
def test_unreachable_server_fails_the_condition_and_the_run_goes_on(tmp_path: Path) -> None:
    sc = scenario.load(write(tmp_path, [f"127.0.0.1:{_free_port()}"]), profiles=PROFILES)
    out = orchestrate.run_scenario(
        sc, orchestrate.RunOptions(results=tmp_path / "r", where="hosts", workdir=tmp_path / "w")
    )
    assert out.ok == 0 and out.failed == 2, out.errors  # both conditions tried, both recorded
    records = list(out.run.records())
    assert [r["status"] for r in records] == ["failed", "failed"] and all(r["error"] for r in records)
    assert out.run.manifest()["status"] == "partial"


# -- the workspace on a fio server reached over ssh ----------------------------------------------


def test_remote_workspace_makes_its_files_through_the_runner_and_never_uses_lab_disks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skycache.bench import stacks

    # Even inside the lab, a remote host's workspace must not take this machine's scratch disks.
    monkeypatch.setenv("SKYCACHE_IN_LAB", "1")
    monkeypatch.setenv("SKYCACHE_LAB_DISKS", "/dev/vda /dev/vdb")
    sc = scenario.load(write(tmp_path, ["node1"]), profiles=PROFILES)
    r = FakeRunner(SshTarget("node1"), simulate_files=True)
    r.reply("df", stdout="1B-blocks Avail\n1000000000 900000000\n")
    existed = stacks.SCRATCH_MOUNT.exists()
    ws = stacks.Workspace.prepare(r, list(sc.model.stacks), "8M", stacks.SCRATCH_MOUNT)
    img = str(stacks.SCRATCH_MOUNT / "benchf" / "skycache-img.img")
    ran = r.ran()
    assert ran[0] == f"mkdir -p -- {stacks.SCRATCH_MOUNT}"
    assert f"truncate -s {8 * 2**20} {img}" in ran  # the file image, made there by the library
    assert not any("/dev/vd" in line for line in r.ran() + r.ran("query"))  # no lab disk touched
    assert stacks.SCRATCH_MOUNT.exists() == existed  # nothing made on this machine
    assert ws.images == ["benchf/img"]
