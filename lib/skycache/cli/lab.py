"""``skycache lab``: boot the real-kernel lab VM and run commands in it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from skycache.lab import accel, kernel
from skycache.lab.vm import LabSpec, boot
from skycache.numbers import parse_duration, parse_int
from skycache.runner import SystemRunner
from skycache.units import parse_positive_size

# More vCPUs than this only slows a TCG guest down (each is a host thread); a week is longer than any
# suite the lab runs.
MAX_CPUS = 64
MAX_TIMEOUT_S = 7 * 86400.0

lab_app = typer.Typer(help="The lab: a disposable VM with a real Linux kernel.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")


@lab_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run_cmd(
    ctx: typer.Context,
    memory: Annotated[str, typer.Option(help="Guest memory (e.g. 2G).")] = "2G",
    cpus: Annotated[str, typer.Option(help=f"Guest CPUs (1 to {MAX_CPUS}).")] = "2",
    accel_request: Annotated[
        str, typer.Option("--accel", help="auto (probe KVM once, else TCG), kvm or tcg.")
    ] = "auto",
    disk: Annotated[
        list[str] | None,
        typer.Option(
            help="Add an empty scratch disk of this size (repeatable); "
            "the guest lists them in $SKYCACHE_LAB_DISKS."
        ),
    ] = None,
    rwdir: Annotated[
        list[Path] | None,
        typer.Option(help="Host directory the guest may write (repeatable); default: the current directory."),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="Kill the lab after this long (seconds, or e.g. 90min, 2h; at most 7 days).")
    ] = "3600",
) -> None:
    """Boot the lab and run CMD (after '--') as root in it; exits with CMD's exit code.

    Example: skycache lab run --disk 1G -- sh -c 'grep -q device-mapper /proc/misc'
    """
    argv = list(ctx.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if accel_request not in ("auto", "kvm", "tcg"):
        raise typer.BadParameter(f"{accel_request!r} is not auto, kvm or tcg", param_hint="--accel")
    # Checked before the kernel is looked up or qemu started: qemu's own refusal of 10**20 CPUs is a
    # page of text, and a timeout of inf or -1 would never (or at once) kill the lab.
    vcpus = parse_int(cpus, what="--cpus", minimum=1, maximum=MAX_CPUS, bound="the lab's vCPU bound")
    timeout_s = parse_duration(timeout, what="--timeout", maximum=MAX_TIMEOUT_S, positive=True)
    runner = SystemRunner()
    lab_kernel = kernel.require()
    choice = accel.choose(accel_request, runner, lab_kernel)  # type: ignore[arg-type]
    cwd = Path.cwd()
    rwdirs = tuple(rwdir) if rwdir else ((cwd,) if cwd != Path("/") else ())
    spec = LabSpec(
        memory=memory,
        cpus=vcpus,
        accel=choice.accel,
        disk_sizes=tuple(parse_positive_size(d, what="--disk") for d in disk or ()),
        rwdirs=rwdirs,
        timeout_s=timeout_s,
        cwd=cwd,
    )
    typer.echo(f"lab: booting {lab_kernel.version} with {choice.accel} ({choice.reason})", err=True)
    code = boot(runner, lab_kernel, spec, argv, on_line=lambda line: print(line, flush=True))
    raise typer.Exit(code)


@lab_app.command("info")
def info_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the lab kernel, where it came from, and the acceleration the lab will use and why."""
    runner = SystemRunner()
    lab_kernel = kernel.require()
    choice = accel.choose("auto", runner, lab_kernel)
    record = {
        "kernel": lab_kernel.version,
        "kernel_source": lab_kernel.source,
        "kernel_image": str(lab_kernel.vmlinuz),
        "accel": choice.accel,
        "accel_reason": choice.reason,
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(f"kernel:  {record['kernel']}  ({record['kernel_source']})")
    typer.echo(f"image:   {record['kernel_image']}")
    typer.echo(f"accel:   {record['accel']}  ({record['accel_reason']})")


@lab_app.command("fetch-kernel")
def fetch_kernel_cmd(
    force: Annotated[bool, typer.Option(help="Fetch again even if one is cached.")] = False,
) -> None:
    """Download Debian's linux-image-amd64 kernel and unpack it into the cache (not /boot)."""
    lab_kernel = kernel.fetch(SystemRunner(), force=force)
    typer.echo(f"lab kernel {lab_kernel.version} ready in {lab_kernel.root}", err=True)
    sys.stdout.flush()
