"""Progress lines for a log (no terminal: CI, ``make demo | tee``): one line per finished run with
its count and an ETA, and the notes of long steps, so that the log is never silent for minutes.

    [7/24] ok rep 1 lvm-iscsi/randread/cold, ETA 4m10s

The ETA is the mean time of the runs finished so far times the runs left (measured from the first
run's start, so the workspace preparation before it does not count as a run). With "auto"
repetitions the total is the cap, and the line says so ("[7/40 at most]").
"""

from __future__ import annotations

import time
from collections.abc import Callable

from skycache.bench.estimate import fmt_duration


class PlainReporter:
    def __init__(self, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write
        self.clock = clock
        self.total = 0
        self.at_most = False
        self.done = 0
        self.first_start: float | None = None

    def begin(self, total: int, *, at_most: bool = False) -> None:
        self.total, self.at_most = total, at_most

    def step(self, text: str) -> None:
        if self.first_start is None:
            self.first_start = self.clock()

    def eta_s(self) -> float | None:
        if self.first_start is None or self.done == 0:
            return None
        per_run = (self.clock() - self.first_start) / self.done
        return per_run * max(0, self.total - self.done)

    def line(self, text: str, ok: bool) -> str:
        total = f"{self.total} at most" if self.at_most else str(self.total)
        eta = self.eta_s()
        tail = "" if eta is None else f", ETA {fmt_duration(eta)}" + (" at most" if self.at_most else "")
        return f"[{self.done}/{total}] {'ok' if ok else 'FAILED'} {text}{tail}"

    def finished(self, text: str, ok: bool) -> None:
        self.done += 1
        self.write(self.line(text, ok))

    def note(self, text: str) -> None:
        self.write(f"bench: {text}")


class Steps:
    """Progress of a phase of several slow steps (drawing plots, writing a report), one line each
    with its count and the time since the phase began, for logs as well as terminals:

        drawing plots (3 of 4: latency-percentiles.png) ... 12.4 s

    ``done`` closes the phase with its total time, so a log shows where the minutes went.
    """

    def __init__(
        self, what: str, total: int, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what, self.total, self.write, self.clock = what, total, write, clock
        self.started = clock()
        self.count = 0

    def elapsed(self) -> str:
        return f"{self.clock() - self.started:.1f} s"

    def step(self, name: str) -> None:
        self.count += 1
        self.write(f"{self.what} ({self.count} of {self.total}: {name}) ... {self.elapsed()}")

    def done(self, text: str = "done") -> None:
        self.write(f"{self.what}: {text} in {self.elapsed()}")


def quiet(_: str) -> None:
    """The progress callback of callers that show none (library use, tests)."""
