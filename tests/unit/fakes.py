"""The one fake runner of the unit tier: canned replies for commands, an in-memory file tree.

It implements :class:`skycache.runner.Runner` and stands in where a unit test checks the argv a
function builds or feeds it recorded real output (tests/unit/data). Replies are matched by argv
prefix, the longest prefix first; a list of replies is handed out in order, the last one repeating.
Every command is recorded with its kind (``run`` or ``query``), so a test can assert what ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePath, PurePosixPath

from skycache.runner import LOCAL, Arg, CommandError, Completed, Retry, Target, render
from skycache.storage.view import View


@dataclass(frozen=True)
class Reply:
    stdout: str = ""
    stderr: str = ""
    returncode: int = 0


@dataclass(frozen=True)
class Call:
    kind: str  # run | query
    argv: tuple[str, ...]  # masked
    stdin: str | None = None

    @property
    def line(self) -> str:
        return " ".join(self.argv)


@dataclass
class FakeRunner:
    target: Target = LOCAL
    files: dict[str, str] = field(default_factory=dict)  # path -> content; directories are implied
    dirs: set[str] = field(default_factory=set)  # empty directories
    # Play the file changes of commands that run (agent write-file, truncate, mkdir, rm), so a planner
    # can read back what an earlier plan made.
    simulate_files: bool = False
    links: dict[str, str] = field(default_factory=dict)  # path -> what it resolves to
    calls: list[Call] = field(default_factory=list)
    _rules: list[tuple[tuple[str, ...], list[Reply]]] = field(default_factory=list)

    # -- configuring --------------------------------------------------------------------------------

    def reply(self, *prefix: str, stdout: str = "", stderr: str = "", rc: int = 0) -> FakeRunner:
        """Answer commands starting with ``prefix`` (replaces an earlier rule for the same prefix)."""
        return self.replies(*prefix, replies=[Reply(stdout, stderr, rc)])

    def replies(self, *prefix: str, replies: Sequence[Reply | str]) -> FakeRunner:
        """Answer commands starting with ``prefix`` with these replies in turn (the last repeats)."""
        answers = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        self._rules = [(p, r) for p, r in self._rules if p != tuple(prefix)]
        self._rules.append((tuple(prefix), answers))
        return self

    # -- what ran -----------------------------------------------------------------------------------

    def ran(self, kind: str = "run") -> list[str]:
        """The rendered command lines of one kind, in order."""
        return [render(list(c.argv)) for c in self.calls if c.kind == kind]

    # -- the Runner protocol ------------------------------------------------------------------------

    def _answer(self, kind: str, argv: Sequence[Arg], stdin: str | None, check: bool) -> Completed:
        masked = tuple(str(a) for a in argv)
        self.calls.append(Call(kind, masked, stdin))
        plain = tuple(a if isinstance(a, str) else a.value for a in argv)
        best: tuple[tuple[str, ...], list[Reply]] | None = None
        for prefix, answers in self._rules:
            if plain[: len(prefix)] == prefix and (best is None or len(prefix) > len(best[0])):
                best = (prefix, answers)
        reply = Reply()
        if best is not None:
            answers = best[1]
            reply = answers.pop(0) if len(answers) > 1 else answers[0]
        if check and reply.returncode != 0:
            raise CommandError(
                list(masked), reply.returncode, reply.stdout, reply.stderr, target=self.target.name
            )
        return Completed(masked, reply.returncode, reply.stdout, reply.stderr)

    def run(
        self,
        argv: Sequence[Arg],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: Mapping[str, Arg] | None = None,
        retry: Retry | None = None,
    ) -> Completed:
        if self.simulate_files:
            self._play([a if isinstance(a, str) else a.value for a in argv], stdin)
        return self._answer("run", argv, stdin, check)

    def _play(self, argv: list[str], stdin: str | None) -> None:
        if argv[:2] == ["skycache-agent", "write-file"]:
            self.files[argv[2]] = stdin or ""
        elif argv[0] == "truncate":
            self.files.setdefault(argv[-1], "")
        elif argv[:2] == ["mkdir", "-p"]:
            self.dirs.add(argv[-1])
        elif argv[0] == "rm":
            for path in argv[1:]:
                self.files.pop(path, None)

    def query(
        self,
        argv: Sequence[Arg],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: Mapping[str, Arg] | None = None,
        retry: Retry | None = None,
    ) -> Completed:
        return self._answer("query", argv, stdin, check)

    def read_text(self, path: str | PurePath) -> str | None:
        self.calls.append(Call("read", (str(path),)))
        return self.files.get(str(path))

    def exists(self, path: str | PurePath) -> bool:
        p = str(path)
        return p in self.files or p in self.links or self.list_dir(p) is not None

    def list_dir(self, path: str | PurePath) -> list[str] | None:
        d = PurePosixPath(path)
        names = {
            PurePosixPath(f).relative_to(d).parts[0]
            for f in self.files
            if PurePosixPath(f).is_relative_to(d) and PurePosixPath(f) != d
        }
        return sorted(names) if names else None

    def resolve(self, path: str | PurePath) -> str | None:
        p = str(path)
        if p in self.links:
            return self.links[p]
        return p if self.exists(p) else None


def fake_view(runner: FakeRunner | None = None, **parts: object) -> View:
    """A :class:`View` whose parts are given (``lvs=...``, ``dm_info=...``); the rest read from the
    fake runner (empty replies unless configured)."""
    view = View(runner or FakeRunner())
    for name, value in parts.items():
        if not isinstance(getattr(type(view), name, None), cached_property):
            raise AttributeError(f"View has no part {name!r}")
        view.__dict__[name] = value
    return view
