"""``skycache lab``: boot the real-kernel lab VM and run commands in it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, BinaryIO

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
    memory: Annotated[str, typer.Option(help="Guest memory (e.g. 2G).", metavar="SIZE")] = "2G",
    cpus: Annotated[str, typer.Option(help=f"Guest CPUs (1 to {MAX_CPUS}).", metavar="N")] = "2",
    accel_request: Annotated[
        str, typer.Option("--accel", help="auto (probe KVM once, else TCG), kvm or tcg.", metavar="MODE")
    ] = "auto",
    disk: Annotated[
        list[str] | None,
        typer.Option(
            help="Add an empty scratch disk of this size (repeatable); "
            "the guest lists them in $SKYCACHE_LAB_DISKS.",
            metavar="SIZE",
        ),
    ] = None,
    rwdir: Annotated[
        list[Path] | None,
        typer.Option(
            help="Host directory the guest may write (repeatable); default: the current directory.",
            metavar="DIR",
        ),
    ] = None,
    timeout: Annotated[
        str,
        typer.Option(
            help="Kill the lab after this long (seconds, or e.g. 90min, 2h; at most 7 days).",
            metavar="DURATION",
        ),
    ] = "3600",
) -> None:
    """Boot the lab and run CMD (after '--') as root in it; exits with CMD's exit code.

    Example: skycache lab run --disk 1G -- sh -c 'grep -q device-mapper /proc/misc'
    """
    argv = list(ctx.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    spec, lab_kernel, choice = _lab_spec(memory, cpus, accel_request, disk, rwdir, timeout)
    runner = SystemRunner()
    typer.echo(f"lab: booting {lab_kernel.version} with {choice.accel} ({choice.reason})", err=True)
    code = boot(runner, lab_kernel, spec, argv, on_line=lambda line: print(line, flush=True))
    raise typer.Exit(code)


MAX_NODES = 1  # a lab of several nodes joined by a virtual segment comes with the two-node lab


def _lab_spec(
    memory: str,
    cpus: str,
    accel_request: str,
    disk: list[str] | None,
    rwdir: list[Path] | None,
    timeout: str,
    *,
    before_kernel: Callable[[], None] | None = None,
) -> tuple[LabSpec, kernel.LabKernel, accel.AccelChoice]:
    """The options `lab run` and `lab up` share, checked before the kernel is looked up (and
    ``before_kernel`` run then, e.g. `lab up`'s refusal of a second lab, before any KVM probe)."""
    if accel_request not in ("auto", "kvm", "tcg"):
        raise typer.BadParameter(f"{accel_request!r} is not auto, kvm or tcg", param_hint="--accel")
    # Checked before the kernel is looked up or qemu started: qemu's own refusal of 10**20 CPUs is a
    # page of text, and a timeout of inf or -1 would never (or at once) kill the lab.
    vcpus = parse_int(cpus, what="--cpus", minimum=1, maximum=MAX_CPUS, bound="the lab's vCPU bound")
    timeout_s = parse_duration(timeout, what="--timeout", maximum=MAX_TIMEOUT_S, positive=True)
    disk_sizes = tuple(parse_positive_size(d, what="--disk") for d in disk or ())
    if before_kernel is not None:
        before_kernel()
    runner = SystemRunner()
    lab_kernel = kernel.require()
    choice = accel.choose(accel_request, runner, lab_kernel)  # type: ignore[arg-type]
    cwd = Path.cwd()
    rwdirs = tuple(rwdir) if rwdir else ((cwd,) if cwd != Path("/") else ())
    spec = LabSpec(
        memory=memory,
        cpus=vcpus,
        accel=choice.accel,
        disk_sizes=disk_sizes,
        rwdirs=rwdirs,
        timeout_s=timeout_s,
        cwd=cwd,
    )
    return spec, lab_kernel, choice


@lab_app.command("up")
def up_cmd(
    memory: Annotated[str, typer.Option(help="Guest memory (e.g. 2G).", metavar="SIZE")] = "3G",
    cpus: Annotated[str, typer.Option(help=f"Guest CPUs (1 to {MAX_CPUS}).", metavar="N")] = "2",
    accel_request: Annotated[
        str, typer.Option("--accel", help="auto (probe KVM once, else TCG), kvm or tcg.", metavar="MODE")
    ] = "auto",
    disk: Annotated[
        list[str] | None,
        typer.Option(
            help="Add an empty scratch disk of this size (repeatable); "
            "the guest lists them in $SKYCACHE_LAB_DISKS. Thrown away by `lab down`.",
            metavar="SIZE",
        ),
    ] = None,
    rwdir: Annotated[
        list[Path] | None,
        typer.Option(
            help="Host directory the guest may write (repeatable); default: the current directory.",
            metavar="DIR",
        ),
    ] = None,
    nodes: Annotated[str, typer.Option(help="Lab nodes to boot (1 so far).", metavar="N")] = "1",
    timeout: Annotated[
        str,
        typer.Option(
            help="Power the lab off after this long (seconds, or e.g. 90min, 8h; at most 7 days).",
            metavar="DURATION",
        ),
    ] = "8h",
) -> None:
    """Boot the lab and keep it running: run commands in it with `skycache lab exec -- CMD`.

    Returns once the lab answers (about 40 s under TCG: the boot, then the guest imports the skycache
    CLI once, so that `lab exec -- skycache ...` starts in well under a second). One lab per user;
    `skycache lab status` shows it, `skycache lab down` powers it off.
    """
    from skycache.lab import session

    parse_int(nodes, what="--nodes", minimum=1, maximum=MAX_NODES, bound="the nodes a lab can have so far")
    spec, lab_kernel, choice = _lab_spec(
        memory, cpus, accel_request, disk, rwdir, timeout, before_kernel=session.refuse_second_lab
    )
    started = time.time()
    typer.echo(
        f"lab: booting {lab_kernel.version} with {choice.accel} ({choice.reason}) in the background", err=True
    )
    up = session.up(
        SystemRunner(),
        lab_kernel,
        spec,
        lifetime_s=spec.timeout_s,
        progress=lambda line: typer.echo(line, err=True),
    )
    typer.echo(
        f"lab: up in {time.time() - started:.0f} s (pid {up.pid}; console log {session.console_log()})",
        err=True,
    )
    typer.echo("lab: run commands with `skycache lab exec -- CMD`; stop it with `skycache lab down`")


@lab_app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_cmd(
    ctx: typer.Context,
    cwd: Annotated[
        Path | None,
        typer.Option(
            help="Directory to run CMD in (default: the current one; it must exist in the lab).",
            metavar="DIR",
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(help="Set KEY=VALUE in CMD's environment (repeatable).", metavar="KEY=VALUE"),
    ] = None,
) -> None:
    """Run CMD (after '--') as root in the lab that `skycache lab up` started; exits with CMD's code.

    Output is streamed as it comes (stdout to stdout, stderr to stderr); Ctrl-C is passed on to CMD.
    CMD gets the project's environment, as under `lab run`. Example: skycache lab exec -- skycache repo list
    """
    from skycache.lab import exec_client, hostinfo, session

    argv = list(ctx.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise typer.BadParameter("no command given to run in the lab (put it after '--')", param_hint="CMD")
    extra: dict[str, str] = {}
    for item in env or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        extra[key] = value
    up = session.require()
    out = sys.stdout.buffer
    err = sys.stderr.buffer

    def write(stream: BinaryIO) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            stream.write(data)
            stream.flush()

        return sink

    sys.stdout.flush()
    # While CMD runs, the host's load goes on reaching the guest (results record it as provenance).
    with hostinfo.HostShare(SystemRunner(), session.share_dir(), None):
        code = exec_client.run(
            up.host_port,
            up.token,
            argv,
            cwd=str((cwd or Path.cwd()).absolute()),
            env=extra,
            on_stdout=write(out),
            on_stderr=write(err),
        )
    raise typer.Exit(code)


@lab_app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Whether a lab is up, since when, what it has, and how fast its command server answers.

    Exits 0 when a lab is up and answers, 1 otherwise.
    """
    from skycache.lab import session

    record, running, answer = session.status()
    state = "up" if running and answer else "booting or not answering" if running else "down"
    if as_json:
        out: dict[str, Any] = {"state": state}
        if record is not None and running:
            out.update(record.public())
            out["server"] = answer
        typer.echo(json.dumps(out, indent=2))
        raise typer.Exit(0 if state == "up" else 1)
    if record is None or not running:
        typer.echo("lab: down")
        raise typer.Exit(1)
    typer.echo(
        f"lab: {state} (pid {record.pid}, up {_ago(record.started)}, powers off in {_until(record.deadline)})"
    )
    typer.echo(f"kernel:  {record.kernel} ({record.accel}), {record.cpus} vCPUs, {record.memory}")
    disks = ", ".join(f"{size // 1024**2}M" for size in record.disk_sizes) or "none"
    typer.echo(f"disks:   {disks}")
    typer.echo(f"rwdirs:  {', '.join(record.rwdirs) or 'none'}")
    if answer:
        warm = "skycache warm" if answer.get("warm") else "skycache cold"
        typer.echo(
            f"server:  answers in {answer.get('ping_ms')} ms, guest load {answer.get('guest_load')}, {warm}"
        )
    raise typer.Exit(0 if state == "up" else 1)


@lab_app.command("down")
def down_cmd() -> None:
    """Power the lab off and throw its scratch disks away (nothing to do if no lab is up)."""
    from skycache.lab import session

    started = time.time()
    record = session.down(progress=lambda line: typer.echo(line, err=True))
    if record is None:
        typer.echo("lab: no lab is up")
        return
    typer.echo(f"lab: down after {_ago(record.started)} (power-off took {time.time() - started:.0f} s)")


def _ago(t: float) -> str:
    return _span(time.time() - t)


def _until(t: float) -> str:
    return _span(max(0.0, t - time.time()))


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
