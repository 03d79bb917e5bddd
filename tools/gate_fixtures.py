"""Make the regression gate's fixtures from a real run: ``base/``, ``regressed/`` and ``aa/``.

``python tools/gate_fixtures.py RUN_DIR OUT_DIR --stack lvm-iscsi --factor 0.5``

- ``base/``: the run's manifest, scenario and tidy table as they are;
- ``regressed/``: the same table with the throughput of ``--stack`` (only that stack: a reference
  stack beside it is left as measured) times FACTOR and its latencies divided by it; the gate must
  fail on it (``make bench-gate-selftest``);
- ``aa/``: the same rounds in reverse order (round k becomes round n + 1 - k, every condition of a
  round together): the same measurements, so the gate must pass.

Both keep the base's manifest and run id (only the description says what was changed), so they are
comparable with it and exercise two runs with the same id. Only a test fixture: nothing reads the
raw fio files of these copies.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

THROUGHPUT = ("iops", "bw_bytes")
KEPT = ("manifest.json", "scenario.toml", "tidy.parquet")


def _copy(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    for name in KEPT:
        shutil.copy2(run / name, out / name)


def _describe(out: Path, what: str) -> None:
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["description"] = what
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def regressed(table: pd.DataFrame, stack: str, factor: float) -> pd.DataFrame:
    out = table.copy()
    slowed = out["stack"] == stack
    latencies = [c for c in out.columns if c.startswith(("lat_", "clat_", "slat_")) and c.endswith("_ns")]
    out.loc[slowed, list(THROUGHPUT)] = out.loc[slowed, list(THROUGHPUT)] * factor
    out.loc[slowed, latencies] = out.loc[slowed, latencies] / factor
    return out


def rounds_reversed(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    measured = sorted({int(r) for r in out["rep"] if int(r) > 0})
    mapping = dict(zip(measured, reversed(measured), strict=True))
    out["rep"] = [mapping.get(int(r), int(r)) for r in out["rep"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (the base)")
    ap.add_argument("out", type=Path, help="where base/, regressed/ and aa/ go (must not exist)")
    ap.add_argument("--stack", required=True, help="the stack under test, the one slowed in regressed/")
    ap.add_argument("--factor", type=float, required=True, help="regressed/'s throughput factor (< 1)")
    args = ap.parse_args()
    table = pd.read_parquet(args.run / "tidy.parquet")
    if args.stack not in set(table["stack"]):
        raise SystemExit(f"--stack {args.stack}: not a stack of {args.run}")
    _copy(args.run, args.out / "base")
    slowed = f"{args.stack}'s throughput x {args.factor:g}, latencies / {args.factor:g}"
    for name, changed, what in (
        ("regressed", regressed(table, args.stack, args.factor), slowed),
        ("aa", rounds_reversed(table), "its rounds in reverse order"),
    ):
        _copy(args.run, args.out / name)
        changed.to_parquet(args.out / name / "tidy.parquet", index=False)
        _describe(args.out / name, f"gate fixture: {args.run.name} with {what}")
    print(f"wrote {args.out}/base, regressed (x {args.factor:g} on {args.stack}), aa")


if __name__ == "__main__":
    main()
