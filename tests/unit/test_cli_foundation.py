"""The CLI's contract: --version, --help everywhere, one-line errors with non-zero exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from skycache.runner import SystemRunner

SKYCACHE = [sys.executable, "-m", "skycache.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out = SystemRunner().run([*SKYCACHE, *args], check=False, env=env or {}, timeout_s=60)
    return out.returncode, out.stdout, out.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("skycache ")


@pytest.mark.parametrize(
    "group", ["lab", "repo", "image", "export", "node", "cache", "disk", "net", "bench", "sim", "suite"]
)
def test_every_group_has_help(group: str) -> None:
    code, out, _ = run(group, "--help")
    assert code == 0 and "Usage" in out


def test_lab_without_kernel_is_one_line_error(tmp_path: Path) -> None:
    code, _, err = run("lab", "info", env={"SKYCACHE_CACHE_DIR": str(tmp_path)})
    assert code == 1
    assert err.strip().splitlines() == [
        "skycache: error: lab kernel not fetched: run 'make setup' or 'skycache lab fetch-kernel'"
    ]
    assert "Traceback" not in err


def test_lab_run_bad_accel_is_refused() -> None:
    code, _, err = run("lab", "run", "--accel", "warp", "--", "true")
    assert code == 2 and "'warp'" in err and "Traceback" not in err


def test_lab_run_bad_disk_size_names_it() -> None:
    if (
        not os.environ.get("SKYCACHE_CACHE_DIR")
        and not (Path.home() / ".cache/skycache/lab/kernel/kernel.json").exists()
    ):
        pytest.skip("needs the lab kernel (make setup)")
    code, _, err = run("lab", "run", "--disk", "12Q", "--", "true")
    assert code == 2 and "'12Q'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--cpus", "99999999999999999999999"),
        ("--cpus", "0"),
        ("--cpus", "2.5"),
        ("--timeout", "-1"),
        ("--timeout", "0"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "1e300"),
    ],
)
def test_lab_run_refuses_cpus_and_timeouts_out_of_bounds_before_booting(option: str, value: str) -> None:
    # Refused before the kernel is looked up: the same one line with or without a fetched kernel.
    code, _, err = run("lab", "run", option, value, "--", "true")
    assert code == 2 and repr(value) in err and option in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
