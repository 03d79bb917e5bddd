"""Help output a reader can use: metavars that name what a parameter takes, help text as written.

typer 0.29 shows a parameter's Python type where click showed a name (``--json <bool>``,
``--seed <str>``, ``<path>``), a required argument as ``{scenario}`` in the usage line, and its
"rich" markup mode reads a lowercase ``[sweep.grid]`` in a help text as a style tag and drops it.
``readable`` fixes a built click command tree in place before it runs, so every verb, the plugins'
too, reads the same without each declaration spelling its metavar:

- an argument is its name in capitals (``SCENARIO``, ``RUN``, ``PATHS...``), bracketed in the usage
  line only when optional, with no type column;
- an option taking a value is its long name in capitals (``--out OUT``), like click's own
  default, unless it declares a metavar (``--relative-to STACK``); a flag shows nothing after it;
- help texts have their ``[``s escaped for rich markup, and the single line breaks of docstrings
  joined (rich keeps them, which breaks lines in mid-sentence at any width but 80 columns).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from typer.core import TyperArgument

# rich markup reads "[" followed by one of these as the start of a tag (rich/markup.py's grammar)
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?\])")
_DONE = "_skycache_readable"


def escape_markup(text: str) -> str:
    r"""``text`` as rich markup that renders as itself: ``[sweep.grid]`` becomes ``\[sweep.grid]``
    (backslashes before a bracket are doubled, so they stay literal too)."""
    return _TAG.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), text)


def _joined(paragraph: str) -> str:
    """A docstring paragraph as one line, unless it is laid out by hand (indented lines, a list)."""
    lines = paragraph.split("\n")
    if paragraph.startswith("\b") or any(ln[:1].isspace() or ln.lstrip().startswith("- ") for ln in lines):
        return paragraph
    return " ".join(ln.strip() for ln in lines)


def help_text(text: str | None, *, rich: bool) -> str | None:
    if not text:
        return text
    body = "\n\n".join(_joined(p) for p in inspect.cleandoc(text).split("\n\n"))
    return escape_markup(body) if rich else body


class ReadableArgument(TyperArgument):
    """An argument shown by its metavar alone: no ``<path>`` type column, no ``{...}`` in the usage."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        return [name if self.required else f"[{name}]"]


def _metavar(param: Any) -> str:
    if isinstance(param, TyperArgument):
        name = (param.name or "arg").upper()
        return name + ("..." if param.nargs != 1 else "")
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""  # a flag takes no value: nothing to show after it
    longs: list[str] = [o for o in param.opts if o.startswith("--")] or list(param.opts)
    return max(longs, key=len).lstrip("-").replace("-", "_").upper()


def _fix_param(param: Any, rich: bool) -> None:
    if getattr(param, "help", None):
        param.help = help_text(param.help, rich=rich)
    if param.metavar is None:
        param.metavar = _metavar(param)
    if type(param) is TyperArgument:
        param.__class__ = ReadableArgument  # the same object with two display methods replaced


# Commands and contexts are typer's own click copy (typer._click, private) in typer >= 0.29 and click's
# before: typed Any here, used only through click's public attributes.
def readable(command: Any, parent: Any = None, name: str = "skycache") -> None:
    """Fix metavars and help texts of ``command`` and every command under it (once per tree)."""
    if getattr(command, _DONE, False):
        return
    setattr(command, _DONE, True)
    rich = getattr(command, "rich_markup_mode", None) == "rich"
    command.help = help_text(command.help, rich=rich)
    if command.short_help:
        command.short_help = help_text(command.short_help, rich=rich)
    # The context only tells get_help_option the help names (-h, --help, inherited from the root),
    # so that the help option is created, and cached, as the real run will use it.
    ctx = command.context_class(command, parent=parent, info_name=name, **command.context_settings)
    helper = command.get_help_option(ctx)
    for param in [*command.params, *([helper] if helper is not None else [])]:
        _fix_param(param, rich)
    for sub_name, sub in getattr(command, "commands", {}).items():
        readable(sub, ctx, sub_name)
