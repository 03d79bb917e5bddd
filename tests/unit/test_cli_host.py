"""``skycache --host NAME [--ssh-config FILE] VERB``: the storage, node and net verbs on another host.

The real CLI and the real SystemRunner run in this process; only the start of a process
(``skycache.runner._run_in_group``) is replaced, by a recorder that answers as an ssh host would. So
what is checked is the exact local argv the runner builds (``ssh -F FILE ... NAME -- env LC_ALL=C
...``) and what it hands to ssh's stdin; no ssh runs and no traffic leaves the machine.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from boundary import assert_one_error, skycache
from test_remote_target import lv, no_local_access, report, vg

from skycache import runner as runner_mod
from skycache.cli import hosts
from skycache.storage import image
from skycache.storage.kernel import iscsi, lio

__all__ = ["no_local_access"]  # the fixture, imported for the tests below

PREFIX = "iqn.2026-11.org.skycache"
MiB = 1 << 20
SECRET = "0123456789abcdef01234567"


@dataclass
class Spawned:
    argv: list[str]
    stdin: str | None

    @property
    def remote(self) -> list[str]:
        """The command on the host: ssh's last word split back, without `env VAR=...`."""
        words = shlex.split(self.argv[-1])
        assert words[:2] == ["env", "LC_ALL=C"], words
        i = 2
        while "=" in words[i] and not words[i].startswith("-"):
            i += 1
        return words[i:]


Answer = Callable[[list[str]], tuple[int, str, str]]


@dataclass
class Processes:
    """Every process the runner starts, answered by ``answer`` (remote argv -> rc, stdout, stderr)."""

    answer: Answer
    spawned: list[Spawned] = field(default_factory=list)

    def __call__(
        self, argv: list[str], stdin: str | None, env: dict[str, str], timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        s = Spawned(list(argv), stdin)
        self.spawned.append(s)
        rc, out, err = self.answer(s.remote if argv[0] == "ssh" else list(argv))
        return subprocess.CompletedProcess(argv, rc, out, err)

    def remote_lines(self) -> list[str]:
        return [shlex.join(s.remote) for s in self.spawned]


def unreachable(argv: list[str]) -> tuple[int, str, str]:
    return 255, "", "ssh: connect to host 10.77.0.1 port 22: Connection refused\n"


def a_repo_host(argv: list[str]) -> tuple[int, str, str]:
    """Answers of a repository host with VG r1 and a read-only base r1/base, nothing exported."""
    word = argv[0]
    if word == "vgs":
        return 0, report("vg", [vg("r1", "skycache,skycache-repo")]), ""
    if word == "lvs":
        return 0, report("lv", [lv("r1", "base", 64 * MiB, attr="-ri-a-----")]), ""
    if word == "pvs":
        return 0, report("pv", []), ""
    if word == "losetup" and "--find" in argv:
        return 0, "/dev/loop0\n", ""
    if word == "losetup":
        return 0, json.dumps({"loopdevices": []}), ""
    if argv[:2] == ["skycache-agent", "lio-list"]:
        return 0, json.dumps({"exports": [], "backstores": []}), ""
    if word == "iscsiadm":
        return 21, "", "iscsiadm: No active sessions."
    if word == "cat" and argv[-1] == "/etc/iscsi/initiatorname.iscsi":
        return 0, f"InitiatorName={PREFIX}.lab:repo\n", ""
    if word in ("cat", "test", "ls", "readlink"):
        return 1, "", ""  # no such file there
    return 0, "", ""


@pytest.fixture
def ssh_config(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text("Host repo\n  HostName 10.77.0.1\n  User root\n")
    return path


def processes(monkeypatch: pytest.MonkeyPatch, answer: Answer) -> Processes:
    procs = Processes(answer)
    monkeypatch.setattr(runner_mod, "_run_in_group", procs)
    return procs


def ssh_prefix(config: Path) -> list[str]:
    return ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "repo", "--"]


# -- the option --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--host", "bad host", "repo", "list"], ["--host 'bad host'", "not a host name"]),
        (["--host", "-oProxyCommand=touch /tmp/x", "repo", "list"], ["-oProxyCommand", "not a host name"]),
        (["--host", "", "repo", "list"], ["--host: empty host name"]),
        (["--host", "repo;id", "repo", "list"], ["'repo;id'"]),
        (
            ["--host", "repo", "--ssh-config", "/nonexistent/cfg", "repo", "list"],
            ["/nonexistent/cfg", "no such"],
        ),
        (["--host", "repo", "lab", "info"], ["--host does not apply to `lab info`", "this machine"]),
        (["--host", "repo", "validate", "scenarios"], ["does not apply to `validate"]),
    ],
)
def test_bad_targets_are_one_line_and_run_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], fragments: list[str]
) -> None:
    procs = processes(monkeypatch, unreachable)
    assert_one_error(skycache(capsys, *args), *fragments, code=2)
    assert procs.spawned == []


def test_a_directory_is_not_an_ssh_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_error(
        skycache(capsys, "--host", "repo", "--ssh-config", tmp_path, "repo", "list"),
        "not a regular file",
        code=2,
    )


def test_the_host_forms_ssh_takes() -> None:
    assert hosts.parse_host("repo") == (None, "repo")
    assert hosts.parse_host("root@10.77.0.1") == ("root", "10.77.0.1")
    assert hosts.parse_host("w1.lab.example") == (None, "w1.lab.example")
    assert hosts.parse_host("fd00::1") == (None, "fd00::1")


def test_the_environment_gives_the_defaults_and_lab_verbs_ignore_it(
    monkeypatch: pytest.MonkeyPatch, ssh_config: Path
) -> None:
    monkeypatch.setenv(hosts.HOST_ENV, "repo")
    monkeypatch.setenv(hosts.SSH_CONFIG_ENV, str(ssh_config))
    hosts.select("repo", str(ssh_config), ["repo", "list"])
    assert hosts.current() == hosts.Selection("repo", None, str(ssh_config))
    target = hosts.current().target()
    assert isinstance(target, runner_mod.SshTarget) and target.path_prefix == str(Path(sys.prefix) / "bin")
    for verb in (
        ["lab", "up", "--nodes", "2"],
        ["lab", "run", "--", "true"],
        ["net", "nat-bench"],
        ["bench"],
    ):
        hosts.select("repo", str(ssh_config), verb)  # from the environment: no error, and local
        assert hosts.current().target() is runner_mod.LOCAL, verb
    # The root options' values are not the verb: `--host repo` does not make `repo` the verb word.
    assert hosts.verb_words(["-vv", "--host", "w1", "--ssh-config", "F", "node", "list"]) == ["node", "list"]


def test_lab_verbs_never_use_the_factory() -> None:
    lab_cli = (Path(hosts.__file__).parent / "lab.py").read_text()
    assert "cli_runner" not in lab_cli and "hosts" not in lab_cli
    assert not hosts.takes_host(["lab", "exec", "--node", "repo", "--", "skycache", "repo", "list"])


# -- every verb family on the host -------------------------------------------------------------------

FAMILIES = [
    ["repo", "list"],
    ["repo", "init", "r1", "--backend", "lvm", "--loop", "1G", "--dry-run"],
    ["image", "list"],
    ["image", "create", "r1/a", "--size", "64M", "--dry-run"],
    ["export", "list"],
    ["export", "add", "r1/base", "--initiator", f"{PREFIX}.lab:w1", "--dry-run"],
    ["attach", "r1/base", "--portal", "10.77.0.1:3260", "--dry-run"],
    ["detach", "r1/base", "--dry-run"],
    ["inventory"],
    ["teardown", "--all", "--dry-run"],
    ["node", "list"],
    ["node", "init", "--cache-vg", "n1", "--loop", "1G", "--dry-run"],
    ["cache", "status"],
    ["disk", "list"],
    ["disk", "clone", "vm1", "r1/base", "--portal", "10.77.0.1:3260", "--dry-run"],
    ["net", "status"],
    ["net", "shape", "gbe-2009", "--dry-run"],
    ["net", "unisolate", "--all", "--dry-run"],
]


@pytest.mark.parametrize("verb", FAMILIES, ids=[" ".join(v[:2]) for v in FAMILIES])
def test_each_verb_runs_its_commands_over_ssh_and_an_unreachable_host_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ssh_config: Path, verb: list[str]
) -> None:
    procs = processes(monkeypatch, unreachable)
    result = skycache(capsys, "--host", "repo", "--ssh-config", ssh_config, *verb)
    assert_one_error(result, "cannot reach host 'repo' over ssh", "Connection refused", code=1)
    assert procs.spawned, "nothing ran"
    assert all(s.argv[:-1] == ssh_prefix(ssh_config) for s in procs.spawned)


def test_without_host_the_same_verb_runs_here(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(hosts.HOST_ENV, raising=False)
    procs = processes(monkeypatch, a_repo_host)
    assert skycache(capsys, "repo", "list").code == 0
    assert procs.spawned and all(s.argv[0] != "ssh" for s in procs.spawned)


# -- plans applied on the host -----------------------------------------------------------------------


def test_a_plan_applied_with_host_runs_ssh_argv_and_touches_no_local_file(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ssh_config: Path,
    no_local_access: list[str],
) -> None:
    monkeypatch.delenv("SKYCACHE_LOOP_DIR")  # the default, /var/lib/skycache: made there, not here
    procs = processes(
        monkeypatch, lambda argv: (0, report("vg", []), "") if argv[0] == "vgs" else a_repo_host(argv)
    )
    result = skycache(
        capsys,
        "--host",
        "repo",
        "--ssh-config",
        ssh_config,
        "repo",
        "init",
        "r1",
        "--backend",
        "lvm",
        "--loop",
        "1G",
    )
    assert result.code == 0, result
    assert result.out.strip() == "repository r1 (lvm) created"
    for s in procs.spawned:
        assert s.argv[:-1] == ssh_prefix(ssh_config)
        assert shlex.split(s.argv[-1])[:3] == ["env", "LC_ALL=C", f"PATH={sys.prefix}/bin:" + (
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")]  # fmt: skip
    ran = procs.remote_lines()
    assert "mkdir -p -m 0700 /var/lib/skycache" in ran
    assert f"truncate -s {1 << 30} /var/lib/skycache/skycache-vg-r1.img" in ran
    assert any(line.startswith("vgcreate ") and "r1" in line for line in ran)
    assert no_local_access == []


def test_a_dry_run_names_the_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ssh_config: Path
) -> None:
    processes(monkeypatch, lambda argv: (0, report("vg", []), "") if argv[0] == "vgs" else a_repo_host(argv))
    args = ("repo", "init", "r1", "--backend", "lvm", "--loop", "1G", "--dry-run")
    remote = skycache(capsys, "--host", "root@repo", "--ssh-config", ssh_config, *args)
    assert remote.code == 0, remote
    assert remote.out.splitlines()[:2] == ["plan: create LVM repository r1", "  on host root@repo (over ssh)"]
    local = skycache(capsys, *args)
    assert "on host" not in local.out


# -- CHAP secrets ------------------------------------------------------------------------------------


def test_chap_secret_never_in_argv_log_or_plan_with_host(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    ssh_config: Path,
    tmp_path: Path,
    no_local_access: list[str],
) -> None:
    monkeypatch.setattr(lio, "new_chap", lambda: lio.Chap("skycache", SECRET))
    log = tmp_path / "commands.jsonl"
    monkeypatch.setenv(runner_mod.COMMAND_LOG_ENV, str(log))
    caplog.set_level(logging.DEBUG)  # what -vv prints (pytest's handler holds the root logger here)
    procs = processes(monkeypatch, a_repo_host)
    args = ("-vv", "--host", "repo", "--ssh-config", ssh_config, "export", "add", "r1/base")
    args += ("--initiator", f"{PREFIX}.lab:w1")
    plan = skycache(capsys, *args, "--dry-run")
    assert plan.code == 0 and "lio-create" in plan.out, plan
    done = skycache(capsys, *args)
    assert done.code == 0, done
    assert done.out.strip().splitlines()[-1] == f"{PREFIX}:r1.base"
    # The secret went to the host, on ssh's stdin: to the agent that creates the target, and to the
    # agent that writes it into the state directory there.
    creates = [s for s in procs.spawned if s.remote[:2] == ["skycache-agent", "lio-create"]]
    assert creates and SECRET in (creates[0].stdin or "")
    writes = [s for s in procs.spawned if s.remote[:2] == ["skycache-agent", "write-file"]]
    assert any(SECRET in (s.stdin or "") and s.remote[2].endswith("_r1.base.chap") for s in writes)
    # ... and nowhere else: no argv (local or remote), no -vv log, no command log, no printed plan.
    assert not any(SECRET in word for s in procs.spawned for word in s.argv)
    for text in (plan.out, plan.err, done.out, done.err, log.read_text(), caplog.text):
        assert SECRET not in text
    assert all(json.loads(line).get("target") == "repo" for line in log.read_text().splitlines())
    assert "run on repo: skycache-agent lio-create" in caplog.text  # -vv says where each command ran
    assert no_local_access == []


def test_attach_reads_the_repositorys_secret_over_ssh_and_hands_it_on_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ssh_config: Path, tmp_path: Path
) -> None:
    iqn = f"{PREFIX}:r1.base"
    secret_file = lio.secret_path(iqn)
    log = tmp_path / "commands.jsonl"
    monkeypatch.setenv(runner_mod.COMMAND_LOG_ENV, str(log))

    def worker_and_repo(argv: list[str]) -> tuple[int, str, str]:
        if argv == ["cat", "--", secret_file]:  # over ssh, on the repository
            return 0, json.dumps({"userid": "skycache", "password": SECRET}), ""
        if argv[:3] == ["iscsiadm", "-m", "discovery"]:  # here, on the worker
            return 0, f"10.77.0.1:3260,1 {iqn}\n", ""
        return a_repo_host(argv)

    procs = processes(monkeypatch, worker_and_repo)
    args = (
        "--ssh-config",
        ssh_config,
        "attach",
        "r1/base",
        "--portal",
        "10.77.0.1:3260",
        "--chap-from",
        "repo",
    )
    result = skycache(capsys, "-vv", *args, "--dry-run")
    assert result.code == 0, result
    reads = [s for s in procs.spawned if s.argv[0] == "ssh"]
    assert [s.remote for s in reads] == [["cat", "--", secret_file]]
    assert reads[0].argv[:-1] == ssh_prefix(ssh_config)
    assert all(s.argv[0] != "ssh" for s in procs.spawned if s not in reads)  # the login is here
    assert "skycache-agent iscsi-node-auth" in result.out and "< (stdin)" in result.out
    assert SECRET not in result.out + result.err + log.read_text()
    assert not any(SECRET in word for s in procs.spawned for word in s.argv)


def test_attach_chap_from_a_host_without_the_secret_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ssh_config: Path
) -> None:
    def answer(argv: list[str]) -> tuple[int, str, str]:
        if argv[:3] == ["iscsiadm", "-m", "discovery"]:
            return 0, f"10.77.0.1:3260,1 {PREFIX}:r1.base\n", ""
        return a_repo_host(argv)

    processes(monkeypatch, answer)
    result = skycache(
        capsys,
        "--ssh-config",
        ssh_config,
        "attach",
        "r1/base",
        "--portal",
        "10.77.0.1",
        "--chap-from",
        "repo",
    )
    assert_one_error(result, "no CHAP secret", "on repo")


def test_the_login_gets_the_secret_of_the_chap_host_as_stdin() -> None:
    from fakes import FakeRunner

    iqn = f"{PREFIX}:r1.base"
    here = FakeRunner()
    here.reply("iscsiadm", "-m", "discovery", stdout=f"10.77.0.1:3260,1 {iqn}\n")
    here.reply("iscsiadm", "-m", "session", rc=21)
    repo = FakeRunner(runner_mod.SshTarget("repo"))
    repo.files[lio.secret_path(iqn)] = json.dumps({"userid": "skycache", "password": SECRET})
    from skycache.storage.view import View

    plan, _ = image.plan_attach(View(here), "r1/base", iscsi.parse_portal("10.77.0.1"), chap_from=repo)
    auth = [c for a in plan.actions for c in a.commands() if "iscsi-node-auth" in c.render()]
    assert len(auth) == 1 and isinstance(auth[0].stdin, runner_mod.Secret)
    assert json.loads(auth[0].stdin.value)["password"] == SECRET
    assert SECRET not in "\n".join(plan.describe())
