"""Run every test tier and print one combined summary line (used by ``make test``).

Tiers: ``unit`` (host, no root, includes the benchmarks with timing disabled), ``lab`` (a real
kernel in lab VMs) and ``labhost`` (host-side tests that boot a lab themselves: ``lab up/exec``,
after the lab tier). The lab files are split into ``--lab-shards`` groups, each run in a lab VM of
its own at the same time (default: one VM per two host cores, so one on a 2-core machine). Each
shard runs its files in one boot.

Each tier (and lab shard) writes JUnit XML; the counts are summed from those files, and the last
line is ``total: N passed, N failed, N skipped`` so CI tools can read it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skycache.runner import Runner, SystemRunner

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "test-reports"
PY = sys.executable
_PRINT_LOCK = threading.Lock()
# Seconds each lab file took in a full tier run on this project's 2-core TCG machine (the
# `--durations` of `make test`); only used to balance the shards. Unknown files count as 120 s.
LAB_FILE_SECONDS = {
    "test_storage_repo.py": 420,
    "test_vmdisk_lifecycle.py": 480,
    "test_bench_lab.py": 300,
    "test_net_isolation.py": 120,
    "test_foundation_stack.py": 90,
    "test_net_natbench.py": 80,
    "test_cache_devices.py": 45,
    "test_sim_validation.py": 32,
    "test_net_shaping.py": 28,
    "test_cache_figures.py": 1,  # a measurement that skips itself unless asked for
}


def counts(xml_path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) from a pytest JUnit XML report."""
    if not xml_path.is_file():
        return 0, 1, 0  # the tier did not even produce a report: count it as a failure
    root = ET.parse(xml_path).getroot()  # noqa: S314 (our own pytest's report)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests - failed - skipped, failed, skipped


# The lab tier's budget on this project's 2-core TCG machine: `make test` must stay within 30 min
# (unit tier and setup included) with room for the tests other work adds.
LAB_BUDGET_S = 20 * 60


def file_seconds(xml_path: Path) -> dict[str, float]:
    """Seconds per test file (setup and teardown included) from a pytest JUnit XML report."""
    if not xml_path.is_file():
        return {}
    out: dict[str, float] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):  # noqa: S314 (our own pytest's report)
        module = case.get("classname", "").split(".")
        name = "/".join(module[:-1] if module and module[-1][:1].isupper() else module) + ".py"
        out[name] = out.get(name, 0.0) + float(case.get("time", 0) or 0)
    return out


def lab_time_report(reports: list[Path], wall_s: float, budget_s: float = LAB_BUDGET_S) -> list[str]:
    """One line per lab file, slowest first, then the tier's wall time against its budget."""
    per_file: dict[str, float] = {}
    for r in reports:
        for name, secs in file_seconds(r).items():
            per_file[name] = per_file.get(name, 0.0) + secs
    lines = ["lab files (seconds, slowest first):"]
    lines += [f"  {secs:7.0f}  {name}" for name, secs in sorted(per_file.items(), key=lambda kv: -kv[1])]
    verdict = "within" if wall_s <= budget_s else "WARNING: over"
    lines.append(f"lab tier: {wall_s / 60:.1f} min wall, {verdict} its budget of {budget_s / 60:.0f} min")
    return lines


def run_tier(
    runner: Runner, name: str, argv: list[str], *, prefix: str = "", pids: list[int] | None = None
) -> int:
    print(f"==> tier {name}: {' '.join(argv)}", flush=True)
    code = runner.stream(
        argv,
        on_line=lambda line: print(prefix + line, flush=True),
        timeout_s=4800,
        on_start=pids.append if pids is not None else None,
    )
    return 0 if code == 5 else code  # pytest's 5 = "no tests collected": not a failure


def default_shards() -> int:
    """One lab VM per two host cores: a lab VM has two vCPUs and, under TCG, keeps both busy.

    Measured on the project's 2-core machine: two VMs at once made every test 2-5x slower (the tiny
    bench scenario took over 20 min instead of 4.5), so one VM there finishes the tier first.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def lab_files(paths: list[str]) -> list[str]:
    """The lab test files under ``paths`` (files are kept as given)."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files += sorted(str(f.relative_to(ROOT) if f.is_absolute() else f) for f in p.glob("test_*.py"))
        else:
            files.append(path)
    return files


def shard(files: list[str], n: int) -> list[list[str]]:
    """Split ``files`` into at most ``n`` groups of about equal expected time (longest first)."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(n, len(files))))]
    load = [0] * len(groups)
    weight = {f: LAB_FILE_SECONDS.get(Path(f).name, 120) for f in files}
    for f in sorted(files, key=lambda f: -weight[f]):
        i = load.index(min(load))
        groups[i].append(f)
        load[i] += weight[f]
    return [g for g in groups if g]


# Switches of tests/lab, passed into the lab so that e.g. `SKYCACHE_LAB_SSH=1 make test-lab` does what
# the test's skip reason says: the gate of conftest.py, and the opt-in files (measurements, the slow
# ssh test; each says why).
LAB_SWITCHES = (
    "SKYCACHE_LAB_UNVERIFIED",
    "SKYCACHE_BENCH_FIGURES",
    "SKYCACHE_CACHE_FIGURES",
    "SKYCACHE_LAB_SSH",
)


def lab_argv(paths: list[str], report: Path, keyword: list[str]) -> list[str]:
    return [
        PY, "-m", "skycache.cli.main", "lab", "run", "--memory", "3G", "--cpus", "2",
        "--disk", "8G", "--disk", "8G", "--timeout", "4500", "--",
        # -v: one line per test (the lab's output reaches us line by line, so -q's dots would only
        # show at the end); the command log: every command run, for tools/command_profile.py
        "env", f"SKYCACHE_COMMAND_LOG={report.with_name(report.stem + '-commands.jsonl')}",
        *(f"{k}={os.environ.get(k, '0')}" for k in LAB_SWITCHES),
        PY, "-m", "pytest", *paths, "-v", "-p", "no:cacheprovider", "--durations=15",
        f"--junitxml={report}", *keyword,
    ]  # fmt: skip


def run_lab_shards(
    runner: Runner, groups: list[list[str]], keyword: list[str]
) -> dict[str, tuple[int, Path]]:
    """Run each group in its own lab VM, all at once; returns {shard name: (exit code, report)}."""
    pids: list[int] = []
    results: dict[str, tuple[int, Path]] = {}
    lock = threading.Lock()

    def one(i: int, group: list[str]) -> None:
        name = "lab" if len(groups) == 1 else f"lab{i + 1}"
        report = BUILD / f"{name}.xml"
        report.unlink(missing_ok=True)
        prefix = "" if len(groups) == 1 else f"[{name}] "
        code = run_tier(runner, name, lab_argv(group, report, keyword), prefix=prefix, pids=pids)
        with lock:
            results[name] = (code, report)

    pool = ThreadPoolExecutor(max_workers=len(groups))
    futures = [pool.submit(one, i, g) for i, g in enumerate(groups)]
    try:
        for f in futures:
            f.result()
    except BaseException:
        # Ctrl-C or a crash: `lab run` turns SIGTERM into killing its qemu, leaving no VM behind.
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiers", default="unit,lab,labhost", help="comma-separated: unit,lab,labhost")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument(
        "--lab-shards",
        type=int,
        default=int(os.environ.get("SKYCACHE_LAB_SHARDS", str(default_shards()))),
        help="lab VMs run at once, each with a share of the lab files (default: one per 2 host cores; "
        "env SKYCACHE_LAB_SHARDS)",
    )
    parser.add_argument("lab_paths", nargs="*", default=["tests/lab"], help="lab test paths")
    args = parser.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    runner = SystemRunner()
    tiers = args.tiers.split(",")
    codes: dict[str, int] = {}
    reports: dict[str, Path] = {}
    kw = ["-k", args.keyword] if args.keyword else []
    if "unit" in tiers:
        reports["unit"] = BUILD / "unit.xml"
        reports["unit"].unlink(missing_ok=True)
        codes["unit"] = run_tier(
            runner,
            "unit",
            [
                PY,
                "-m",
                "pytest",
                "tests/unit",
                "tests/benchmarks",
                "--benchmark-disable",
                "-q",
                f"--junitxml={reports['unit']}",
                *kw,
            ],
        )
    if "lab" in tiers:
        for old in [*BUILD.glob("lab*.xml"), *BUILD.glob("lab*-commands.jsonl")]:
            old.unlink()
        groups = shard(lab_files(args.lab_paths), args.lab_shards)
        started = time.monotonic()
        for name, (code, report) in sorted(run_lab_shards(runner, groups, kw).items()):
            codes[name], reports[name] = code, report
        lab_reports = [r for n, r in reports.items() if n.startswith("lab")]
        for line in lab_time_report(lab_reports, time.monotonic() - started):
            print(line, flush=True)
    if "labhost" in tiers:
        # On the host, after the lab tier (one VM at a time): `lab up` boots its own lab.
        reports["labhost"] = BUILD / "labhost.xml"
        reports["labhost"].unlink(missing_ok=True)
        codes["labhost"] = run_tier(
            runner,
            "labhost",
            [PY, "-m", "pytest", "tests/labhost", "-v", "-s", f"--junitxml={reports['labhost']}", *kw],
        )
    total = [0, 0, 0]
    for name, path in reports.items():
        p, f, s = counts(path)
        if codes[name] != 0 and f == 0:
            f = 1  # the tier failed outside any test (boot, collection): never report it green
        print(f"{name}: {p} passed, {f} failed, {s} skipped", flush=True)
        total = [total[0] + p, total[1] + f, total[2] + s]
    print(f"total: {total[0]} passed, {total[1]} failed, {total[2]} skipped", flush=True)
    return 1 if total[1] or any(codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
