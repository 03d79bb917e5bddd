"""Where did the time go? Summarise a ``SKYCACHE_COMMAND_LOG`` file (one JSON line per command).

``python tools/command_profile.py build/test-reports/lab1-commands.jsonl [--top 20]`` prints, per
program (and per ``lvm``/``dmsetup``/``iscsiadm`` sub-command), how many times it ran and the total,
mean and max seconds, slowest first; then the total command time and the wall span of the log.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

# Programs whose first argument names what they do: "dmsetup status" and "dmsetup create" differ a lot.
SUBCOMMAND_PROGRAMS = {"dmsetup", "iscsiadm", "lvm", "ip", "tc", "iptables", "blockdev", "losetup"}


def key(argv: list[str]) -> str:
    prog = Path(argv[0]).name if argv else "?"
    if prog in SUBCOMMAND_PROGRAMS and len(argv) > 1:
        return f"{prog} {argv[1]}"
    return prog


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", type=Path, help="a SKYCACHE_COMMAND_LOG file")
    parser.add_argument("--top", type=int, default=25, help="rows to print (default 25)")
    args = parser.parse_args()
    if not args.log.is_file():
        print(f"command_profile: error: {args.log} does not exist", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = defaultdict(list)
    first, last = float("inf"), 0.0
    for n, line in enumerate(args.log.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
            times[key(rec["argv"])].append(float(rec["s"]))
            first, last = min(first, rec["t"]), max(last, rec["t"] + rec["s"])
        except (ValueError, KeyError, TypeError):
            print(f"command_profile: skipping line {n}: not a command record", file=sys.stderr)
    rows = sorted(times.items(), key=lambda kv: -sum(kv[1]))
    print(f"{'command':24s} {'runs':>6s} {'total s':>9s} {'mean s':>8s} {'max s':>8s}")
    for name, ts in rows[: args.top]:
        print(f"{name:24s} {len(ts):6d} {sum(ts):9.1f} {sum(ts) / len(ts):8.2f} {max(ts):8.2f}")
    total = sum(sum(ts) for ts in times.values())
    span = max(0.0, last - first)
    runs = sum(len(ts) for ts in times.values())
    print(f"total: {runs} commands, {total:.1f} s in commands, {span:.1f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
