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
    """Run the real ``skycache`` CLI; on failure, the assertion shows its output."""
    done = runner.query([*STORAGE_CLI, *args], check=False, timeout_s=timeout_s)
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
    data = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(mib * 32768))
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
