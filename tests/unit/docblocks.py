"""The fenced blocks of README.md and docs/*.md, and what their info strings say (docs/testing.md,
"Docs that run").

A block's info string is ``LANG [excerpt]``:

- ``sh``: host commands, one per line (``\\`` continues a line, ``# ...`` is a comment), each run by
  ``tests/unit/test_docs_commands.py`` and expected to exit 0;
- ``console``: a transcript: each ``$ CMD`` line is run, and every line shown after it that holds
  no ``...`` must appear in what it printed; it must exit 0, unless a shown line says ``(exit N)``
  at its end or starts with ``skycache: error:`` (then non-zero);
- ``python``: run as a script;
- ``toml``: parsed;
- ``LANG excerpt``: shown, never run (needs root or the lab, takes long, or has placeholders);
- ``text`` or no info string: not a command (output, layouts, tables). Such a block may not hold a
  command line: those are run or marked ``excerpt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = ("sh", "console", "python")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>.*)$")
# A line that starts a command: run it or mark the block an excerpt.
COMMAND_LINE = re.compile(
    r"^(\$ )?(skycache|\.venv/bin/\S+|make|fio|fio-plot|sudo|python3?|pytest|env|[A-Z][A-Z0-9_]*=\S*)(\s|$)"
)

# Blocks this test does not classify yet, each with the reason; the work named there marks them.
PENDING: dict[str, str] = {}
PENDING_SECTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository, e.g. "docs/sim.md"
    line: int  # 1-based line of the opening fence
    info: str
    body: str
    section: str  # the nearest heading above the block

    @property
    def lang(self) -> str:
        words = self.info.split()
        return words[0] if words else ""

    @property
    def excerpt(self) -> bool:
        return "excerpt" in self.info.split()[1:]

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE and not self.excerpt

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def pending(self) -> str | None:
        return PENDING.get(self.path) or PENDING_SECTIONS.get((self.path, self.section))


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    rel = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    out: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            if lines[i].startswith("#"):
                section = lines[i].lstrip("#").strip()
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(m["indent"]) :])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{rel}:{start + 1}: the fenced block is never closed")
        out.append(Block(rel, start + 1, m["info"].strip(), "\n".join(body), section))
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for f in doc_files() for b in blocks(f)]


def sh_commands(body: str) -> list[str]:
    """The commands of an ``sh`` block: continuation lines joined, comments and blank lines dropped."""
    cmds: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            cmds.append(line.strip())
    return cmds


@dataclass(frozen=True)
class Step:
    command: str
    shown: list[str]  # the lines shown after it

    @property
    def expected_exit(self) -> int | None:
        """0, a given code, or None for "any non-zero"."""
        for line in self.shown:
            m = re.search(r"\(exit (\d+)\)\s*$", line)
            if m:
                return int(m[1])
        if any(line.startswith("skycache: error:") for line in self.shown):
            return None
        return 0

    @property
    def checked_lines(self) -> list[str]:
        """The shown lines that must appear in the output: no ``...``, no ``(exit N)`` note."""
        out = []
        for line in self.shown:
            line = re.sub(r"\s*\(exit \d+\)\s*$", "", line).rstrip()
            if line.strip() and "..." not in line:
                out.append(line)
        return out


def console_steps(body: str) -> list[Step]:
    steps: list[Step] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:].strip(), []))
        elif steps:
            steps[-1].shown.append(line)
        elif line.strip():
            raise AssertionError(f"a console block starts with output, not a `$ ` command: {line!r}")
    return steps
