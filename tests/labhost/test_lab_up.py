"""`skycache lab up/exec/status/down` for real: one lab booted on the host, used by real
`skycache` processes, then powered off. Also the lab benchmark: whole-process times of `lab exec`
on the running lab and of `skycache repo list` on the host, printed with the machine's load.

Runs on the host (not in a lab VM: it boots one), as the `labhost` tier of `make test`.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKYCACHE = str(Path(sys.executable).parent / "skycache")
REPORT = ROOT / "build" / "test-reports" / "lab-exec-speed.json"
RUNS = 5


def sky(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([SKYCACHE, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check:
        assert done.returncode == 0, done
    return done


UP = ("lab", "up", "--disk", "256M", "--memory", "2G", "--timeout", "30min")


@pytest.fixture(scope="module")
def kept_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kept") / "kept.img"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, kept_disk: Path) -> Iterator[dict[str, object]]:
    os.environ["SKYCACHE_LAB_SESSION"] = str(tmp_path_factory.mktemp("lab-session") / "up")
    started = time.time()
    up = sky(*UP, "--disk-file", f"{kept_disk}:128M", timeout=900)
    boot_s = time.time() - started
    print(f"\nlab up: exit {up.returncode} in {boot_s:.1f} s\n{up.stderr}", flush=True)
    assert up.returncode == 0, up
    assert up.stdout.strip().endswith("stop it with `skycache lab down`")
    status = json.loads(sky("lab", "status", "--json", check=True).stdout)
    try:
        yield {"boot_s": boot_s, **status}
    finally:
        sky("lab", "down", timeout=180)


def test_status_reports_the_running_lab(lab: dict[str, object], kept_disk: Path) -> None:
    assert lab["state"] == "up"
    assert lab["disk_sizes"] == [256 * 1024**2]
    assert lab["disk_files"] == [str(kept_disk)]
    server = lab["server"]
    assert isinstance(server, dict) and server["lab"]["warm"] is True
    assert "token" not in lab


def test_exit_codes_and_streams_are_the_commands(lab: dict[str, object]) -> None:
    done = sky("lab", "exec", "--", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (done.returncode, done.stdout, done.stderr) == (5, "out\n", "err\n")


def test_the_lab_stays_up_between_commands_with_its_disk(lab: dict[str, object]) -> None:
    sky("lab", "exec", "--", "sh", "-c", "echo kept > /tmp/skycache-lab-up-check", check=True)
    assert sky("lab", "exec", "--", "cat", "/tmp/skycache-lab-up-check", check=True).stdout == "kept\n"
    disks = sky(
        "lab", "exec", "--", "sh", "-c", 'test -b "$SKYCACHE_LAB_DISKS" && echo "$SKYCACHE_LAB_DISKS"'
    )
    assert disks.returncode == 0 and disks.stdout.strip() == "/dev/vda"


def test_the_guest_has_no_route_out(lab: dict[str, object]) -> None:
    # qemu's user network is restrict=on and the guest gets no default route: only the forward in.
    routes = sky("lab", "exec", "--", "ip", "-4", "route", "show", "default", check=True)
    assert routes.stdout.strip() == ""


def test_ctrl_c_reaches_the_command_in_the_lab(lab: dict[str, object]) -> None:
    client = subprocess.Popen(
        [SKYCACHE, "lab", "exec", "--", "sh", "-c", "echo ready; exec sleep 120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert client.stdout is not None
    assert client.stdout.readline() == "ready\n"
    began = time.time()
    client.send_signal(signal.SIGINT)
    code = client.wait(timeout=60)
    assert code == 128 + signal.SIGINT
    assert time.time() - began < 30
    left = sky("lab", "exec", "--", "sh", "-c", "pgrep -x sleep || true", check=True)
    assert left.stdout.strip() == ""


def test_storage_verbs_run_warm_in_the_lab(lab: dict[str, object]) -> None:
    done = sky("lab", "exec", "--", "skycache", "repo", "list")
    assert done.returncode == 0, done
    assert done.stdout.split()[:2] == ["NAME", "BACKEND"]
    bad = sky("lab", "exec", "--", "skycache", "repo", "init", "r1", "--backend", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("skycache: error: ")


def _times(argv: list[str]) -> list[float]:
    out = []
    for _ in range(RUNS):
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
        out.append(time.perf_counter() - began)
        assert done.returncode == 0, done
    return out


def test_lab_benchmark_prints_whole_process_times(lab: dict[str, object]) -> None:
    """Figures, not assertions: the goals (docs/lab.md) are judged from what this prints."""
    cases = {
        "host: skycache repo list": [SKYCACHE, "repo", "list"],
        "lab exec -- true": [SKYCACHE, "lab", "exec", "--", "true"],
        "lab exec -- skycache --version": [SKYCACHE, "lab", "exec", "--", "skycache", "--version"],
        "lab exec -- skycache repo list": [SKYCACHE, "lab", "exec", "--", "skycache", "repo", "list"],
    }
    load_before = os.getloadavg()
    rows = {name: _times(argv) for name, argv in cases.items()}
    load_after = os.getloadavg()
    print(f"\nlab benchmark: whole-process wall time, n={RUNS} each, interleaving none", flush=True)
    print(f"  lab up took {lab['boot_s']:.1f} s; host load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    for name, secs in rows.items():
        print(
            f"  {name:32s} median {statistics.median(secs):6.2f} s (min {min(secs):.2f}, max {max(secs):.2f})"
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "n": RUNS,
                "boot_s": lab["boot_s"],
                "load1_before": load_before[0],
                "load1_after": load_after[0],
                "seconds": rows,
                "median_s": {k: statistics.median(v) for k, v in rows.items()},
            },
            indent=2,
        )
    )


def test_a_power_cut_keeps_what_the_guest_flushed_to_a_kept_disk(
    lab: dict[str, object], kept_disk: Path
) -> None:
    """SIGKILL to the VM (no shutdown, no sync in the guest), then a new boot on the same file."""
    where = sky("lab", "exec", "--", "sh", "-c", 'echo "$SKYCACHE_LAB_DISK_FILES"', check=True).stdout.split()
    assert where == [f"/dev/vdb={kept_disk}"]
    written = sky(
        "lab",
        "exec",
        "--",
        "sh",
        "-c",
        "head -c 8M /dev/urandom > /tmp/flushed && dd if=/tmp/flushed of=/dev/vdb bs=1M oflag=direct "
        "conv=fsync status=none && sha256sum < /tmp/flushed",
        check=True,
    ).stdout.split()[0]
    pid = json.loads(sky("lab", "status", "--json", check=True).stdout)["nodes"][0]["pid"]
    os.killpg(pid, signal.SIGKILL)
    for _ in range(60):
        if sky("lab", "status").returncode == 1:
            break
        time.sleep(0.5)
    assert sky("lab", "status").stdout == "lab: down\n"
    again = sky(*UP, "--disk-file", f"{kept_disk}:128M", timeout=900)
    assert again.returncode == 0, again
    read = sky("lab", "exec", "--", "sh", "-c", "head -c 8M /dev/vdb | sha256sum", check=True).stdout.split()[
        0
    ]
    assert read == written
    # The scratch disk is new at every boot: empty again.
    zero = sky("lab", "exec", "--", "sh", "-c", "head -c 1M /dev/vda | tr -d '\\0' | wc -c", check=True)
    assert zero.stdout.strip() == "0"


def test_down_powers_off_and_status_says_so(lab: dict[str, object], kept_disk: Path) -> None:
    pid = json.loads(sky("lab", "status", "--json", check=True).stdout)["nodes"][0]["pid"]
    done = sky("lab", "down", check=True, timeout=180)
    assert done.stdout.startswith("lab: down after ")
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    status = sky("lab", "status")
    assert (status.returncode, status.stdout) == (1, "lab: down\n")
    assert sky("lab", "exec", "--", "true").stderr.startswith("skycache: error: no lab is up")
    assert kept_disk.stat().st_size == 128 * 1024**2  # `lab down` keeps a --disk-file
