"""The top-level ``skycache`` app and its error handling."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from importlib.metadata import entry_points, version
from typing import Annotated

import typer

from skycache.cli import hosts
from skycache.cli.common import CliCommand, run_app

# Modules of lib/ that add verbs; each has register(app: typer.Typer) -> None.
LIB_CLI_MODULES = (
    "skycache.cli.lab",
    "skycache.cli.storage",
    "skycache.cli.node",
    "skycache.cli.net",
    "skycache.cli.validate",
)
# Entry points in PLUGIN_GROUP are top-level sub-apps (bench, sim, suite). Those in
# "skycache.cli.<group>" add verbs to a group lib already defines (bench adds `net nat-bench`): each
# names a register(group_app: typer.Typer) -> None, like LIB_CLI_MODULES, so lib/ imports neither.
PLUGIN_GROUP = "skycache.cli"

app = typer.Typer(
    name="skycache",
    help="Build, benchmark and simulate the storage path of virtual machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"skycache {version('skycache')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help="More log output (-vv: every command run)."),
    ] = 0,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = False,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            envvar=hosts.HOST_ENV,
            metavar="[USER@]HOST",
            help="Run the storage, node and net verbs on HOST over ssh (ssh_config alias, name or address).",
            show_default=False,
        ),
    ] = None,
    ssh_config: Annotated[
        str | None,
        typer.Option(
            "--ssh-config",
            envvar=hosts.SSH_CONFIG_ENV,
            metavar="FILE",
            help="ssh's -F for --host: this ssh_config instead of ~/.ssh/config.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build, benchmark and simulate the storage path of virtual machines."""
    given = frozenset(name for name in ("host", "ssh_config") if _source(ctx, name) == "COMMANDLINE")
    hosts.select(host, ssh_config, hosts.command_line(), given=given)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _source(ctx: typer.Context, name: str) -> str | None:
    """Where a root option's value came from (COMMANDLINE, ENVIRONMENT, DEFAULT), by name: typer
    vendors its own click, whose ParameterSource enum is not importable the same way everywhere."""
    source = ctx.get_parameter_source(name)
    return None if source is None else str(source.name)


def _command_word(argv: list[str]) -> str | None:
    """The verb a command line names (the first word that is neither an option nor the value of a
    root option such as --host), or None."""
    return next(iter(hosts.verb_words(argv)), None)


def _register(argv: list[str] | None = None) -> None:
    """Register lib's verbs, and the plugins' only when the command line can need them.

    A plugin's import pulls in pandas, pydantic, matplotlib or simpy (a minute inside the lab under
    TCG): ``skycache repo list`` should not pay for ``skycache bench``. With no verb or an unknown one
    (``--help``, a typo) every plugin is loaded, so help and errors list all verbs.
    """
    for name in LIB_CLI_MODULES:
        importlib.import_module(name).register(app)
    word = _command_word(sys.argv[1:] if argv is None else argv)
    lib_groups = {g.name for g in app.registered_groups} | {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    args = sys.argv[1:] if argv is None else argv
    if word is None and "--version" in args:
        return  # the version needs no verbs
    eps = entry_points()  # read the installed metadata once, not once per group
    plugins = eps.select(group=PLUGIN_GROUP)
    known = lib_groups | {ep.name for ep in plugins}
    for ep in plugins:
        # A plugin's own verb loads only that plugin; no verb or an unknown one loads all of them.
        if word is None or word == ep.name or word not in known:
            app.add_typer(ep.load(), name=ep.name)
    for group in app.registered_groups:
        if isinstance(group.name, str) and group.typer_instance is not None:
            if word is not None and word != group.name and word in known:
                continue
            for ep in eps.select(group=f"{PLUGIN_GROUP}.{group.name}"):
                ep.load()(group.typer_instance)


_register()


# The click command tree built once ahead of time: typer builds it from the verbs' signatures on
# every start, which costs about a second under TCG. Only the lab's command server does this (it
# forks a warm CLI per `lab exec -- skycache ...`); a normal start builds the tree it needs.
_prebuilt: CliCommand | None = None


def prebuild() -> None:
    global _prebuilt
    _prebuilt = typer.main.get_command(app)


def _exit_on_signal(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)


def main() -> None:
    """Console entry point: every failure one line on stderr, exit codes as docs/errors.md lists them."""
    # SIGTERM/SIGHUP become SystemExit, so running commands (e.g. the lab's qemu, which leads its
    # own process group) are killed by the runner's cleanup instead of being orphaned.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    run_app(app, command=_prebuilt)


if __name__ == "__main__":
    main()
