"""The CHAP secret never on a command line (issue 18): ``skycache-agent iscsi-node-auth`` writes it
into open-iscsi's node record from its stdin; the plan, the command log and errors never hold it.

The record text follows iscsiadm's own writer and reader (open-iscsi 2.1.8 usr/idbm.c: idbm_print
writes "name = value" lines, non-empty values only, between "# BEGIN RECORD" and "# END RECORD";
idbm_recinfo_config reads them back). ``idbm_read`` below is that reader's rule, to check what
iscsiadm will see.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from skycache import agent
from skycache import runner as runner_mod
from skycache.errors import InvalidInput
from skycache.plan import Command, Plan
from skycache.runner import Secret, SshTarget, SystemRunner
from skycache.storage.kernel import iscsi

IQN = "iqn.2026-11.org.skycache:r.img"
PORTAL = iscsi.Portal("127.0.0.1")
SECRET = "0123456789abcdef01234567"

# What `iscsiadm -m node -T IQN -p 127.0.0.1:3260 -o new` writes (idbm_print's format and order,
# shortened): no auth lines, since their values are empty.
NEW_RECORD = f"""# BEGIN RECORD 2.1.8
node.name = {IQN}
node.tpgt = -1
node.startup = manual
node.leading_login = No
iface.iscsi_ifacename = default
iface.transport_name = tcp
node.discovery_type = static
node.session.initial_cmdsn = 0
node.session.auth.authmethod = None
node.session.auth.chap_algs = MD5
node.session.timeo.replacement_timeout = 120
node.conn[0].address = 127.0.0.1
node.conn[0].port = 3260
# END RECORD
"""


def idbm_read(text: str) -> dict[str, str]:
    """idbm_recinfo_config's rule: strip the line, skip blank and '#' lines, the name runs to the first
    blank or '=', then blanks, '=', blanks, and the value is the rest; a later line wins."""
    values: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("=", 1)[0].split()[0]
        rest = line[len(name) :].lstrip()
        if rest.startswith("="):
            values[name] = rest[1:].lstrip()
    return values


@pytest.fixture
def nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(agent, "ISCSI_NODES", tmp_path / "nodes")
    monkeypatch.setattr(agent, "ISCSI_LOCK_DIR", tmp_path / "lock")
    return tmp_path / "nodes"


def old_style(nodes: Path, text: str = NEW_RECORD) -> Path:
    rec = nodes / IQN / "127.0.0.1,3260"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(text)
    rec.chmod(0o600)
    return rec


def agent_main(args: list[str], stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = agent.main(args, stdin, out, err)
    return code, out.getvalue(), err.getvalue()


# -- the plan and its argv ---------------------------------------------------------------------------


def test_attach_plan_has_no_secret_in_any_argv() -> None:
    (action,) = iscsi.attach_actions([], IQN, PORTAL, chap=("skycache", Secret(SECRET)))
    commands = [s for s in action.do if isinstance(s, Command)] + list(action.undo)
    plain = [a.value if isinstance(a, Secret) else a for c in commands for a in c.argv]  # type: ignore[union-attr]
    assert not any(SECRET in a for a in plain)
    (auth,) = [c for c in commands if c.argv[:2] == ("skycache-agent", "iscsi-node-auth")]  # type: ignore[union-attr]
    assert auth.argv == ("skycache-agent", "iscsi-node-auth", IQN, "127.0.0.1:3260")  # type: ignore[union-attr]
    assert isinstance(auth.stdin, Secret)  # type: ignore[union-attr]
    assert json.loads(auth.stdin.value) == {"username": "skycache", "password": SECRET}  # type: ignore[union-attr]
    shown = "\n".join(Plan("attach", [action]).describe())
    assert "iscsi-node-auth iqn.2026-11.org.skycache:r.img 127.0.0.1:3260 < (stdin)" in shown
    assert SECRET not in shown and "auth.password" not in shown


def test_iface_is_passed_on() -> None:
    cmd = iscsi.chap_command(IQN, PORTAL, ("skycache", Secret(SECRET)), "skycache-other")
    assert cmd.argv[-2:] == ("--iface", "skycache-other")


@pytest.mark.parametrize("bad", ["Zq9\nnewline", " Zq9lead", "Zq9trail ", "Zq9nul\0", "Zq9" * 86, ""])
def test_unusable_secrets_are_refused_at_planning_without_echo(bad: str) -> None:
    with pytest.raises(InvalidInput, match="CHAP secret") as err:
        iscsi.attach_actions([], IQN, PORTAL, chap=("skycache", Secret(bad)))
    assert "Zq9" not in str(err.value)


# -- the record text ---------------------------------------------------------------------------------


def test_record_gets_chap_lines_before_the_end() -> None:
    text = agent.set_record_auth(NEW_RECORD, "skycache", SECRET)
    lines = text.splitlines()
    assert lines[0] == "# BEGIN RECORD 2.1.8" and lines[-1] == "# END RECORD"
    assert lines[-3:-1] == ["node.session.auth.username = skycache", f"node.session.auth.password = {SECRET}"]
    got = idbm_read(text)
    assert got["node.session.auth.authmethod"] == "CHAP"  # replaced in place
    assert got["node.session.auth.username"] == "skycache"
    assert got["node.session.auth.password"] == SECRET
    assert lines.index("node.session.auth.authmethod = CHAP") == NEW_RECORD.splitlines().index(
        "node.session.auth.authmethod = None"
    )
    # every other line is kept as it was
    assert [x for x in lines if "auth." not in x or "chap_algs" in x] == [
        x for x in NEW_RECORD.splitlines() if "auth.authmethod" not in x
    ]


def test_record_update_replaces_old_values_duplicates_and_stale_length() -> None:
    before = NEW_RECORD.replace(
        "node.session.auth.authmethod = None\n",
        "node.session.auth.authmethod = CHAP\nnode.session.auth.username = old\n"
        "node.session.auth.password = old-secret\nnode.session.auth.password = dup\n"
        "node.session.auth.password_length = 3\n",
    )
    text = agent.set_record_auth(before, "skycache", SECRET)
    assert "old-secret" not in text and "dup" not in text and "password_length" not in text
    assert text.count("node.session.auth.password =") == 1
    assert idbm_read(text)["node.session.auth.password"] == SECRET


# -- the agent operation -----------------------------------------------------------------------------


def test_agent_writes_the_old_style_record_private_and_atomically(nodes: Path) -> None:
    rec = old_style(nodes)
    creds = json.dumps({"username": "skycache", "password": SECRET})
    code, out, err = agent_main(["iscsi-node-auth", IQN, "127.0.0.1:3260"], creds)
    assert code == 0, err
    assert idbm_read(rec.read_text())["node.session.auth.password"] == SECRET
    assert oct(rec.stat().st_mode & 0o777) == "0o600"
    assert SECRET not in out and str(rec) in out
    assert sorted(p.name for p in rec.parent.iterdir()) == ["127.0.0.1,3260"]  # no temp file left
    assert not (nodes.parent / "lock" / "lock.write").exists()  # iscsiadm's lock released


def test_agent_writes_new_style_records_of_the_iface_only(nodes: Path) -> None:
    mine = nodes / IQN / "127.0.0.1,3260,1" / "skycache-other"
    other = nodes / IQN / "127.0.0.1,3260,1" / "default"
    mine.parent.mkdir(parents=True)
    mine.write_text(NEW_RECORD.replace("ifacename = default", "ifacename = skycache-other"))
    other.write_text(NEW_RECORD)
    creds = json.dumps({"username": "u", "password": SECRET})
    code, _, err = agent_main(["iscsi-node-auth", IQN, "127.0.0.1:3260", "--iface", "skycache-other"], creds)
    assert code == 0, err
    assert idbm_read(mine.read_text())["node.session.auth.password"] == SECRET
    assert other.read_text() == NEW_RECORD
    assert sorted(p.name for p in mine.parent.iterdir()) == ["default", "skycache-other"]


def test_agent_refuses_without_record_or_with_bad_input_and_never_echoes(nodes: Path) -> None:
    good = json.dumps({"username": "u", "password": SECRET})
    code, _, err = agent_main(["iscsi-node-auth", IQN, "127.0.0.1:3260"], good)
    assert code == 1 and "no node record of" in err and SECRET not in err
    rec = old_style(nodes)
    for stdin in (f"not json {SECRET}", json.dumps({"username": "u", "password": SECRET + "\n"}), "[]"):
        code, out, err = agent_main(["iscsi-node-auth", IQN, "127.0.0.1:3260"], stdin)
        assert code == 1 and SECRET not in err + out, err
        assert rec.read_text() == NEW_RECORD  # unchanged
    code, _, err = agent_main(["iscsi-node-auth", "../etc", "127.0.0.1:3260"], good)
    assert code == 1 and "not a node record name" in err
    # the default iface's old-style record is not taken for another iface
    code, _, err = agent_main(["iscsi-node-auth", IQN, "127.0.0.1:3260", "--iface", "skycache-x"], good)
    assert code == 1 and "iface skycache-x" in err


def test_agent_waits_for_iscsiadms_lock_then_gives_up(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.mkdir()
    (lock / "lock").write_text("")
    os.link(lock / "lock", lock / "lock.write")  # an iscsiadm holds it
    with pytest.raises(agent.AgentError, match="locked"), agent.idbm_lock(lock, timeout_s=0.05):
        pass
    (lock / "lock.write").unlink()
    with agent.idbm_lock(lock, timeout_s=0.05):
        assert (lock / "lock.write").exists()
    assert not (lock / "lock.write").exists()


# -- through the real runner: command log, remote targets -------------------------------------------


def test_command_log_and_results_never_hold_the_secret(
    nodes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_style(nodes)
    log = tmp_path / "commands.jsonl"
    monkeypatch.setenv(runner_mod.COMMAND_LOG_ENV, str(log))
    cmd = iscsi.chap_command(IQN, PORTAL, ("skycache", Secret(SECRET)))
    cmd.run(SystemRunner())  # the local target runs the agent in this process
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["argv"] == ["skycache-agent", "iscsi-node-auth", IQN, "127.0.0.1:3260"]
    assert SECRET not in log.read_text()


def test_remote_target_gets_the_secret_on_stdin_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], object]] = []

    def fake_run(
        argv: list[str], stdin: object, env: object, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        seen.append((argv, stdin))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(runner_mod, "_run_in_group", fake_run)
    cmd = iscsi.chap_command(IQN, PORTAL, ("skycache", Secret(SECRET)))
    cmd.run(SystemRunner(SshTarget("node7")))
    ((argv, stdin),) = seen
    assert argv[0] == "ssh" and not any(SECRET in a for a in argv)
    assert isinstance(stdin, str) and SECRET in stdin
