"""iscsi / lio / state / teardown pieces that need no kernel: parsers of recorded output, names,
secret handling, and the CLI's refusal of bad input before anything runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skycache import runner as runner_mod
from skycache import state
from skycache.cli.main import app
from skycache.errors import InvalidInput, SkycacheError
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
    """Fakes the process layer under a real Runner, so masking and retries are the runner's own."""

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


def test_chap_password_is_masked_in_argv(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    r = Recorder(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="skycache.runner"):
        iscsi.set_chap(r.runner, "iqn.t:x", iscsi.Portal("127.0.0.1"), "skycache", "s3cr3t-value")
    assert any("s3cr3t-value" in c for c in r.calls)  # the process gets it...
    assert "s3cr3t-value" not in caplog.text and "********" in caplog.text  # ...the log does not


def test_login_auth_failure_is_a_refusal_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(monkeypatch, fail={"--login": iscsi.ERR_LOGIN_AUTH_FAILED})
    with pytest.raises(iscsi.LoginRefused, match="authorization failure"):
        iscsi.login(r.runner, "iqn.t:x", iscsi.Portal("127.0.0.1"))
    assert len(r.calls) == 1


def test_login_retries_transient_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(monkeypatch, fail={"--login": iscsi.ERR_IDBM})
    with pytest.raises(SkycacheError, match="failed"):
        iscsi.login(r.runner, "iqn.t:x", iscsi.Portal("127.0.0.1"))
    assert len(r.calls) == iscsi.TRANSIENT.attempts


def test_session_exists_counts_as_logged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(monkeypatch, fail={"--login": iscsi.ERR_SESS_EXISTS})
    iscsi.login(r.runner, "iqn.t:x", iscsi.Portal("127.0.0.1"))


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
    owned = lio.owned_config(dump)
    assert [t["wwn"] for t in owned["targets"]] == ["iqn.2026-11.org.skycache:probe"]
    assert [s["name"] for s in owned["storage_objects"]] == ["skycache-probe"]


def test_secrets_are_private_and_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCACHE_STATE_DIR", str(tmp_path))
    chap = lio.new_chap()
    assert len(chap.password) == 24 and chap.password not in repr(chap)
    lio.store_chap("iqn.2026-11.org.skycache:r.i", chap)
    p = lio.secret_path("iqn.2026-11.org.skycache:r.i")
    assert p.stat().st_mode & 0o777 == 0o600
    assert lio.load_chap("iqn.2026-11.org.skycache:r.i") == chap
    assert str(Secret(chap.password)) == "********"


def test_write_private_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.json"
    state.write_json_private(target, {"a": 1})
    state.write_json_private(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]
    assert os.stat(target).st_mode & 0o777 == 0o600


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
