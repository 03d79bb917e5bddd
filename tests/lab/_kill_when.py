"""Test tool: start a command, wait until it is visibly in the middle of its work, then SIGKILL it.

``python _kill_when.py (--path P | --gone P | --session IQN) [--delay S] [--timeout S] -- CMD...``

Prints ``killed`` when the condition was reached and the command was killed, ``finished`` when it
ended first, ``timeout`` when neither happened. This is a test harness: it needs a process running
in the background while it watches, which the library's blocking runner does not offer.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path


def session_exists(iqn: str) -> bool:
    for f in Path("/sys/class/iscsi_session").glob("*/targetname"):
        try:
            if f.read_text().strip() == iqn:
                return True
        except OSError:
            continue
    return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path")
    ap.add_argument("--session")
    ap.add_argument("--gone", help="kill once this path has disappeared")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print("finished", flush=True)
            return 0
        if (
            (args.path and Path(args.path).exists())
            or (args.gone and not Path(args.gone).exists())
            or (args.session and session_exists(args.session))
        ):
            time.sleep(args.delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            print("killed", flush=True)
            return 0
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    print("timeout", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
