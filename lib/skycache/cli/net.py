"""``skycache net``: shaping of the iSCSI path and VM isolation rules.

``net nat-bench`` (the NAT load measurement, now ``bench nat``; this name stays for old command lines) is
added to this group by the bench portion through the ``skycache.cli.net`` entry-point group (see
cli/main.py), so lib/ never imports bench/.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from skycache.cli.common import DryRunOpt, JsonOpt, cli_runner, print_json, run_plan
from skycache.errors import InvalidInput
from skycache.net import isolation, netns, shaping
from skycache.numbers import parse_float, parse_port

net_app = typer.Typer(
    help="Network shaping, NAT load measurement and VM isolation rules.", no_args_is_help=True
)

NetnsOpt = Annotated[
    str | None,
    typer.Option("--netns", help="Apply inside this owned namespace (skycache-*) instead of the host's."),
]
DevOpt = Annotated[str, typer.Option("--dev", help="Device carrying the iSCSI traffic.")]


def _ns(ns: str | None) -> str | None:
    return netns.check_optional_ns(ns)


# -- shaping ---------------------------------------------------------------------------------------


@net_app.command("shape")
def shape(
    profile: Annotated[
        str | None,
        typer.Argument(help=f"A named profile: {', '.join(shaping.PROFILES)}.", show_default=False),
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Custom rate per direction, e.g. 100mbit.")
    ] = None,
    delay_text: Annotated[str | None, typer.Option("--delay", help="Custom one-way delay in ms.")] = None,
    loss_text: Annotated[str, typer.Option("--loss", help="Custom random loss in percent.")] = "0",
    dev: DevOpt = "lo",
    port_text: Annotated[
        str, typer.Option("--port", help="TCP port of the iSCSI path (both directions).")
    ] = "3260",
    ns: NetnsOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Shape the iSCSI path (TCP PORT on DEV, both directions) with tc; other traffic is untouched.

    Example: skycache net shape gbe-2009   |   skycache net shape --rate 50mbit --delay 2
    """
    # Read as text and parsed here: click's own int/float accept "nan", "inf" and fail on 5,000 digits.
    port = parse_port(port_text, what="--port")
    delay = parse_float(delay_text, what="--delay", maximum=10_000.0) if delay_text is not None else None
    loss = parse_float(loss_text, what="--loss", maximum=99.999)
    if profile is not None and (rate is not None or delay is not None or loss):
        raise InvalidInput("give either a PROFILE or --rate/--delay/--loss, not both")
    if profile is None and rate is None and delay is None:
        raise InvalidInput(f"give a PROFILE ({', '.join(shaping.PROFILES)}) or --rate and/or --delay")
    prof = shaping.profile(profile) if profile is not None else shaping.custom(rate, delay or 0.0, loss)
    runner = cli_runner()
    plan = shaping.plan_shape(runner, prof, dev, port, ns=_ns(ns))
    if run_plan(plan, dry_run, runner):
        same = "" if plan.actions else " (already)"
        typer.echo(f"shaped TCP port {port} on {dev}: {prof.describe()}{same}")


@net_app.command("unshape")
def unshape(dev: DevOpt = "lo", ns: NetnsOpt = None, dry_run: DryRunOpt = False) -> None:
    """Remove skycache's shaping from DEV (refuses a qdisc skycache did not install)."""
    runner = cli_runner()
    if run_plan(shaping.plan_unshape(runner, dev, ns=_ns(ns)), dry_run, runner):
        typer.echo(f"no skycache shaping on {dev}")


@net_app.command("status")
def status(dev: DevOpt = "lo", ns: NetnsOpt = None, as_json: JsonOpt = False) -> None:
    """Show the shaping profile on DEV and the isolated VMs (skycache's rules only)."""
    runner = cli_runner()
    prof = shaping.current(runner, dev, ns=_ns(ns))
    isolated = isolation.status(runner, _ns(ns))
    if as_json:
        data: dict[str, Any] = {
            "dev": dev,
            "shaping": prof.to_json() if prof else None,
            "isolated": [
                {"key": i.key, "interfaces": list(i.interfaces), "rules": i.rules} for i in isolated
            ],
        }
        print_json(data)
        return
    typer.echo(f"shaping on {dev}: {prof.describe() if prof else 'none'}")
    for i in isolated:
        typer.echo(f"isolated: {i.key} (interfaces {', '.join(i.interfaces) or '-'}; {i.rules} rules)")


# -- isolation -------------------------------------------------------------------------------------


def _split_cidrs(values: list[str] | None) -> list[str]:
    return [c.strip() for v in values or [] for c in v.split(",") if c.strip()]


@net_app.command("isolate")
def isolate(
    target: Annotated[str, typer.Argument(help="The VM: an owned namespace (skycache-*) or its interface.")],
    deny: Annotated[
        list[str] | None,
        typer.Option("--deny", help="Internal network to block, CIDR (repeat, or comma-separated)."),
    ] = None,
    allow_egress: Annotated[
        bool, typer.Option("--allow-egress/--no-egress", help="Let the VM reach everything not denied.")
    ] = False,
    allow_dhcp_dns: Annotated[
        bool, typer.Option("--allow-dhcp-dns", help="Let the VM reach the node's DHCP (udp 67) and DNS (53).")
    ] = False,
    ns: NetnsOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Isolate a VM: outside reachable (through NAT), denied networks and the node itself not.

    Example: skycache net isolate skycache-vm1 --allow-egress --deny 198.18.3.0/24 --deny 198.18.4.0/24
    """
    worker_ns = _ns(ns)
    runner = cli_runner()
    interface = isolation.resolve_interface(runner, target, worker_ns)
    spec = isolation.make_spec(
        isolation.key_for(target),
        interface,
        _split_cidrs(deny),
        allow_egress=allow_egress,
        allow_dhcp_dns=allow_dhcp_dns,
    )
    if not run_plan(isolation.plan_isolate(runner, spec, worker_ns), dry_run, runner):
        return
    egress = "egress allowed" if spec.allow_egress else "no egress"
    typer.echo(
        f"isolated {target} (interface {interface}): denied {', '.join(spec.deny) or 'nothing'}, {egress}, "
        f"node reachable only for {'DHCP/DNS' if spec.allow_dhcp_dns else 'nothing'}; "
        f"chains {spec.fwd_chain}, {spec.inp_chain}"
    )


@net_app.command("unisolate")
def unisolate(
    target: Annotated[
        str | None, typer.Argument(help="The VM (as given to isolate); omit with --all.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove the isolation of every VM.")] = False,
    ns: NetnsOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Remove exactly the rules and chains `isolate` installed (nothing else is touched)."""
    if (target is None) == (not all_):
        raise InvalidInput("give a TARGET or --all (not both)")
    key = isolation.key_for(target) if target is not None else None  # '' is a bad name, not "all"
    worker_ns = _ns(ns)
    runner = cli_runner()
    rules = isolation.read_rules(runner, worker_ns)
    if not run_plan(isolation.unisolate_plan(rules, key, worker_ns), dry_run, runner):
        return
    removed = isolation.isolated_chains(rules, key)
    typer.echo(f"removed chains: {', '.join(removed)}" if removed else "nothing to remove")


def register(app: typer.Typer) -> None:
    app.add_typer(net_app, name="net")
