"""Plans as data: what a multi-step change will run, shown before it runs, undone when it fails.

Following blivet's action list and Terraform's plan/apply: a planner reads the system's state first
(:class:`skycache.storage.view.View`) and returns a flat :class:`Plan` of :class:`Action` records.
Each action holds the exact steps it runs and those that take it back:

- :class:`Command`: one mutating command, as the argv list (and stdin) the runner will execute;
- :class:`Wait`: a read-only wait between commands (a device link appearing, a cache becoming
  clean), polled through the runner with a time limit.

Nothing is decided while applying: ``--dry-run`` prints :meth:`Plan.describe` and
:meth:`Plan.commands` is, in order, every mutating command the real run executes (the lab tests
compare it with the runner's command log). :meth:`Plan.apply` runs the actions in order and, when
one fails, runs the undo steps of every action already done (newest first, including the failing
one when some of its steps ran) before raising, so a failure never leaves a half-built stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from skycache.errors import SkycacheError
from skycache.runner import Arg, CommandError, Retry, Runner, Secret, render

log = logging.getLogger("skycache.plan")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class Command:
    """One mutating command: exactly what runs, how long it may take and which exit codes are fine."""

    argv: tuple[Arg, ...]
    stdin: str | Secret | None = None  # handed to the process, never logged; shown only if show_stdin
    timeout_s: float | None = None
    retry: Retry | None = None
    ok_codes: frozenset[int] = frozenset({0})
    # What an exit code means, for the one-line error (iscsiadm's 24: "authorization failure").
    meanings: tuple[tuple[int, str], ...] = ()
    # Plain input that is what the command does (an iptables-restore ruleset), not private data:
    # the plan shows it, as a here-document.
    show_stdin: bool = False

    def render(self) -> str:
        """The masked command line, as plans and the command log show it."""
        return render(self.argv)

    def shown(self) -> str:
        line = self.render()
        if self.show_stdin and isinstance(self.stdin, str):
            return f"{line} <<'EOF'\n{self.stdin.rstrip(chr(10))}\nEOF"
        if self.stdin is not None:
            line += " < (stdin)"
        return line

    def run(self, runner: Runner) -> None:
        stdin = self.stdin.value if isinstance(self.stdin, Secret) else self.stdin
        done = runner.run(
            list(self.argv), stdin=stdin, timeout_s=self.timeout_s, retry=self.retry, check=False
        )
        if done.returncode not in self.ok_codes:
            error = CommandError(
                done.argv, done.returncode, done.stdout, done.stderr, target=runner.target.name
            )
            meaning = dict(self.meanings).get(done.returncode)
            if meaning is not None:
                raise SkycacheError(meaning) from error
            raise error


class Probe(Protocol):
    """A read-only condition a :class:`Wait` polls: ``poll`` returns (done, progress text or None)
    and raises :class:`SkycacheError` when the condition can never become true."""

    def describe(self) -> str: ...

    def poll(self, runner: Runner) -> tuple[bool, str | None]: ...


class WaitTimedOut(SkycacheError):
    pass


@dataclass(frozen=True)
class Wait:
    """Poll ``probe`` through the runner until it is done (read-only: no command of the plan)."""

    probe: Probe
    timeout_s: float = 600.0
    poll_s: float = 0.5

    def shown(self) -> str:
        return f"(wait until {self.probe.describe()}, at most {self.timeout_s:g} s)"

    def run(
        self,
        runner: Runner,
        progress: Progress = _quiet,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        deadline = clock() + self.timeout_s
        last: str | None = None
        while True:
            done, note = self.probe.poll(runner)
            if note is not None and note != last:
                progress(note)
                last = note
            if done:
                return
            if clock() >= deadline:
                tail = f" ({last})" if last else ""
                raise WaitTimedOut(
                    f"timed out after {self.timeout_s:g} s waiting until {self.probe.describe()}{tail}"
                )
            sleep(self.poll_s)


Step = Command | Wait


@dataclass(frozen=True)
class Action:
    """One change: what it does (for people), the steps that make it and the steps that undo it."""

    description: str
    do: tuple[Step, ...]
    undo: tuple[Step, ...] = ()

    @staticmethod
    def command(
        description: str,
        argv: Sequence[Arg],
        undo: Sequence[Arg] | None = None,
        *,
        timeout_s: float | None = None,
        retry: Retry | None = None,
        stdin: str | Secret | None = None,
        ok_codes: frozenset[int] = frozenset({0}),
    ) -> Action:
        """An action of one command; ``undo`` is the argv that reverses it, if any."""
        do = Command(tuple(argv), stdin=stdin, timeout_s=timeout_s, retry=retry, ok_codes=ok_codes)
        back = (Command(tuple(undo), timeout_s=timeout_s, retry=retry),) if undo is not None else ()
        return Action(description, (do,), back)

    def commands(self) -> list[Command]:
        return [s for s in self.do if isinstance(s, Command)]


class PlanFailed(SkycacheError):
    """A step failed; the steps before it were undone (``undo_errors`` lists undo steps that failed)."""

    def __init__(self, step: str, cause: BaseException, undo_errors: list[str]) -> None:
        self.step = step
        self.cause = cause
        self.undo_errors = undo_errors
        tail = ""
        if undo_errors:
            tail = f"; rollback incomplete ({len(undo_errors)} undo step(s) failed: {undo_errors[0]})"
        super().__init__(f"{step}: {cause}{tail}")


def _run_step(step: Step, runner: Runner, progress: Progress) -> None:
    if isinstance(step, Command):
        step.run(runner)
    else:
        step.run(runner, progress)


@dataclass
class Plan:
    title: str
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the plan deliberately leaves alone, and why

    def add(self, action: Action) -> Plan:
        self.actions.append(action)
        return self

    def extend(self, actions: Sequence[Action]) -> Plan:
        self.actions.extend(actions)
        return self

    def describe(self) -> list[str]:
        """The dry-run listing: one line per action, then its steps indented."""
        lines = [f"plan: {self.title}"]
        for i, action in enumerate(self.actions, 1):
            lines.append(f"  {i}. {action.description}")
            for s in action.do:
                if isinstance(s, Command):
                    first, *rest = s.shown().splitlines()
                    lines.append(f"       $ {first}")
                    lines += [f"         {r}" for r in rest]  # a here-document's lines
                else:
                    lines.append(f"       {s.shown()}")
        if not self.actions:
            lines.append("  (nothing to do)")
        lines += [f"  note: {n}" for n in self.notes]
        return lines

    def commands(self) -> list[str]:
        """Every mutating command the plan runs when nothing fails, in order (masked)."""
        return [c.render() for a in self.actions for c in a.commands()]

    def apply(
        self,
        runner: Runner,
        progress: Progress = _quiet,
        on_action: Callable[[int, Action], None] | None = None,
    ) -> None:
        """Run every action; on failure undo the completed ones, newest first, and raise.
        ``on_action(i, action)`` is told as the i-th (from 1) action starts."""
        done: list[Action] = []
        for i, action in enumerate(self.actions, 1):
            if on_action is not None:
                on_action(i, action)
            log.info("%s: %s", self.title, action.description)
            started = 0
            try:
                for step in action.do:
                    started += 1
                    _run_step(step, runner, progress)
            except BaseException as exc:  # KeyboardInterrupt too: never leave half a stack
                # An action whose first step failed changed nothing; one that failed later is undone
                # with the rest (its undo steps are written to cope with a partial do).
                partial = [action] if started > 1 else []
                undo_errors = self._rollback(runner, [*done, *partial], progress)
                if isinstance(exc, SkycacheError | OSError):
                    raise PlanFailed(action.description, exc, undo_errors) from exc
                raise
            done.append(action)

    @staticmethod
    def _rollback(runner: Runner, done: list[Action], progress: Progress) -> list[str]:
        errors: list[str] = []
        for action in reversed(done):
            if not action.undo:
                continue
            log.info("undo: %s", action.description)
            for step in action.undo:
                try:
                    _run_step(step, runner, progress)
                except SkycacheError as exc:
                    errors.append(f"{action.description}: {exc}")
        return errors
