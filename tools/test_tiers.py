"""Run every test tier and print one combined summary line (used by ``make test``).

Tiers: ``unit`` (host, no root, includes the benchmarks with timing disabled) and ``lab`` (inside one
lab boot: a real kernel). Each tier writes JUnit XML; the counts are summed from those files, and
the last line is ``total: N passed, N failed, N skipped`` so CI tools can read it.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from skycache.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "test-reports"
PY = sys.executable


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


def run_tier(runner: Runner, name: str, argv: list[str]) -> int:
    print(f"==> tier {name}: {' '.join(argv)}", flush=True)
    code = runner.stream(argv, on_line=lambda line: print(line, flush=True), timeout_s=4800)
    return 0 if code == 5 else code  # pytest's 5 = "no tests collected": not a failure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiers", default="unit,lab", help="comma-separated: unit,lab")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument("lab_paths", nargs="*", default=["tests/lab"], help="lab test paths")
    args = parser.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    runner = Runner()
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
        reports["lab"] = BUILD / "lab.xml"
        reports["lab"].unlink(missing_ok=True)
        codes["lab"] = run_tier(
            runner,
            "lab",
            [
                PY,
                "-m",
                "skycache.cli.main",
                "lab",
                "run",
                "--memory",
                "3G",
                "--cpus",
                "2",
                "--disk",
                "8G",
                "--disk",
                "8G",
                "--timeout",
                "4500",
                "--",
                PY,
                "-m",
                "pytest",
                *args.lab_paths,
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={reports['lab']}",
                *kw,
            ],
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
