"""``skycache repo|image|export|attach|detach|inventory|teardown``: the image repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skycache.cli.common import DryRunOpt, JsonOpt, cli_runner, print_json, print_list, run_plan
from skycache.errors import InvalidInput
from skycache.numbers import parse_duration
from skycache.storage import image, inventory, teardown
from skycache.storage import repository as repos
from skycache.storage.kernel import iscsi, lio
from skycache.storage.view import View
from skycache.units import format_size, parse_positive_size

repo_app = typer.Typer(help="Image repositories (LVM volume groups or directories).", no_args_is_help=True)
image_app = typer.Typer(help="Images, read-only bases and COW clones.", no_args_is_help=True)
export_app = typer.Typer(help="iSCSI exports of images (LIO).", no_args_is_help=True)

# -- repo --------------------------------------------------------------------------------------------


@repo_app.command("init")
def repo_init(
    name: Annotated[str, typer.Argument(help="Repository name (the VG is named like it).")],
    backend: Annotated[str, typer.Option("--backend", help="lvm or file.")] = "lvm",
    device: Annotated[
        list[str] | None, typer.Option("--device", help="Block device for the VG (repeat).")
    ] = None,
    loop: Annotated[
        str | None, typer.Option("--loop", help="Back the VG with a sparse file of SIZE.")
    ] = None,
    loop_dir: Annotated[
        Path | None, typer.Option("--loop-dir", help="Where the --loop file goes ($SKYCACHE_LOOP_DIR).")
    ] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Directory of a file repository.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Take a --device even if it is in use or carries a signature.")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Create a repository: a tagged VG (on devices or a loop file) or a marked directory."""
    view = View(cli_runner())
    if backend == "lvm":
        if directory is not None:
            raise InvalidInput("--dir is for --backend file")
        size = parse_positive_size(loop, what="--loop size") if loop is not None else None
        plan = repos.plan_init_lvm(
            view,
            name,
            devices=device or None,
            loop_size=size,
            directory=str(loop_dir) if loop_dir else None,
            force=force,
        )
    elif backend == "file":
        if directory is None or device or loop:
            raise InvalidInput("--backend file needs --dir PATH (and no --device/--loop)")
        plan = repos.plan_init_file(view, name, str(directory.absolute()))
    else:
        raise InvalidInput(f"backend {backend!r} is not lvm or file")
    if run_plan(plan, dry_run, view.runner):
        typer.echo(f"repository {name} ({backend}) created")


@repo_app.command("delete")
def repo_delete(
    name: Annotated[str, typer.Argument(help="Repository name.")],
    force: Annotated[bool, typer.Option("--force", help="Also remove the exports of its images.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Delete a repository and its images (refused while an image is exported, unless --force, or in use)."""
    view = View(cli_runner())
    if run_plan(repos.plan_delete(view, name, force=force), dry_run, view.runner):
        typer.echo(f"repository {name} deleted")


@repo_app.command("list")
def repo_list(as_json: JsonOpt = False) -> None:
    """List repositories."""
    found = repos.list_repos(View(cli_runner()))
    print_list(
        found,
        as_json,
        ["NAME", "BACKEND", "LOCATION", "SIZE", "FREE"],
        lambda r: [r.name, r.backend, r.location, format_size(r.size), format_size(r.free)],
    )


# -- image -------------------------------------------------------------------------------------------


@image_app.command("create")
def image_create(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")],
    size: Annotated[str | None, typer.Option("--size", help="Size (512M, 8G...).")] = None,
    source: Annotated[str | None, typer.Option("--from", help="Raw or qcow2 file to copy in.")] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Create an image, empty or from a raw/qcow2 file."""
    nbytes = parse_positive_size(size, what="--size") if size is not None else None
    view = View(cli_runner())
    plan = image.plan_create(view, ref, size=nbytes, source=source)
    if run_plan(plan, dry_run, view.runner):
        typer.echo(f"image {ref} created")


@image_app.command("list")
def image_list(
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List images: name, backend, size, read-only, origin, clones."""
    found = image.list_images(View(cli_runner()), repo)
    print_list(
        found,
        as_json,
        ["NAME", "BACKEND", "SIZE", "MODE", "ORIGIN", "CLONES", "EXPORTED"],
        lambda i: [
            i.ref,
            i.backend,
            format_size(i.size),
            "ro" if i.read_only else "rw",
            f"{i.origin} ({i.cow})" if i.origin else "-",
            ",".join(i.clones) or "-",
            "yes" if i.exported else "no",
        ],
    )


@image_app.command("delete")
def image_delete(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")],
    force: Annotated[bool, typer.Option("--force", help="Also delete its clones and its export.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Delete an image (refused while clones or an export use it, unless --force)."""
    view = View(cli_runner())
    if run_plan(image.plan_delete(view, ref, force=force), dry_run, view.runner):
        typer.echo(f"image {ref} deleted")


@image_app.command("clone")
def image_clone(
    base: Annotated[str, typer.Argument(metavar="REPO/BASE")],
    new: Annotated[str, typer.Argument(metavar="REPO/NEW")],
    cow: Annotated[str, typer.Option("--cow", help="thin, snapshot or copy.")] = "thin",
    cow_size: Annotated[
        str | None, typer.Option("--cow-size", help="COW store of a snapshot clone (default: base/4).")
    ] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Clone a base (made read-only first): thin, snapshot (O(1)) or copy."""
    cs = parse_positive_size(cow_size, what="--cow-size") if cow_size is not None else None
    view = View(cli_runner())
    if run_plan(image.plan_clone_image(view, base, new, cow, cow_size=cs), dry_run, view.runner):
        typer.echo(f"image {new} cloned from {base} ({cow})")


# -- export ------------------------------------------------------------------------------------------


@export_app.command("add")
def export_add(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")],
    initiator: Annotated[
        list[str] | None,
        typer.Option("--initiator", help="Initiator IQN allowed in (repeat; default: this node)."),
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Export read-only.")] = False,
    no_chap: Annotated[bool, typer.Option("--no-chap", help="Turn CHAP off (ACLs only).")] = False,
    delay_ms: Annotated[
        int,
        typer.Option(
            "--delay-ms", min=0, max=10000, help="Seek-like latency of the repository disk (dm-delay)."
        ),
    ] = 0,
    listen: Annotated[
        str, typer.Option("--listen", help="Portal ADDR[:PORT] LIO listens on.")
    ] = "0.0.0.0:3260",
    dry_run: DryRunOpt = False,
) -> None:
    """Export an image over iSCSI (LIO), with ACLs and CHAP."""
    view = View(cli_runner())
    plan = image.plan_export(
        view,
        ref,
        initiators=initiator or [],
        read_only=read_only,
        chap=not no_chap,
        listen=lio.parse_listen(listen),
        delay_ms=delay_ms,
    )
    if run_plan(plan, dry_run, view.runner):
        repo, name = image.split_ref(ref)
        typer.echo(lio.target_iqn(repo, name))


@export_app.command("remove")
def export_remove(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")], dry_run: DryRunOpt = False
) -> None:
    """Remove the export of an image."""
    view = View(cli_runner())
    if run_plan(image.plan_unexport(view, ref), dry_run, view.runner):
        typer.echo(f"export of {ref} removed")


@export_app.command("list")
def export_list(as_json: JsonOpt = False) -> None:
    """List owned exports (never their secrets)."""
    found = lio.list_exports(cli_runner())
    print_list(
        found,
        as_json,
        ["TARGET", "BACKSTORE", "DEVICE", "INITIATORS", "MODE", "CHAP"],
        lambda e: [
            e.iqn,
            e.plugin,
            e.device,
            ",".join(e.initiators),
            "ro" if e.read_only else "rw",
            "on" if e.chap else "off",
        ],
    )


@export_app.command("show")
def export_show(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")],
    show_secret: Annotated[bool, typer.Option("--show-secret", help="Also print the CHAP secret.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one export; its CHAP secret only with --show-secret."""
    repo, name = image.split_ref(ref)
    iqn = lio.target_iqn(repo, name)
    runner = cli_runner()
    exp = lio.find_export(runner, iqn)
    if exp is None:
        raise InvalidInput(f"{ref!r} is not exported")
    data = exp.as_dict()
    chap = lio.load_chap(runner, iqn)
    if chap:
        data["chap_user"] = chap.userid
        if show_secret:
            data["chap_secret"] = chap.password
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


@export_app.command("restore")
def export_restore(dry_run: DryRunOpt = False) -> None:
    """Recreate owned exports from the saved configuration (after a reboot)."""
    view = View(cli_runner())
    if run_plan(image.plan_restore_exports(view), dry_run, view.runner):
        typer.echo("exports restored")


# -- attach / detach / inventory / teardown ----------------------------------------------------------


def attach(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")],
    portal: Annotated[str, typer.Option("--portal", help="Target portal ADDR[:PORT].")],
    timeout: Annotated[str, typer.Option("--timeout", help="Time to wait for the disk (60, 2min).")] = "60",
    chap_from: Annotated[
        str | None,
        typer.Option(
            "--chap-from",
            metavar="[USER@]HOST",
            help="Read the CHAP secret from HOST's state directory over ssh (the repository's).",
        ),
    ] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Log in to an exported image; prints the block device as the last line."""
    seconds = parse_duration(timeout, what="--timeout", positive=True, maximum=86400.0)
    where = iscsi.parse_portal(portal)
    secrets_host = cli_runner(chap_from) if chap_from is not None else None
    view = View(cli_runner())
    plan, device = image.plan_attach(view, ref, where, timeout_s=seconds, chap_from=secrets_host)
    if run_plan(plan, dry_run, view.runner):
        typer.echo(view.runner.resolve(device) or device)


def detach(
    ref: Annotated[str, typer.Argument(metavar="REPO/NAME")],
    force: Annotated[
        bool, typer.Option("--force", help="Log out even if a device sits on the disk.")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Flush and log out of an attached image."""
    view = View(cli_runner())
    plan = image.plan_detach(view, ref, force=force)
    if not plan.actions:
        typer.echo(f"{ref} is not attached")
    elif run_plan(plan, dry_run, view.runner):
        typer.echo("\n".join(a.description for a in plan.actions))


def inventory_cmd(as_json: JsonOpt = False) -> None:
    """List every object skycache owns, from the system's own records."""
    items = inventory.collect(View(cli_runner())).items()
    print_list(items, as_json, ["KIND", "NAME", "DETAIL"], lambda i: [i.kind, i.name, i.detail])


def teardown_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Remove everything skycache owns.")] = False,
    no_flush: Annotated[
        bool,
        typer.Option("--no-flush", help="Do not flush write-back caches (refuse if dirty, unless --force)."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Discard dirty cache blocks; force dm removal.")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Remove owned objects in safe order: flush, dm holders, sessions, exports, LVs/VGs, loops, files."""
    if not all_:
        raise InvalidInput("say --all: teardown removes everything skycache owns")
    view = View(cli_runner())
    plan = teardown.plan_teardown(view, flush=not no_flush, force=force)
    if run_plan(plan, dry_run, view.runner, steps="teardown"):
        typer.echo(f"teardown done ({len(plan.actions)} steps)")


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")
    app.add_typer(image_app, name="image")
    app.add_typer(export_app, name="export")
    app.command("attach")(attach)
    app.command("detach")(detach)
    app.command("inventory")(inventory_cmd)
    app.command("teardown")(teardown_cmd)
