"""where = "hosts": how ssh reaches each fio server (the ``[ssh]`` table), its validation and the
ssh argv it gives. The real thing, over a private sshd, is tests/lab/test_bench_hosts_ssh.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_fixtures import TINY_FILE_STACK_AND_JOBS
from fakes import FakeRunner

from skycache.bench import orchestrate, remote, scenario
from skycache.errors import InvalidInput
from skycache.runner import LOCAL, SshTarget, SystemRunner

PROFILES = ("none",)

HEAD = """
name = "ssh-tiny"
where = "{where}"
hosts = ["node1", "node2:8766", "10.0.0.7", "localhost:8799"]
"""


def write(tmp_path: Path, ssh: str, where: str = "hosts") -> Path:
    f = tmp_path / "s.toml"
    f.write_text(HEAD.format(where=where) + ssh + TINY_FILE_STACK_AND_JOBS)
    return f


def key(tmp_path: Path, name: str = "bench_key", mode: int = 0o600) -> Path:
    p = tmp_path / name
    p.write_text("not a real key: never read by the bench, only handed to ssh -i\n")
    p.chmod(mode)
    return p


def load(f: Path) -> scenario.Scenario:
    return scenario.load(f, profiles=PROFILES)


def test_without_ssh_table_every_host_gets_plain_ssh(tmp_path: Path) -> None:
    sc = load(write(tmp_path, ""))
    local = SystemRunner()
    r = remote.runner_for(remote.parse_host("node2:8766"), local, sc.ssh.settings("node2"))
    assert r.target == SshTarget("node2")
    assert (
        remote.runner_for(remote.parse_host("localhost:8799"), local, sc.ssh.settings("localhost")) is local
    )


def test_defaults_and_per_host_overrides_key_by_key(tmp_path: Path) -> None:
    key(tmp_path)
    (tmp_path / "ssh_config").write_text("Host node2\n  HostName 192.0.2.2\n")
    f = write(
        tmp_path,
        """
[ssh]
user = "root"
identity_file = "bench_key"
path_prefix = "/opt/skycache/.venv/bin:/usr/local/skycache/bin"
[ssh.hosts.node2]
port = 2222
config_file = "ssh_config"
[ssh.hosts."10.0.0.7"]
user = "bench"
connect_timeout_s = 3
""",
    )
    sc = load(f)
    k, cfg = str(tmp_path / "bench_key"), str(tmp_path / "ssh_config")
    prefix = "/opt/skycache/.venv/bin:/usr/local/skycache/bin"
    assert sc.ssh.settings("node1") == remote.SshSettings("root", None, k, None, prefix)
    assert sc.ssh.settings("node2") == remote.SshSettings("root", 2222, k, cfg, prefix)
    assert sc.ssh.settings("10.0.0.7") == remote.SshSettings("bench", None, k, None, prefix, 3)
    orch = orchestrate.Orchestrator(
        sc, orchestrate.RunOptions(where="hosts"), FakeRunner(), orchestrate.NullReporter()
    )
    targets = [site.runner.target for site in orch.sites]
    assert targets[1] == SshTarget("node2", "root", 2222, k, 10, prefix, cfg)
    assert targets[3] is LOCAL  # localhost: built here, no ssh


def test_the_ssh_argv_of_a_configured_host(tmp_path: Path) -> None:
    key(tmp_path)
    (tmp_path / "cfg").write_text("")
    table = 'user = "root"\nport = 2200\nidentity_file = "bench_key"\nconfig_file = "cfg"\n'
    f = write(tmp_path, f'[ssh]\n{table}path_prefix = "/srv/sky/bin"\n')
    sc = load(f)
    target = sc.ssh.settings("node1").target("node1")
    argv, _ = target.wrap(["skycache-agent", "lio-list", "--prefix", "iqn.x"], {})
    assert argv == [
        "ssh", "-F", str(tmp_path / "cfg"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        "-p", "2200", "-i", str(tmp_path / "bench_key"), "root@node1", "--",
        "env LC_ALL=C PATH=/srv/sky/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "skycache-agent lio-list --prefix iqn.x",
    ]  # fmt: skip
    # the manifest says how the host was reached, without the key's or the config's path
    assert remote.reached(SystemRunner(target)) == "ssh -p 2200 root@node1"
    assert remote.reached(SystemRunner(SshTarget("node3"))) == "ssh node3"
    assert remote.reached(SystemRunner()) == "local"


def test_home_relative_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    key(tmp_path / "home" / ".ssh", "id_bench")
    sc = load(write(tmp_path, '[ssh]\nidentity_file = "~/.ssh/id_bench"\n'))
    assert sc.ssh.settings("node1").identity_file == str(tmp_path / "home" / ".ssh" / "id_bench")


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ("port = 0", "ssh.port", "0 is not a whole number from 1 to 65535"),
        ('port = "22"', "ssh.port", "'22' is not a whole number from 1 to 65535"),
        ("port = true", "ssh.port", "True is not a whole number"),
        ("connect_timeout_s = 601", "ssh.connect_timeout_s", "601 is not a whole number from 1 to 600"),
        ('user = "root name"', "ssh.user", "'root name' is not a user name"),
        ('user = "-oProxyCommand=x"', "ssh.user", "'-oProxyCommand=x' is not a user name"),
        ('identity_file = "nothere"', "ssh.identity_file", "file not found: nothere"),
        ('identity_file = ""', "ssh.identity_file", "'' is not a path"),
        ('config_file = "no_config"', "ssh.config_file", "file not found: no_config"),
        ('path_prefix = "venv/bin"', "ssh.path_prefix", "'venv/bin' is not an absolute directory"),
        ('path_prefix = "/opt/a::/opt/b"', "ssh.path_prefix", "'' is not an absolute directory"),
        ('pasword = "x"', "ssh.pasword", "unknown key"),
        ("[ssh.hosts.node9]\nport = 22", "ssh.hosts.node9", "not a host name in hosts (10.0.0.7, localhost"),
        (
            "[ssh.hosts.localhost]\nport = 22",
            "ssh.hosts.localhost",
            "this machine: its stacks are built here",
        ),
        ('[ssh.hosts."10.0.0.7"]\nport = 99999', 'ssh.hosts."10.0.0.7".port', "99999 is not a whole number"),
        ('[ssh.hosts."10.0.0.9"]\nport = 22', 'ssh.hosts."10.0.0.9"', "not a host name in hosts"),
        (
            '[ssh.hosts.node1]\nidentity_file = "nope"',
            "ssh.hosts.node1.identity_file",
            "file not found: nope",
        ),
    ],
)
def test_bad_ssh_settings_are_one_line_naming_key_and_value(
    tmp_path: Path, table: str, where: str, message: str
) -> None:
    f = write(tmp_path, f"[ssh]\n{table}\n")
    with pytest.raises(InvalidInput) as exc:
        load(f)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}: {where}: ") and message in msg, msg


def test_a_key_others_can_read_is_refused_before_ssh_ignores_it(tmp_path: Path) -> None:
    key(tmp_path, mode=0o644)
    f = write(tmp_path, '[ssh]\nidentity_file = "bench_key"\n')
    with pytest.raises(InvalidInput, match=r"ssh.identity_file: bench_key is readable by others .*chmod 600"):
        load(f)


def test_ssh_is_only_for_where_hosts(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('name = "x"\nwhere = "host"\n[ssh]\nuser = "root"\n' + TINY_FILE_STACK_AND_JOBS)
    with pytest.raises(InvalidInput, match=r"s.toml: ssh: only used with where = 'hosts'$"):
        load(f)


def test_the_command_log_names_a_remote_commands_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote command is logged as the command there, with the target's name (no ssh options)."""
    log = tmp_path / "commands.jsonl"
    monkeypatch.setenv("SKYCACHE_COMMAND_LOG", str(log))
    # `true` as the "ssh" of a target that is not local: the command "runs" without a network.
    target = _TrueTarget()
    SystemRunner(target).run(["lvs"])
    SystemRunner().run(["true"])
    remote_rec, local_rec = (json.loads(line) for line in log.read_text().splitlines())
    assert remote_rec["target"] == "root@node1" and remote_rec["argv"] == ["lvs"]
    assert "target" not in local_rec


class _TrueTarget:
    name = "root@node1"
    local = False

    def wrap(self, argv, env):  # type: ignore[no-untyped-def]
        import os

        return ["true", *argv], dict(os.environ)

    def has_program(self, program: str) -> bool | None:
        return None
