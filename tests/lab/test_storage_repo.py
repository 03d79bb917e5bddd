"""Issue 3 acceptance, on a real kernel: LVM and file repositories, clones, LIO export, iSCSI attach,
ACL/CHAP refusal, secrets, unmarked objects, crash then teardown."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage import (
    PORTAL,
    SKYCACHE,
    STORAGE_CLI,
    last_line,
    lib_attach,
    lib_export,
    lib_image,
    lib_inventory,
    lib_repo,
    lib_teardown,
    read_sha,
    sk,
    sk_inproc,
    sk_json,
    write_pattern,
)

from skycache import state
from skycache.errors import SkycacheError
from skycache.runner import Runner
from skycache.storage import image, repository
from skycache.storage.kernel import iscsi, lio
from skycache.storage.view import View


@pytest.fixture
def env(runner: Runner, scratch_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """Loop files on the scratch disk, state in a fresh directory; everything torn down after."""
    old = {k: os.environ.get(k) for k in ("SKYCACHE_LOOP_DIR", "SKYCACHE_STATE_DIR")}
    os.environ["SKYCACHE_LOOP_DIR"] = str(scratch_dir)
    os.environ["SKYCACHE_STATE_DIR"] = str(tmp_path / "state")
    yield scratch_dir
    lib_teardown(runner)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _export_attach(runner: Runner, ref: str, *extra: str) -> str:
    sk(runner, "export", "add", ref, "--listen", PORTAL, *extra)
    dev = last_line(sk(runner, "attach", ref, "--portal", PORTAL))
    assert dev.startswith("/dev/sd"), dev
    return dev


@pytest.mark.parametrize("backend", ["lvm", "file"])
def test_round_trip_checksums(runner: Runner, env: Path, backend: str) -> None:
    if backend == "lvm":
        sk(runner, "repo", "init", "rt", "--backend", "lvm", "--loop", "1G")
    else:
        sk(runner, "repo", "init", "rt", "--backend", "file", "--dir", str(env / "filerepo"))
    sk(runner, "image", "create", "rt/img", "--size", "64M")
    dev = _export_attach(runner, "rt/img")
    written = write_pattern(runner, dev, env, mib=8)
    sk(runner, "detach", "rt/img")
    assert not [s for s in iscsi.sessions(runner) if s.iqn == lio.target_iqn("rt", "img")]
    repo_side = "/dev/rt/img" if backend == "lvm" else str(env / "filerepo" / "skycache-img.img")
    assert read_sha(runner, repo_side, env, mib=8) == written
    (row,) = [i for i in sk_json(runner, "image", "list") if i["name"] == "rt/img"]
    assert row["backend"] == backend and row["exported"] and row["size"] == 64 << 20
    exports = sk_json(runner, "export", "list")
    assert [e["iqn"] for e in exports] == [lio.target_iqn("rt", "img")]
    assert exports[0]["backstore"] == ("block" if backend == "lvm" else "fileio")


def test_clone_independence_and_read_only_base(runner: Runner, env: Path) -> None:
    lib_repo(runner, "cl", 2 << 30, env)
    lib_image(runner, "cl/base", 64 << 20)
    base_sha = write_pattern(runner, "/dev/cl/base", env, seed="base")
    # A second base for the classic snapshot, so each kind is checked against an untouched base.
    lib_image(runner, "cl/sbase", 64 << 20)
    sbase_sha = write_pattern(runner, "/dev/cl/sbase", env, seed="sbase")
    for cow, base, sha in (
        ("thin", "base", base_sha),
        ("copy", "base", base_sha),
        ("snapshot", "sbase", sbase_sha),
    ):
        image.plan_clone_image(View(runner), f"cl/{base}", f"cl/c-{cow}", cow).apply(runner)
        assert read_sha(runner, f"/dev/cl/c-{cow}", env) == sha, cow  # the clone starts as the base
        write_pattern(runner, f"/dev/cl/c-{cow}", env, seed=cow)
        assert read_sha(runner, f"/dev/cl/{base}", env) == sha, f"writing {cow} clone changed the base"
    images = {i.ref: i.as_dict() for i in image.list_images(View(runner))}
    assert images["cl/base"]["read_only"] and images["cl/sbase"]["read_only"]
    assert sorted(images["cl/base"]["clones"]) == ["c-copy", "c-thin"]
    assert images["cl/sbase"]["clones"] == ["c-snapshot"]
    assert {images[f"cl/c-{c}"]["cow"] for c in ("thin", "snapshot", "copy")} == {"thin", "snapshot", "copy"}
    # The base refuses writes (read-only LV: the kernel refuses to open it for writing).
    denied = runner.query(
        ["dd", "if=/dev/zero", "of=/dev/cl/base", "bs=4k", "count=1", "oflag=direct"], check=False
    )
    assert denied.returncode != 0
    assert read_sha(runner, "/dev/cl/base", env) == base_sha
    # Deleting a base with clones is refused; the clones themselves can go.
    code, _, err = sk_inproc("image", "delete", "cl/base")
    assert code != 0 and "clones" in err
    image.plan_delete(View(runner), "cl/c-snapshot").apply(runner)
    # File images: copy clones only.
    repository.plan_init_file(View(runner), "fcl", str(env / "fcl")).apply(runner)
    lib_image(runner, "fcl/base", 16 << 20)
    fbase = env / "fcl" / "skycache-base.img"
    fsha = write_pattern(runner, str(fbase), env, seed="fbase")
    code, _, err = sk_inproc("image", "clone", "fcl/base", "fcl/t", "--cow", "thin")
    assert code != 0 and "copy" in err
    image.plan_clone_image(View(runner), "fcl/base", "fcl/c", "copy").apply(runner)
    write_pattern(runner, str(env / "fcl" / "skycache-c.img"), env, seed="fc")
    assert read_sha(runner, str(fbase), env) == fsha
    assert not os.stat(fbase).st_mode & 0o222


def test_acl_chap_refusal_and_no_secret_leaks(
    runner: Runner, env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lib_repo(runner, "sec", 512 << 20, env)
    lib_image(runner, "sec/img", 16 << 20)
    # Every verb in-process, its log captured at DEBUG: what `-vv` prints (each CLI start costs many
    # seconds under TCG; -vv only sets the level of the same log records).
    caplog.set_level(logging.DEBUG)
    added = sk(runner, "export", "add", "sec/img", "--listen", PORTAL)
    iqn = lio.target_iqn("sec", "img")
    secret_file = Path(lio.secret_path(iqn))
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    secret = json.loads(secret_file.read_text())["password"]
    portal = iscsi.parse_portal(PORTAL)
    # An initiator that is not in the ACL is refused, even with the right secret.
    iscsi.ensure_iface(runner, "skycache-other", "iqn.2026-11.org.skycache:not-in-acl")
    try:
        with pytest.raises(SkycacheError, match="authorization failure") as acl_err:
            iscsi.attach(runner, iqn, portal, chap=("skycache", secret), iface="skycache-other", timeout_s=20)
    finally:
        iscsi.delete_iface_command("skycache-other").run(runner)
    # The right initiator with a wrong secret is refused.
    wrong = "wrong-secret-0123456789"
    with pytest.raises(SkycacheError, match="authorization failure") as chap_err:
        iscsi.attach(runner, iqn, portal, chap=("skycache", wrong), timeout_s=20)
    assert wrong not in str(chap_err.value) and secret not in str(acl_err.value)
    assert not [s for s in iscsi.sessions(runner) if s.iqn == iqn]
    # The right one gets in; nothing printed along the way shows the secret.
    attached = sk(runner, "attach", "sec/img", "--portal", PORTAL)
    texts = [added.stdout + added.stderr, attached.stdout + attached.stderr]
    for args in (["export", "list", "--json"], ["inventory", "--json"], ["export", "show", "sec/img"]):
        code, out, err = sk_inproc(*args)
        assert code == 0, (args, err)
        texts.append(out + err)
    code, out, err = sk_inproc("detach", "sec/img")
    assert code == 0 and "log out" in out, err
    texts.append(out + err)
    # The log saw the commands that carry the secret (the CHAP settings of the export and the login).
    assert "iscsiadm" in caplog.text and "skycache-agent" in caplog.text, caplog.text[-2000:]
    texts.append(caplog.text)
    for text in texts:
        assert secret not in text
    code, shown, _ = sk_inproc("export", "show", "sec/img", "--show-secret")
    assert secret in shown  # only on explicit request
    saved = Path(str(state.state_dir() / lio.SAVE_FILE))
    assert oct(saved.stat().st_mode & 0o777) == "0o600"


def test_unmarked_objects_survive_teardown(runner: Runner, env: Path) -> None:
    backing = env / "handmade.img"
    runner.run(["truncate", "-s", "256M", str(backing)])
    loop = runner.run(["losetup", "--find", "--show", str(backing)]).stdout.strip()
    try:
        runner.run(["vgcreate", "-y", "handvg", loop])
        runner.run(["lvcreate", "-y", "-L", "32M", "-n", "handlv", "handvg"])
        lib_repo(runner, "own", 512 << 20, env)
        lib_image(runner, "own/img", 16 << 20)
        refused = sk(runner, "image", "delete", "handvg/handlv", check=False)
        assert refused.returncode != 0 and "not created by skycache" in refused.stderr
        listed = json.dumps(sk_json(runner, "inventory"))
        assert "handvg" not in listed and "own/img" in listed
        sk(runner, "teardown", "--all")
        assert sk_json(runner, "inventory") == []
        lvs = runner.query(["lvs", "--noheadings", "-o", "lv_name", "handvg"]).stdout.split()
        assert lvs == ["handlv"]
        code, _, err = sk_inproc("image", "delete", "handvg/handlv")
        assert code != 0 and "not created by skycache" in err
    finally:
        runner.run(["vgremove", "-y", "-f", "handvg"], check=False)
        runner.run(["pvremove", "-y", loop], check=False)
        runner.run(["losetup", "-d", loop], check=False)
        backing.unlink(missing_ok=True)


KILL_WHEN = [sys.executable, str(Path(__file__).with_name("_kill_when.py"))]


def test_kill_9_mid_clone_then_teardown(runner: Runner, env: Path) -> None:
    lib_repo(runner, "k9", 1 << 30, env)
    lib_image(runner, "k9/base", 384 << 20)
    # SIGKILL once the copy's LV exists and dd is copying: no chance to undo anything.
    clone = [*STORAGE_CLI, "image", "clone", "k9/base", "k9/c", "--cow", "copy"]
    out = runner.query([*KILL_WHEN, "--path", "/dev/k9/c", "--delay", "1", "--", *clone]).stdout
    assert out.strip().splitlines()[-1] == "killed", out
    assert runner.query(["lvs", "k9/c"], check=False).returncode == 0  # the half-made clone is there
    # The killed skycache's dd runs on in its own session (the runner isolates children) and keeps
    # the LV open until it ends; teardown would rightly refuse an open LV. Wait for it.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        opened = runner.query(["dmsetup", "info", "-c", "--noheadings", "-o", "open", "k9-c"], check=False)
        if opened.stdout.strip() in ("0", ""):
            break
        time.sleep(1)
    lib_teardown(runner)
    assert lib_inventory(runner) == []


@pytest.mark.parametrize("stage", ["discovered", "logged-in"])
def test_kill_9_mid_attach_then_teardown(runner: Runner, env: Path, stage: str) -> None:
    lib_repo(runner, "k9a", 512 << 20, env)
    lib_image(runner, "k9a/img", 16 << 20)
    lib_export(runner, "k9a/img")
    iqn = lio.target_iqn("k9a", "img")
    cond = ["--path", f"/etc/iscsi/nodes/{iqn}"] if stage == "discovered" else ["--session", iqn]
    attach = [*STORAGE_CLI, "attach", "k9a/img", "--portal", PORTAL]
    out = runner.query([*KILL_WHEN, *cond, "--", *attach]).stdout
    assert out.strip().splitlines()[-1] == "killed", out
    lib_teardown(runner)
    assert lib_inventory(runner) == []
    assert not [s for s in iscsi.sessions(runner) if s.iqn == iqn]
    assert not Path(f"/etc/iscsi/nodes/{iqn}").exists()


def test_bad_input_changes_nothing(runner: Runner, env: Path) -> None:
    lib_repo(runner, "bad", 512 << 20, env)
    before = lib_inventory(runner)
    cases = [
        (["image", "create", "bad/Bad Name", "--size", "8M"], "invalid"),
        (["image", "create", "bad/x", "--size", "0"], "zero"),
        (["image", "create", "bad/x", "--size=-5M"], "not a size"),
        (["image", "create", "bad/x", "--size", "64T"], "larger than the free space"),
        (["image", "create", "nosuch/x", "--size", "8M"], "does not exist"),
        (["image", "delete", "bad/nosuch"], "does not exist"),
        (["repo", "init", "bad2", "--backend", "lvm", "--device", "/dev/nosuchdisk"], "does not exist"),
        (["attach", "bad/x", "--portal", "127.0.0.1:3999"], "does not answer"),
        (["attach", "bad/x", "--portal", "127.0.0.1:99999"], "invalid port"),
    ]
    for args, needle in cases:
        code, _out, err = sk_inproc(*args)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, err)
    # And once through the real binary, which must print the same single line.
    done = runner.query([SKYCACHE, "image", "create", "bad/x", "--size", "0"], check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "skycache: error: --size '0' is zero"
    ]
    assert lib_inventory(runner) == before


def test_dry_run_plans_and_export_restore(runner: Runner, env: Path) -> None:
    code, plan, err = sk_inproc("repo", "init", "dr", "--backend", "lvm", "--loop", "512M", "--dry-run")
    assert code == 0 and "plan:" in plan and "vgcreate" in plan, err
    assert lib_inventory(runner) == []
    lib_repo(runner, "dr", 512 << 20, env)
    lib_image(runner, "dr/img", 16 << 20)
    lib_export(runner, "dr/img")
    # Simulate a reboot: configfs and the shim are gone, files (state dir, LVs) are still there.
    iqn = lio.target_iqn("dr", "img")
    exp = lio.find_export(runner, iqn)
    assert exp is not None
    import rtslib_fb as rts  # the test plays a reboot: configfs directly

    for target in rts.FabricModule("iscsi").targets:
        if target.wwn == iqn:
            target.delete()
    for so in rts.RTSRoot().storage_objects:
        if so.name == exp.storage_object:
            so.delete()
    runner.run(["dmsetup", "remove", lio.shim_name("dr", "img")])
    assert lio.find_export(runner, iqn) is None
    code, out, err = sk_inproc("export", "restore")
    assert code == 0 and "restored" in out, err
    restored = lio.find_export(runner, iqn)
    assert restored is not None and restored.chap and restored.initiators == exp.initiators
    dev = lib_attach(runner, "dr/img")  # CHAP still matches
    assert dev.startswith("/dev/sd")
    code, td, err = sk_inproc("teardown", "--all", "--dry-run")
    assert code == 0 and "delete LIO target" in td and lib_inventory(runner) != [], err
    assert image.get_image(View(runner), "dr/img").exported
