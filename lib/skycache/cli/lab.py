"""``skycache lab``: boot the real-kernel lab VM and run commands in it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from skycache.numbers import parse_duration, parse_int
from skycache.runner import SystemRunner
from skycache.units import parse_positive_size

if TYPE_CHECKING:  # the lab's modules are imported by the verbs that use them: a CLI start stays light
    from skycache.lab.accel import AccelChoice
    from skycache.lab.kernel import LabKernel
    from skycache.lab.session import NodeRun, Session
    from skycache.lab.vm import LabSpec

# More vCPUs than this only slows a TCG guest down (each is a host thread); a week is longer than any
# suite the lab runs.
MAX_CPUS = 64
MAX_TIMEOUT_S = 7 * 86400.0

# Each node is a TCG VM with a vCPU of its own: more than this on a small host only crawls.
MAX_NODES = 8

# The options `lab run` and `lab up` share (their defaults stay in each signature).
MemoryOption = Annotated[str, typer.Option(help="Guest memory (e.g. 2G).", metavar="SIZE")]
CpusOption = Annotated[
    str | None,
    typer.Option(help=f"Guest CPUs (1 to {MAX_CPUS}; default 2, or 1 per node with --nodes).", metavar="N"),
]
AccelOption = Annotated[
    str, typer.Option("--accel", help="auto (probe KVM once, else TCG), kvm or tcg.", metavar="MODE")
]
DiskOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Add an empty scratch disk of this size (repeatable); "
        "the guest lists them in $SKYCACHE_LAB_DISKS. Thrown away with the lab.",
        metavar="SIZE",
    ),
]
RwdirOption = Annotated[
    list[Path] | None,
    typer.Option(
        help="Host directory the guest may write (repeatable); default: the current directory.",
        metavar="DIR",
    ),
]
DiskFileOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Add a disk backed by a file you keep, PATH:SIZE (made sparse if missing, else used "
        "as it is; repeatable; with --nodes, PATH holds a node placeholder: docs/lab.md). It survives "
        "the lab: boot again on it after a power cut. The guest lists them in $SKYCACHE_LAB_DISK_FILES.",
        metavar="PATH:SIZE",
    ),
]

lab_app = typer.Typer(help="The lab: a disposable VM with a real Linux kernel.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")


@lab_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run_cmd(
    ctx: typer.Context,
    memory: MemoryOption = "2G",
    cpus: CpusOption = None,
    accel_request: AccelOption = "auto",
    disk: DiskOption = None,
    rwdir: RwdirOption = None,
    disk_file: DiskFileOption = None,
    timeout: Annotated[
        str,
        typer.Option(
            help="Kill the lab after this long (seconds, or e.g. 90min, 2h; at most 7 days).",
            metavar="DURATION",
        ),
    ] = "3600",
    nodes: Annotated[
        str,
        typer.Option(
            help="Lab nodes to boot (1 to 8): with 2 or more, CMD runs on the first worker (w1) while "
            "the repository node (repo) and the other workers run beside it (see docs/lab.md).",
            metavar="N",
        ),
    ] = "1",
) -> None:
    """Boot the lab and run CMD (after '--') as root in it; exits with CMD's exit code.

    Example: skycache lab run --disk 1G -- sh -c 'grep -q device-mapper /proc/misc'
    """
    from skycache.lab.vm import boot

    argv = list(ctx.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    node_count = parse_int(nodes, what="--nodes", minimum=1, maximum=MAX_NODES, bound="the lab's node bound")
    if not argv:
        raise typer.BadParameter("no command given to run in the lab (put it after '--')", param_hint="CMD")
    spec, lab_kernel, choice = _lab_spec(
        memory,
        _cpus(cpus, node_count),
        accel_request,
        disk,
        rwdir,
        timeout,
        disk_file=disk_file,
        nodes=node_count,
    )
    runner = SystemRunner()
    if node_count > 1:
        raise typer.Exit(_run_on_nodes(runner, lab_kernel, spec, node_count, argv))
    typer.echo(f"lab: booting {lab_kernel.version} with {choice.accel} ({choice.reason})", err=True)
    code = boot(runner, lab_kernel, spec, argv, on_line=lambda line: print(line, flush=True))
    raise typer.Exit(code)


def _cpus(cpus: str | None, node_count: int) -> str:
    # Under TCG each vCPU is a host thread: N nodes with two each would fight over a small host.
    return cpus if cpus is not None else ("2" if node_count == 1 else "1")


def _run_on_nodes(
    runner: SystemRunner, lab_kernel: LabKernel, spec: LabSpec, node_count: int, argv: list[str]
) -> int:
    """`lab run --nodes N`: the nodes up in a session of their own, CMD on the first worker, all down."""
    import os
    import tempfile

    from skycache.lab import session

    saved = os.environ.get(session.SESSION_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="skycache-lab-nodes-") as tmp:
        os.environ[session.SESSION_DIR_ENV] = str(Path(tmp) / "up")
        try:
            typer.echo(f"lab: booting {node_count} nodes ({lab_kernel.version}, {spec.accel})", err=True)
            up = session.up(
                runner,
                lab_kernel,
                spec,
                node_count=node_count,
                lifetime_s=spec.timeout_s,
                progress=lambda line: typer.echo(line, err=True),
            )
            try:
                return _exec_on(up, up.node(None), argv, cwd=spec.cwd, env={})
            finally:
                session.down(progress=lambda line: typer.echo(line, err=True))
        finally:
            if saved is None:
                os.environ.pop(session.SESSION_DIR_ENV, None)
            else:
                os.environ[session.SESSION_DIR_ENV] = saved


def _exec_on(up: Session, target: NodeRun, argv: list[str], *, cwd: Path, env: dict[str, str]) -> int:
    """Run argv on one node of a running lab, its output to ours as it comes; its exit code."""
    from skycache.lab import exec_client, hostinfo, session

    def write(stream: BinaryIO) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            stream.write(data)
            stream.flush()

        return sink

    sys.stdout.flush()
    # While CMD runs, the host's load goes on reaching the guest (results record it as provenance).
    with hostinfo.HostShare(SystemRunner(), session.share_dir(target.name), None):
        return exec_client.run(
            target.host_port,
            up.token,
            argv,
            cwd=str(cwd.absolute()),
            env=env,
            on_stdout=write(sys.stdout.buffer),
            on_stderr=write(sys.stderr.buffer),
        )




def _lab_spec(
    memory: str,
    cpus: str,
    accel_request: str,
    disk: list[str] | None,
    rwdir: list[Path] | None,
    timeout: str,
    *,
    disk_file: list[str] | None = None,
    nodes: int = 1,
    before_kernel: Callable[[], None] | None = None,
) -> tuple[LabSpec, LabKernel, AccelChoice]:
    """The options `lab run` and `lab up` share, checked before the kernel is looked up (and
    ``before_kernel`` run then, e.g. `lab up`'s refusal of a second lab, before any KVM probe)."""
    from skycache.lab import accel, kernel
    from skycache.lab.vm import LabSpec, parse_disk_file

    if accel_request not in ("auto", "kvm", "tcg"):
        raise typer.BadParameter(f"{accel_request!r} is not auto, kvm or tcg", param_hint="--accel")
    # Checked before the kernel is looked up or qemu started: qemu's own refusal of 10**20 CPUs is a
    # page of text, and a timeout of inf or -1 would never (or at once) kill the lab.
    vcpus = parse_int(cpus, what="--cpus", minimum=1, maximum=MAX_CPUS, bound="the lab's vCPU bound")
    timeout_s = parse_duration(timeout, what="--timeout", maximum=MAX_TIMEOUT_S, positive=True)
    disk_sizes = tuple(parse_positive_size(d, what="--disk") for d in disk or ())
    disk_files = tuple(parse_disk_file(d, nodes=nodes) for d in disk_file or ())
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
        disk_files=disk_files,
        rwdirs=rwdirs,
        timeout_s=timeout_s,
        cwd=cwd,
    )
    return spec, lab_kernel, choice


@lab_app.command("up")
def up_cmd(
    memory: MemoryOption = "3G",
    cpus: CpusOption = None,
    accel_request: AccelOption = "auto",
    disk: DiskOption = None,
    rwdir: RwdirOption = None,
    disk_file: DiskFileOption = None,
    nodes: Annotated[
        str,
        typer.Option(
            help=f"Lab nodes to boot (1 to {MAX_NODES}): with 2 or more, the first is the repository "
            "(repo, 10.77.0.1), the others workers (w1, w2, ...), joined by a virtual segment.",
            metavar="N",
        ),
    ] = "1",
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

    node_count = parse_int(nodes, what="--nodes", minimum=1, maximum=MAX_NODES, bound="the lab's node bound")
    spec, lab_kernel, choice = _lab_spec(
        memory,
        _cpus(cpus, node_count),
        accel_request,
        disk,
        rwdir,
        timeout,
        disk_file=disk_file,
        nodes=node_count,
        before_kernel=session.refuse_second_lab,
    )
    started = time.time()
    what = f"{node_count} nodes" if node_count > 1 else "the lab"
    typer.echo(
        f"lab: booting {what} ({lab_kernel.version}, {choice.accel}: {choice.reason}) in the background",
        err=True,
    )
    up = session.up(
        SystemRunner(),
        lab_kernel,
        spec,
        node_count=node_count,
        lifetime_s=spec.timeout_s,
        progress=lambda line: typer.echo(line, err=True),
    )
    logs = ", ".join(str(session.console_log(n.name)) for n in up.nodes)
    typer.echo(f"lab: up in {time.time() - started:.0f} s (console log {logs})", err=True)
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
    node: Annotated[
        str | None,
        typer.Option(help="The node to run CMD on (default: the first worker, w1).", metavar="NAME"),
    ] = None,
) -> None:
    """Run CMD (after '--') as root in the lab that `skycache lab up` started; exits with CMD's code.

    Output is streamed as it comes (stdout to stdout, stderr to stderr); Ctrl-C is passed on to CMD.
    CMD gets the project's environment, as under `lab run`. Example: skycache lab exec -- skycache repo list
    """
    from skycache.lab import session

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
    target = up.node(node)
    if not session.node_alive(target):
        raise session.NoLabUp(f"lab node {target.name} is not running (see `skycache lab status`)")
    raise typer.Exit(_exec_on(up, target, argv, cwd=cwd or Path.cwd(), env=extra))


@lab_app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Whether a lab is up, since when, what it has, and how fast its command server answers.

    Exits 0 when a lab is up and answers, 1 otherwise.
    """
    from skycache.lab import session

    record, answers = session.status()
    answering = [name for name, a in answers.items() if a]
    if record is None or not answers:
        state = "down"
    elif len(answering) == len(record.nodes):
        state = "up"
    else:
        state = "partly up" if answering else "booting or not answering"
    if as_json:
        out: dict[str, Any] = {"state": state}
        if record is not None and answers:
            out.update(record.public())
            out["server"] = answers
        typer.echo(json.dumps(out, indent=2))
        raise typer.Exit(0 if state == "up" else 1)
    if record is None or not answers:
        typer.echo("lab: down")
        raise typer.Exit(1)
    typer.echo(f"lab: {state} (up {_ago(record.started)}, powers off in {_until(record.deadline)})")
    typer.echo(f"kernel:  {record.kernel} ({record.accel}), {record.cpus} vCPUs, {record.memory} per node")
    disks = ", ".join(f"{size // 1024**2}M" for size in record.disk_sizes) or "none"
    typer.echo(f"disks:   {disks} per node")
    typer.echo(f"rwdirs:  {', '.join(record.rwdirs) or 'none'}")
    for n in record.nodes:
        answer = answers.get(n.name)
        where = f" {n.address}" if n.address else ""
        if n.name not in answers:
            typer.echo(f"node {n.name}{where} ({n.role}): not running")
        elif answer is None:
            typer.echo(f"node {n.name}{where} ({n.role}): pid {n.pid}, not answering")
        else:
            warm = "skycache warm" if answer.get("warm") else "skycache cold"
            typer.echo(
                f"node {n.name}{where} ({n.role}): pid {n.pid}, answers in {answer.get('ping_ms')} ms, "
                f"guest load {answer.get('guest_load')}, {warm}"
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
    nodes: Annotated[
        str | None,
        typer.Option(
            help="Also list the nodes of a lab of N nodes (default: of the lab that is up).", metavar="N"
        ),
    ] = None,
) -> None:
    """Print the lab kernel, where it came from, the acceleration the lab will use and why, and the
    nodes (names, roles, addresses on the segment, iSCSI initiator names) of a multi-node lab."""
    from skycache.lab import accel, kernel, session
    from skycache.lab import nodes as lab_nodes

    count = None
    if nodes is not None:
        count = parse_int(nodes, what="--nodes", minimum=1, maximum=MAX_NODES, bound="the lab's node bound")
    running = session.load()
    if count is None and running is not None and session.alive(running):
        count = len(running.nodes)
    runner = SystemRunner()
    lab_kernel = kernel.require()
    choice = accel.choose("auto", runner, lab_kernel)
    layout = lab_nodes.plan(count) if count and count > 1 else []
    record = {
        "kernel": lab_kernel.version,
        "kernel_source": lab_kernel.source,
        "kernel_image": str(lab_kernel.vmlinuz),
        "accel": choice.accel,
        "accel_reason": choice.reason,
        "nodes": [
            {"name": n.name, "role": n.role, "address": n.address, "initiator": n.initiator} for n in layout
        ],
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(f"kernel:  {record['kernel']}  ({record['kernel_source']})")
    typer.echo(f"image:   {record['kernel_image']}")
    typer.echo(f"accel:   {record['accel']}  ({record['accel_reason']})")
    for n in layout:
        typer.echo(f"node:    {n.name:5s} {n.role:10s} {n.address}  {n.initiator}")


@lab_app.command("fetch-kernel")
def fetch_kernel_cmd(
    force: Annotated[bool, typer.Option(help="Fetch again even if one is cached.")] = False,
) -> None:
    """Download Debian's linux-image-amd64 kernel and unpack it into the cache (not /boot)."""
    from skycache.lab import kernel

    lab_kernel = kernel.fetch(SystemRunner(), force=force)
    typer.echo(f"lab kernel {lab_kernel.version} ready in {lab_kernel.root}", err=True)
    sys.stdout.flush()
