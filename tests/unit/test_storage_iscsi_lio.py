"""iscsi / lio / state / teardown pieces that need no kernel: parsers of recorded output, names,
secret handling, and the CLI's refusal of bad input before anything runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from fakes import FakeRunner
from typer.testing import CliRunner

from skycache import agent, state
from skycache import runner as runner_mod
from skycache.cli.main import app
from skycache.errors import InvalidInput, SkycacheError
from skycache.plan import Action, Command, Plan, Wait
from skycache.runner import Secret, SystemRunner
from skycache.storage.kernel import iscsi, lio

DATA = Path(__file__).parent / "data" / "storage"


def test_parse_recorded_session_p3() -> None:
    (s,) = iscsi.parse_sessions((DATA / "session_p3.txt").read_text())
    assert s.iqn == "iqn.2026-11.org.skycache:probe"
    assert s.portal == "127.0.0.1:3260" and s.sid == 2 and s.disks == ("sda",)
    assert s.iface == "default" and s.initiator == "iqn.2026-11.org.skycache.lab:guest"
    assert s.state == "LOGGED_IN"


def test_parse_recorded_discovery() -> None:
    (t,) = iscsi.parse_discovery((DATA / "discovery.txt").read_text())
    assert (t.portal, t.tpgt, t.iqn) == ("127.0.0.1:3260", 1, "iqn.2026-11.org.skycache:probe")


def test_initiator_name_and_portals() -> None:
    assert iscsi.parse_initiator_name("## x\nInitiatorName=iqn.1993-08.org.debian:01:ab\n") == (
        "iqn.1993-08.org.debian:01:ab"
    )
    assert iscsi.parse_portal("10.0.0.1") == iscsi.Portal("10.0.0.1", 3260)
    assert str(iscsi.parse_portal("127.0.0.1:3261")) == "127.0.0.1:3261"
    assert iscsi.by_path(iscsi.Portal("127.0.0.1"), "iqn.x:y").name == "ip-127.0.0.1:3260-iscsi-iqn.x:y-lun-0"
    for bad in ("", "1.2.3.4:0", "1.2.3.4:99999", "a b:1", "1.2.3.4:x"):
        with pytest.raises(InvalidInput):
            iscsi.parse_portal(bad)


class Recorder:
    """Fakes the process layer under a real runner, so masking and retries are the runner's own."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: dict[str, int] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail or {}
        monkeypatch.setattr(runner_mod, "_run_in_group", self._run)
        self.runner = SystemRunner(sleep=lambda s: None)

    def _run(
        self, argv: list[str], stdin: object, env: object, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        for word, code in self.fail.items():
            if word in argv:
                return subprocess.CompletedProcess(argv, code, "", "iscsiadm: failure")
        return subprocess.CompletedProcess(argv, 0, "", "")


PORTAL = iscsi.Portal("127.0.0.1")


def login_plan(chap: tuple[str, Secret] | None = None) -> Plan:
    actions = iscsi.attach_actions([], "iqn.t:x", PORTAL, chap=chap)
    # Without a kernel there is no by-path link to wait for: keep the commands only.
    return Plan(
        "attach",
        [Action(a.description, tuple(s for s in a.do if not isinstance(s, Wait)), a.undo) for a in actions],
    )


def test_attach_plan_makes_a_node_record_sets_chap_and_logs_in() -> None:
    plan = login_plan(("skycache", Secret("s3cr3t-value")))
    node = "iscsiadm -m node -T iqn.t:x -p 127.0.0.1:3260"
    assert plan.commands() == [
        f"{node} -o new",
        "skycache-agent iscsi-node-auth iqn.t:x 127.0.0.1:3260",  # the secret on its stdin (issue 18)
        f"{node} --login",
    ]
    (action,) = iscsi.attach_actions([], "iqn.t:x", PORTAL, chap=None)
    wait = action.do[-1]
    assert (
        isinstance(wait, Wait) and "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.t:x-lun-0" in wait.shown()
    )
    assert (
        iscsi.attach_actions([("127.0.0.1:3260", "iqn.t:x")], "iqn.t:x", PORTAL, chap=None)[0].do[0].render()
        == f"{node} --login"
    )  # type: ignore[union-attr]


def test_chap_password_is_masked_in_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # The agent (in this process) writes the node record: here under tmp_path, not /etc/iscsi.
    monkeypatch.setattr(agent, "ISCSI_NODES", tmp_path / "nodes")
    monkeypatch.setattr(agent, "ISCSI_LOCK_DIR", tmp_path / "lock")
    record = tmp_path / "nodes" / "iqn.t:x" / "127.0.0.1,3260"
    record.parent.mkdir(parents=True)
    record.write_text("# BEGIN RECORD 2.1.8\nnode.name = iqn.t:x\n# END RECORD\n")
    r = Recorder(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="skycache.runner"):
        login_plan(("skycache", Secret("s3cr3t-value"))).apply(r.runner)
    assert "node.session.auth.password = s3cr3t-value" in record.read_text()  # the record gets it...
    assert not any("s3cr3t-value" in a for c in r.calls for a in c)  # ...no command line (issue 18)...
    assert "s3cr3t-value" not in caplog.text and "iscsi-node-auth" in caplog.text  # ...nor the log


def test_login_auth_failure_is_a_refusal_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(monkeypatch, fail={"--login": iscsi.ERR_LOGIN_AUTH_FAILED})
    with pytest.raises(SkycacheError, match="authorization failure"):
        login_plan().apply(r.runner)
    assert [c[-1] for c in r.calls] == ["new", "--login", "--logout", "delete"]  # one login; rolled back


def test_login_retries_transient_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(monkeypatch, fail={"--login": iscsi.ERR_IDBM})
    with pytest.raises(SkycacheError, match="exit code 6"):
        login_plan().apply(r.runner)
    assert sum(c[-1] == "--login" for c in r.calls) == iscsi.TRANSIENT.attempts


def test_session_exists_counts_as_logged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(monkeypatch, fail={"--login": iscsi.ERR_SESS_EXISTS})
    login_plan().apply(r.runner)


def test_export_names() -> None:
    assert lio.target_iqn("repo1", "base") == "iqn.2026-11.org.skycache:repo1.base"
    assert lio.storage_object_name("repo1", "base") == "skycache-repo1.base"
    assert lio.shim_name("repo1", "base") == "skycache-exp-repo1.base"
    with pytest.raises(InvalidInput):
        lio.export_key("re.po", "x")
    assert lio.parse_listen("0.0.0.0") == ("0.0.0.0", 3260)
    with pytest.raises(InvalidInput):
        lio.parse_listen("1.2.3.4:70000")


def test_owned_config_filters_foreign_targets() -> None:
    dump = json.loads((DATA / "saveconfig.txt").read_text())
    dump["targets"].append({"wwn": "iqn.2003-01.org.other:disk", "tpgs": []})
    dump["storage_objects"].append({"name": "other", "plugin": "block"})
    owned = agent.owned_config(dump, "iqn.2026-11.org.skycache")
    assert [t["wwn"] for t in owned["targets"]] == ["iqn.2026-11.org.skycache:probe"]
    assert [s["name"] for s in owned["storage_objects"]] == ["skycache-probe"]


def test_export_plan_keeps_the_secret_out_of_argv_and_stores_it_private() -> None:
    spec = lio.ExportSpec("r", "img", "/dev/r/img", "block", ("iqn.2026-11.org.skycache.lab:guest",))
    chap = lio.new_chap()
    assert len(chap.password) == 24 and chap.password not in repr(chap)
    plan = Plan("export", lio.add_actions(lio.LioState((), ()), spec, 2048, chap))
    assert plan.commands() == [
        "dmsetup create skycache-exp-r.img --table '0 2048 linear /dev/r/img 0'",
        "skycache-agent lio-create",
        f"skycache-agent write-file {state.secrets_dir()}/iqn.2026-11.org.skycache_r.img.chap --mode 0600 "
        f"--private-dir {state.state_dir()}",
        f"skycache-agent lio-save {state.state_dir()}/lio.json --prefix iqn.2026-11.org.skycache",
    ]
    assert chap.password not in "\n".join(plan.describe())
    create = plan.actions[1].do[0]
    assert isinstance(create, Command) and isinstance(create.stdin, Secret)
    assert json.loads(create.stdin.value)["chap"]["password"] == chap.password
    with pytest.raises(SkycacheError, match="already exported"):
        lio.add_actions(
            lio.parse_list(json.dumps({"exports": [_export(spec.iqn)], "backstores": []})), spec, 2048
        )


def _export(iqn: str) -> dict[str, object]:
    return {"iqn": iqn, "storage_object": "skycache-r.img", "plugin": "block", "device": "/dev/x",
            "initiators": [], "read_only": False, "chap": True, "portals": []}  # fmt: skip


def test_agent_write_file_is_atomic_and_private(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.json"
    agent.write_file(target, '{"a": 1}', 0o600)
    agent.write_file(target, '{"a": 2}', 0o600)
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.stat(target.parent).st_mode & 0o777 == 0o700


def test_state_reads_through_the_runner_and_names_a_corrupt_file() -> None:
    fake = FakeRunner(files={"/etc/skycache/x.json": '{"a": 1}', "/etc/skycache/bad.json": "{nope"})
    assert state.read_json(fake, "/etc/skycache/x.json") == {"a": 1}
    assert state.read_json(fake, "/etc/skycache/none.json", {}) == {}
    with pytest.raises(InvalidInput, match=r"bad\.json is not valid JSON"):
        state.read_json(fake, "/etc/skycache/bad.json")
    assert str(Secret("pw")) == "********"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["image", "create", "r/x", "--size", "0"], "--size '0' is zero"),
        (["image", "create", "r/x", "--size", "12Q"], "unknown unit"),
        (["image", "create", "r/Bad", "--size", "1G"], "image name 'Bad' is invalid"),
        (["image", "create", "justname", "--size", "1G"], "not REPO/NAME"),
        (["image", "create", "r/snapshot1", "--size", "1G"], "LVM reserves it"),
        (["image", "clone", "r/a", "r/b", "--cow", "reflink"], None),
        (["repo", "init", "x", "--backend", "zfs"], "backend 'zfs'"),
        (
            ["repo", "init", "x.y", "--backend", "file", "--dir", "/nonexistent-skycache"],
            "must not contain '.'",
        ),
        (["attach", "r/x", "--portal", "1.2.3.4:0"], "invalid port"),
        (["teardown"], "--all"),
    ],
)
def test_cli_bad_input_is_one_line(
    args: list[str], needle: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No LVM on the host: any argument check must happen before the system is asked anything.
    from skycache.storage import image as image_mod
    from skycache.storage import repository as repo_mod

    def no_system(*a: object, **k: object) -> None:
        raise AssertionError("the system was queried before the input was checked")

    monkeypatch.setattr(repo_mod, "get_repo", no_system)
    monkeypatch.setattr(image_mod, "get_repo", no_system)
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    if needle is not None:
        assert isinstance(result.exception, InvalidInput), result.exception
        assert needle in str(result.exception)
