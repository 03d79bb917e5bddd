"""Plan, apply, undo: how every multi-step change to the system is made.

Following blivet's action list: an operation first builds a :class:`Plan` of :class:`Action` s, each
describing one change with the commands that make it and those that take it back. ``describe()``
is the dry run; :meth:`Plan.apply` runs the actions in order and, when one fails, runs the undo of
every action already done (newest first) before re-raising the original error, so a failure never
leaves a half-built stack.

Actions are usually plain argv lists (``Action.command``); an action may instead carry a Python
callable when the change goes through a library (rtslib-fb writes configfs itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from skycache.errors import SkycacheError
from skycache.runner import Arg, Runner, render

log = logging.getLogger("skycache.plan")

Step = Callable[[Runner], object]


@dataclass(frozen=True)
class Action:
    """One change: what it does (for people), how to do it, and how to undo it."""

    description: str
    do: Step
    undo: Step | None = None
    shown: tuple[str, ...] = ()  # masked command lines, for the dry-run listing

    @staticmethod
    def command(
        description: str,
        argv: Sequence[Arg],
        undo: Sequence[Arg] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Action:
        """An action that runs ``argv``; ``undo`` is the argv that reverses it, if any."""
        do_argv = list(argv)
        undo_argv = list(undo) if undo is not None else None

        def do(runner: Runner) -> object:
            return runner.run(do_argv, timeout_s=timeout_s)

        def reverse(runner: Runner) -> object:
            assert undo_argv is not None
            return runner.run(undo_argv, timeout_s=timeout_s)

        return Action(
            description,
            do,
            reverse if undo_argv is not None else None,
            (render(do_argv),),
        )


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


@dataclass
class Plan:
    title: str
    actions: list[Action] = field(default_factory=list)

    def add(self, action: Action) -> Plan:
        self.actions.append(action)
        return self

    def extend(self, actions: Sequence[Action]) -> Plan:
        self.actions.extend(actions)
        return self

    def describe(self) -> list[str]:
        """The dry-run listing: one line per action, then its command lines indented."""
        lines = [f"plan: {self.title}"]
        for i, action in enumerate(self.actions, 1):
            lines.append(f"  {i}. {action.description}")
            lines += [f"       $ {cmd}" for cmd in action.shown]
        if not self.actions:
            lines.append("  (nothing to do)")
        return lines

    def apply(self, runner: Runner) -> None:
        """Run every action; on failure undo the completed ones, newest first, and raise."""
        done: list[Action] = []
        for action in self.actions:
            log.info("%s: %s", self.title, action.description)
            try:
                action.do(runner)
            except BaseException as exc:  # KeyboardInterrupt too: never leave half a stack
                undo_errors = self._rollback(runner, done)
                if isinstance(exc, SkycacheError | OSError):
                    raise PlanFailed(action.description, exc, undo_errors) from exc
                raise
            done.append(action)

    @staticmethod
    def _rollback(runner: Runner, done: list[Action]) -> list[str]:
        errors: list[str] = []
        for action in reversed(done):
            if action.undo is None:
                continue
            log.info("undo: %s", action.description)
            try:
                action.undo(runner)
            except SkycacheError as exc:
                errors.append(f"{action.description}: {exc}")
        return errors
