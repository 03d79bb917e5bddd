"""Shared helpers of the storage lab tests: run the real CLI, write and check data patterns."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from skycache.runner import Completed, Runner

SKYCACHE = str(Path(sys.executable).with_name("skycache"))
# The storage verbs alone: the full CLI's import of the bench plugin costs 30-60 s per call under TCG.
STORAGE_CLI = [sys.executable, str(Path(__file__).with_name("_storage_cli.py"))]
PORTAL = "127.0.0.1:3260"


def sk(runner: Runner, *args: str, check: bool = True, timeout_s: float = 600) -> Completed:
    """Run the ``skycache`` CLI's storage, node, cache and disk verbs; on failure, the assertion shows
    its output.

    In this process (the same typer app and error handling as the ``skycache`` command), because
    under TCG a fresh Python that imports the CLI takes over a minute in the lab: most of it is
    reading modules over the shared root filesystem. Calls with ``-v``/``-vv`` run in a process of
    their own, so their log output is theirs alone; ``timeout_s`` applies only to those.
    """
    if any(a in ("-v", "-vv", "--verbose") for a in args):
        done = runner.query([*STORAGE_CLI, *args], check=False, timeout_s=timeout_s)
    else:
        code, out, err = sk_inproc(*args)
        done = Completed(("skycache", *args), code, out, err)
    if check:
        assert done.returncode == 0, (
            f"skycache {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def sk_json(runner: Runner, *args: str) -> Any:
    return json.loads(sk(runner, *args, "--json").stdout)


def last_line(done: Completed) -> str:
    return done.stdout.strip().splitlines()[-1]


def write_pattern(runner: Runner, device: str, scratch: Path, *, mib: int = 4, seed: str = "a") -> str:
    """Write ``mib`` MiB of pseudo-random data at the start of ``device``; returns its sha256."""
    pattern = scratch / f"pattern-{seed}-{os.getpid()}"
    data = os.urandom(mib << 20)  # random: a pattern no earlier write can match by accident
    pattern.write_bytes(data)
    runner.run(["dd", f"if={pattern}", f"of={device}", "bs=1M", "oflag=direct", "conv=fsync", "status=none"])
    pattern.unlink()
    return hashlib.sha256(data).hexdigest()


def read_sha(runner: Runner, device: str, scratch: Path, *, mib: int = 4) -> str:
    out = scratch / f"readback-{os.getpid()}"
    runner.run(["dd", f"if={device}", f"of={out}", "bs=1M", f"count={mib}", "iflag=direct", "status=none"])
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def teardown_all(runner: Runner) -> None:
    sk(runner, "teardown", "--all", check=False)


# In-process setup through the library (each CLI call costs many seconds under TCG; the CLI itself
# is exercised where its behaviour is what a test checks).


def _view(runner: Runner) -> Any:
    from skycache.storage.view import View

    return View(runner)


def lib_repo(runner: Runner, name: str, size: int, directory: Path) -> None:
    from skycache.storage import repository

    repository.plan_init_lvm(_view(runner), name, loop_size=size, directory=str(directory)).apply(runner)


def lib_image(runner: Runner, ref: str, size: int) -> None:
    from skycache.storage import image

    image.plan_create(_view(runner), ref, size=size).apply(runner)


def lib_export(runner: Runner, ref: str) -> None:
    from skycache.storage import image
    from skycache.storage.kernel import lio

    image.plan_export(_view(runner), ref, initiators=[], listen=lio.parse_listen(PORTAL)).apply(runner)


def lib_attach(runner: Runner, ref: str) -> str:
    """Log in to an exported image; its block device (/dev/sdX)."""
    from skycache.storage import image
    from skycache.storage.kernel import iscsi

    plan, link = image.plan_attach(_view(runner), ref, iscsi.parse_portal(PORTAL))
    plan.apply(runner)
    return runner.resolve(link) or link


def lib_teardown(runner: Runner) -> None:
    from skycache.storage import teardown

    teardown.plan_teardown(_view(runner)).apply(runner)


def lib_inventory(runner: Runner) -> list[dict[str, str]]:
    from skycache.storage import inventory

    return [i.as_dict() for i in inventory.collect(_view(runner)).items()]


def sk_inproc(*args: str) -> tuple[int, str, str]:
    """The storage CLI in this process (exit code, stdout, stderr), with the ``skycache`` error handling."""
    import contextlib
    import io

    import _storage_cli

    from skycache.cli.common import run_app

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_app(_storage_cli.app, args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()
