"""Issue 3 acceptance, on a real kernel: LVM and file repositories, clones, LIO export, iSCSI attach,
ACL/CHAP refusal, secrets, unmarked objects, crash then teardown."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _storage import PORTAL, SKYCACHE, last_line, read_sha, sk, sk_json, teardown_all, write_pattern

from skycache import image, iscsi, lio
from skycache.runner import Runner


@pytest.fixture
def env(runner: Runner, scratch_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """Loop files on the scratch disk, state in a fresh directory; everything torn down after."""
    old = {k: os.environ.get(k) for k in ("SKYCACHE_LOOP_DIR", "SKYCACHE_STATE_DIR")}
    os.environ["SKYCACHE_LOOP_DIR"] = str(scratch_dir)
    os.environ["SKYCACHE_STATE_DIR"] = str(tmp_path / "state")
    yield scratch_dir
    teardown_all(runner)
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
    sk(runner, "repo", "init", "cl", "--backend", "lvm", "--loop", "2G")
    sk(runner, "image", "create", "cl/base", "--size", "64M")
    base_sha = write_pattern(runner, "/dev/cl/base", env, seed="base")
    for cow in ("thin", "snapshot", "copy"):
        sk(runner, "image", "clone", "cl/base", f"cl/{cow}", "--cow", cow)
        assert read_sha(runner, f"/dev/cl/{cow}", env) == base_sha, cow  # the clone starts as the base
        write_pattern(runner, f"/dev/cl/{cow}", env, seed=cow)
        assert read_sha(runner, "/dev/cl/base", env) == base_sha, f"writing {cow} clone changed the base"
    images = {i["name"]: i for i in sk_json(runner, "image", "list")}
    assert images["cl/base"]["read_only"]
    assert sorted(images["cl/base"]["clones"]) == ["copy", "snapshot", "thin"]
    assert {images[f"cl/{c}"]["cow"] for c in ("thin", "snapshot", "copy")} == {"thin", "snapshot", "copy"}
    # The base refuses writes (read-only LV: the kernel refuses to open it for writing).
    denied = runner.query(
        ["dd", "if=/dev/zero", "of=/dev/cl/base", "bs=4k", "count=1", "oflag=direct"], check=False
    )
    assert denied.returncode != 0
    assert read_sha(runner, "/dev/cl/base", env) == base_sha
    # Deleting a base with clones is refused; the clones themselves can go.
    refused = sk(runner, "image", "delete", "cl/base", check=False)
    assert refused.returncode != 0 and "clones" in refused.stderr
    sk(runner, "image", "delete", "cl/snapshot")
    # File images: copy clones only.
    sk(runner, "repo", "init", "fcl", "--backend", "file", "--dir", str(env / "fcl"))
    sk(runner, "image", "create", "fcl/base", "--size", "16M")
    fbase = env / "fcl" / "skycache-base.img"
    fsha = write_pattern(runner, str(fbase), env, seed="fbase")
    bad = sk(runner, "image", "clone", "fcl/base", "fcl/t", "--cow", "thin", check=False)
    assert bad.returncode != 0 and "copy" in bad.stderr
    sk(runner, "image", "clone", "fcl/base", "fcl/c", "--cow", "copy")
    write_pattern(runner, str(env / "fcl" / "skycache-c.img"), env, seed="fc")
    assert read_sha(runner, str(fbase), env) == fsha
    assert not os.stat(fbase).st_mode & 0o222


def test_acl_chap_refusal_and_no_secret_leaks(runner: Runner, env: Path) -> None:
    sk(runner, "repo", "init", "sec", "--backend", "lvm", "--loop", "512M")
    sk(runner, "image", "create", "sec/img", "--size", "16M")
    added = sk(runner, "-vv", "export", "add", "sec/img", "--listen", PORTAL)
    iqn = lio.target_iqn("sec", "img")
    secret_file = lio.secret_path(iqn)
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    secret = json.loads(secret_file.read_text())["password"]
    portal = iscsi.parse_portal(PORTAL)
    # An initiator that is not in the ACL is refused, even with the right secret.
    iscsi.ensure_iface(runner, "skycache-other", "iqn.2026-11.org.skycache:not-in-acl")
    try:
        with pytest.raises(iscsi.LoginRefused) as acl_err:
            iscsi.attach(runner, iqn, portal, chap=("skycache", secret), iface="skycache-other", timeout_s=20)
    finally:
        iscsi.delete_iface(runner, "skycache-other")
    # The right initiator with a wrong secret is refused.
    wrong = "wrong-secret-0123456789"
    with pytest.raises(iscsi.LoginRefused) as chap_err:
        iscsi.attach(runner, iqn, portal, chap=("skycache", wrong), timeout_s=20)
    assert wrong not in str(chap_err.value) and secret not in str(acl_err.value)
    assert not [s for s in iscsi.sessions(runner) if s.iqn == iqn]
    # The right one gets in; nothing printed along the way shows the secret.
    attached = sk(runner, "-vv", "attach", "sec/img", "--portal", PORTAL)
    outputs = [added, attached]
    outputs += [sk(runner, *a, "--json") for a in (["export", "list"], ["inventory"], ["image", "list"])]
    outputs += [sk(runner, "export", "show", "sec/img")]
    outputs += [sk(runner, "-vv", "detach", "sec/img")]
    for done in outputs:
        assert secret not in done.stdout and secret not in done.stderr, done.argv
    shown = sk(runner, "export", "show", "sec/img", "--show-secret")
    assert secret in shown.stdout  # only on explicit request
    saved = lio.save_path()
    assert oct(saved.stat().st_mode & 0o777) == "0o600"


def test_unmarked_objects_survive_teardown(runner: Runner, env: Path) -> None:
    backing = env / "handmade.img"
    runner.run(["truncate", "-s", "256M", str(backing)])
    loop = runner.run(["losetup", "--find", "--show", str(backing)]).stdout.strip()
    try:
        runner.run(["vgcreate", "-y", "handvg", loop])
        runner.run(["lvcreate", "-y", "-L", "32M", "-n", "handlv", "handvg"])
        sk(runner, "repo", "init", "own", "--backend", "lvm", "--loop", "512M")
        sk(runner, "image", "create", "own/img", "--size", "16M")
        refused = sk(runner, "image", "delete", "handvg/handlv", check=False)
        assert refused.returncode != 0 and "not created by skycache" in refused.stderr
        listed = json.dumps(sk_json(runner, "inventory"))
        assert "handvg" not in listed and "own/img" in listed
        sk(runner, "teardown", "--all")
        assert sk_json(runner, "inventory") == []
        lvs = runner.query(["lvs", "--noheadings", "-o", "lv_name", "handvg"]).stdout.split()
        assert lvs == ["handlv"]
        again = sk(runner, "image", "delete", "handvg/handlv", check=False)
        assert again.returncode != 0 and "not created by skycache" in again.stderr
    finally:
        runner.run(["vgremove", "-y", "-f", "handvg"], check=False)
        runner.run(["pvremove", "-y", loop], check=False)
        runner.run(["losetup", "-d", loop], check=False)
        backing.unlink(missing_ok=True)


@pytest.mark.parametrize("when", [2.0, 4.0])
def test_kill_9_mid_clone_then_teardown(runner: Runner, env: Path, when: float) -> None:
    sk(runner, "repo", "init", "k9", "--backend", "lvm", "--loop", "3G")
    sk(runner, "image", "create", "k9/base", "--size", "1G")
    # coreutils timeout sends SIGKILL: skycache dies mid-plan with no chance to undo.
    runner.query(
        ["timeout", "-s", "KILL", str(when), SKYCACHE, "image", "clone", "k9/base", "k9/c", "--cow", "copy"],
        check=False,
    )
    sk(runner, "teardown", "--all")
    assert sk_json(runner, "inventory") == []


@pytest.mark.parametrize("when", [1.5, 3.0, 5.0])
def test_kill_9_mid_attach_then_teardown(runner: Runner, env: Path, when: float) -> None:
    sk(runner, "repo", "init", "k9a", "--backend", "lvm", "--loop", "512M")
    sk(runner, "image", "create", "k9a/img", "--size", "16M")
    sk(runner, "export", "add", "k9a/img", "--listen", PORTAL)
    runner.query(
        ["timeout", "-s", "KILL", str(when), SKYCACHE, "attach", "k9a/img", "--portal", PORTAL], check=False
    )
    sk(runner, "teardown", "--all")
    assert sk_json(runner, "inventory") == []
    assert not [s for s in iscsi.sessions(runner) if s.iqn == lio.target_iqn("k9a", "img")]


def test_bad_input_changes_nothing(runner: Runner, env: Path) -> None:
    sk(runner, "repo", "init", "bad", "--backend", "lvm", "--loop", "512M")
    before = sk_json(runner, "inventory")
    cases = [
        (["image", "create", "bad/Bad Name", "--size", "8M"], "invalid"),
        (["image", "create", "bad/x", "--size", "0"], "zero"),
        (["image", "create", "bad/x", "--size", "-5M"], "not a size"),
        (["image", "create", "bad/x", "--size", "64T"], "larger than the free space"),
        (["image", "create", "nosuch/x", "--size", "8M"], "does not exist"),
        (["image", "delete", "bad/nosuch"], "does not exist"),
        (["repo", "init", "bad2", "--backend", "lvm", "--device", "/dev/nosuchdisk"], "does not exist"),
        (["attach", "bad/x", "--portal", "127.0.0.1:3999"], "does not answer"),
        (["attach", "bad/x", "--portal", "127.0.0.1:99999"], "invalid port"),
    ]
    for args, needle in cases:
        done = sk(runner, *args, check=False)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr, (args, done.stderr)
    assert sk_json(runner, "inventory") == before


def test_dry_run_plans_and_export_restore(runner: Runner, env: Path) -> None:
    plan = sk(runner, "repo", "init", "dr", "--backend", "lvm", "--loop", "512M", "--dry-run")
    assert "plan:" in plan.stdout and "vgcreate" in plan.stdout
    assert sk_json(runner, "inventory") == []
    sk(runner, "repo", "init", "dr", "--backend", "lvm", "--loop", "512M")
    sk(runner, "image", "create", "dr/img", "--size", "16M")
    sk(runner, "export", "add", "dr/img", "--listen", PORTAL)
    # Simulate a reboot: configfs and the shim are gone, files (state dir, LVs) are still there.
    iqn = lio.target_iqn("dr", "img")
    exp = lio.find_export(iqn)
    assert exp is not None
    with lio._rtslib() as rts:
        for target in rts.FabricModule("iscsi").targets:
            if target.wwn == iqn:
                target.delete()
        for so in rts.RTSRoot().storage_objects:
            if so.name == exp.storage_object:
                so.delete()
    runner.run(["dmsetup", "remove", lio.shim_name("dr", "img")])
    assert lio.find_export(iqn) is None
    assert "target" in sk(runner, "export", "restore").stdout
    restored = lio.find_export(iqn)
    assert restored is not None and restored.chap and restored.initiators == exp.initiators
    dev = last_line(sk(runner, "attach", "dr/img", "--portal", PORTAL))  # CHAP still matches
    assert dev.startswith("/dev/sd")
    td = sk(runner, "teardown", "--all", "--dry-run")
    assert "remove export" in td.stdout and sk_json(runner, "inventory") != []
    assert image.get_image(runner, "dr/img").exported
