"""Every verb's ``--help`` reads as written: metavars name what a parameter takes (``SCENARIO``,
``OUT``; a flag shows none), never typer's Python types (``<bool>``, ``<str>``) or ``{scenario}``;
and no bracketed text of a docstring or option help (``[sweep.grid]``) is lost to rich markup."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer
from boundary import skycache

from skycache.cli import helpfmt
from skycache.cli.main import app

TYPE_METAVAR = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\]|[a-z_]+\|[a-z_|]+)>")
BRACED = re.compile(r"\{[a-z_]+\}")
BRACKETED = re.compile(r"\[[^\[\]\n]+\]")


def _commands(
    cmd: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


# Built once without helpfmt: the texts as the code declares them
COMMANDS = dict(_commands(typer.main.get_command(app)))


def _declared_brackets(cmd: click.Command) -> set[str]:
    texts = [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params if not p.hidden)]
    return {" ".join(m.split()) for t in texts for m in BRACKETED.findall(t)}


def test_the_walk_sees_the_plugins_and_every_group() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"sim sweep", "bench nat", "bench report", "net nat-bench", "validate", "repo list"} <= names


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "skycache")
def test_help_has_readable_metavars_and_keeps_bracketed_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, path: tuple[str, ...]
) -> None:
    monkeypatch.setenv("COLUMNS", "3000")  # one line per help text: a bracket is never wrapped apart
    r = skycache(capsys, *path, "--help")
    assert r.code == 0, r
    assert TYPE_METAVAR.findall(r.out) == [], r.out
    assert BRACED.findall(r.out) == [], r.out
    shown = " ".join(r.out.split())
    lost = [b for b in _declared_brackets(COMMANDS[path]) if b not in shown]
    assert lost == [], r.out


def test_sim_sweep_help_keeps_its_grid_section_and_names_its_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "3000")
    r = skycache(capsys, "sim", "sweep", "--help")
    assert "replaces the scenario's [sweep.grid])" in r.out
    assert "Usage: skycache sim sweep [OPTIONS] SCENARIO" in r.out
    assert re.search(r"--json\s+Print the table", r.out), r.out  # a flag: no metavar after it
    assert re.search(r"--out\s+-o\s+OUT\s", r.out), r.out


def test_a_missing_argument_is_named_by_its_metavar(capsys: pytest.CaptureFixture[str]) -> None:
    r = skycache(capsys, "bench", "show")
    assert r.code == 2 and "Missing argument 'RUN'" in r.err, r


def test_markup_escape_keeps_brackets_and_backslashes() -> None:
    from rich.text import Text

    for text in ("[sweep.grid]", "a [b] c [/x] [#f] [@y]", "ratio [95% CI]", "\\[x]", "[FACTOR=VALUE]"):
        assert Text.from_markup(helpfmt.escape_markup(text)).plain == text


def test_docstring_paragraphs_are_joined_but_lists_and_layout_kept() -> None:
    text = "First\nline.\n\nSecond\nparagraph.\n\n- a\n- b\n\n  indented\n  block"
    assert (
        helpfmt.help_text(text, rich=False)
        == "First line.\n\nSecond paragraph.\n\n- a\n- b\n\n  indented\n  block"
    )
