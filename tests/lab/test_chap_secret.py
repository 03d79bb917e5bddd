"""Issue 18, the CHAP secret, on a real kernel: while an image is exported with CHAP and attached, no
process's command line (/proc/PID/cmdline, what ``ps`` shows any local user) ever holds the secret;
the login succeeds; the node record holds it, 0600; the command log does not."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage import lib_attach, lib_export, lib_image, lib_repo, lib_teardown

from skycache.runner import COMMAND_LOG_ENV, Runner
from skycache.storage.kernel import iscsi, lio


class CmdlineWatch:
    """Reads every /proc/PID/cmdline over and over in a thread, recording the pids whose command line
    contains any of ``needles``."""

    def __init__(self, *needles: str) -> None:
        self.needles = [n.encode() for n in needles]
        self.hits: dict[str, list[str]] = {n: [] for n in needles}
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid == me:
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        line = f.read()
                except OSError:
                    continue  # gone already
                for needle in self.needles:
                    if needle in line:
                        self.hits[needle.decode()].append(line.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1


@pytest.fixture
def env(runner: Runner, scratch_dir: Path, tmp_path: Path) -> Iterator[Path]:
    old = {k: os.environ.get(k) for k in ("SKYCACHE_LOOP_DIR", "SKYCACHE_STATE_DIR", COMMAND_LOG_ENV)}
    os.environ["SKYCACHE_LOOP_DIR"] = str(scratch_dir)
    os.environ["SKYCACHE_STATE_DIR"] = str(tmp_path / "state")
    os.environ[COMMAND_LOG_ENV] = str(tmp_path / "commands.jsonl")
    try:
        yield tmp_path
    finally:
        os.environ.pop(COMMAND_LOG_ENV, None)
        lib_teardown(runner)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_no_command_line_holds_the_chap_secret_while_attaching(runner: Runner, env: Path) -> None:
    lib_repo(runner, "chap", 512 << 20, env)
    lib_image(runner, "chap/img", 16 << 20)
    iqn = lio.target_iqn("chap", "img")
    lib_export(runner, "chap/img")  # the agent gets the export's secret on stdin (lio-create)
    secret = lio.load_chap(runner, iqn)
    assert secret is not None, "the export has no CHAP secret"
    probe = f"skycache-probe-{secrets.token_hex(8)}"  # shows that the watch sees short processes
    with CmdlineWatch(secret.password, probe) as watch:
        device = lib_attach(runner, "chap/img")
        subprocess.run(["sh", "-c", "sleep 0.5", probe], check=True)
    assert watch.hits[probe], f"the watch saw no probe process in {watch.scans} scans"
    assert watch.hits[secret.password] == [], watch.hits[secret.password]
    # the login succeeded with the secret
    (session,) = [s for s in iscsi.sessions(runner) if s.iqn == iqn]
    assert session.state == "LOGGED_IN" and device.startswith("/dev/sd")
    record = Path("/etc/iscsi/nodes") / iqn / "127.0.0.1,3260"
    assert f"node.session.auth.password = {secret.password}" in record.read_text()
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    log = (env / "commands.jsonl").read_text()
    assert "iscsi-node-auth" in log and secret.password not in log
