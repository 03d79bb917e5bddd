"""``skycache node|cache|disk``: worker-node caches and the VM-disk stack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from skycache.cli.common import DryRunOpt, JsonOpt, cli_runner, print_json, print_list, print_table, run_plan
from skycache.errors import InvalidInput
from skycache.numbers import parse_duration
from skycache.storage import image, node
from skycache.storage.caches import cachestatus
from skycache.storage.kernel import dm
from skycache.storage.view import View
from skycache.storage.vmdisk import clone, delete, move, query, save, volumes
from skycache.units import format_size, parse_positive_size

node_app = typer.Typer(help="Worker-node setup (the local cache volume group).", no_args_is_help=True)
cache_app = typer.Typer(help="dm-cache and dm-writecache devices.", no_args_is_help=True)
disk_app = typer.Typer(
    help="VM disks: clone, ln, mkimage, mkswap, mv, delete, purge, save, list.", no_args_is_help=True
)

CacheVgOpt = Annotated[
    str, typer.Option("--cache-vg", help="Node cache VG (default: the only one on this node).")
]
DEFAULT_PORTAL = os.environ.get("SKYCACHE_PORTAL", "127.0.0.1:3260")


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.add_typer(cache_app, name="cache")
    app.add_typer(disk_app, name="disk")


def _size(text: str | None, what: str) -> int:
    # None is "not given"; an empty string was given and is not a size (it must not mean "no cache").
    return 0 if text is None else parse_positive_size(text, what=what)


def _progress(text: str) -> None:
    typer.echo(text, err=True)


# -- node ------------------------------------------------------------------------------------------


@node_app.command("init")
def node_init(
    cache_vg: Annotated[str, typer.Option("--cache-vg", help="Name of the cache VG to create.")],
    device: Annotated[
        list[str] | None, typer.Option("--device", help="Local block device for the VG (repeat).")
    ] = None,
    loop: Annotated[
        str | None, typer.Option("--loop", help="Back the VG with a sparse file of SIZE.")
    ] = None,
    loop_dir: Annotated[
        Path | None, typer.Option("--loop-dir", help="Where the --loop file goes ($SKYCACHE_LOOP_DIR).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Take a --device even if it is in use or carries a signature.")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Create the node's cache VG (tagged skycache, skycache-node) that holds cache LVs."""
    size = parse_positive_size(loop, what="--loop size") if loop is not None else None
    view = View(cli_runner())
    plan = node.plan_init(
        view,
        cache_vg,
        devices=device or None,
        loop_size=size,
        directory=str(loop_dir) if loop_dir else None,
        force=force,
    )
    if run_plan(plan, dry_run, view.runner):
        typer.echo(f"cache VG {cache_vg} created")


@node_app.command("delete")
def node_delete(
    cache_vg: Annotated[str, typer.Option("--cache-vg", help="The cache VG to delete.")],
    dry_run: DryRunOpt = False,
) -> None:
    """Delete a node cache VG and its cache LVs (refused while a cache on it is up)."""
    view = View(cli_runner())
    if run_plan(node.plan_delete(view, cache_vg), dry_run, view.runner):
        typer.echo(f"cache VG {cache_vg} deleted")


@node_app.command("list")
def node_list(as_json: JsonOpt = False) -> None:
    """List this node's cache VGs."""
    vgs = node.list_cache_vgs(View(cli_runner()))
    print_list(
        vgs,
        as_json,
        ["NAME", "SIZE", "FREE", "LVS"],
        lambda v: [v.name, format_size(v.size), format_size(v.free), str(v.lv_count)],
    )


# -- cache -----------------------------------------------------------------------------------------


@cache_app.command("status")
def cache_status(
    name: Annotated[str | None, typer.Argument(help="One cache device (default: all owned).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Status of skycache's dm-cache and dm-writecache devices (hits, misses, dirty, mode...)."""
    runner = cli_runner()
    tables = dm.all_tables(runner)
    names = [name] if name else sorted(tables)
    rows: list[dict[str, Any]] = []
    for n in names:
        segs = tables.get(n, ())
        if name is None and (not n.startswith("skycache-") or len(segs) != 1):
            continue
        if name is not None and n not in tables:
            raise InvalidInput(f"dm device {n!r} does not exist")
        if segs and segs[0].target not in ("cache", "writecache"):
            if name is not None:
                raise InvalidInput(f"dm device {n!r} is a {segs[0].target} device, not a cache")
            continue
        rows.append({"name": n, **cachestatus.status(runner, n).as_dict()})
    if as_json:
        print_json(rows)
        return
    out = []
    for r in rows:
        if r["kind"] == "cache":
            used = f"{r['cache_used']}/{r['cache_total']}"
            hits = f"r {r['read_hits']}/{r['read_misses']} w {r['write_hits']}/{r['write_misses']}"
            mode = f"{r['io_mode']},{r['policy']}"
            flags = f"{r['metadata_mode']}{',needs_check' if r['needs_check'] else ''}"
        else:
            used = f"{int(r['total_blocks']) - int(r['free_blocks'])}/{r['total_blocks']}"
            hits = f"r {r['read_hits']}/{r['read_blocks']} w {r['write_blocks']}"
            mode = "writeback"
            flags = f"error {r['error']}" if r["error"] else "ok"
        out.append([str(r["name"]), str(r["kind"]), mode, used, str(r["unwritten"]), hits, flags])
    print_table(out, ["NAME", "TARGET", "MODE", "USED", "DIRTY", "HITS/MISSES (r/w)", "STATE"])


@cache_app.command("drop")
def cache_drop(
    ref: Annotated[str, typer.Argument(metavar="REPO/IMAGE")],
    cache_vg: CacheVgOpt = "",
    dry_run: DryRunOpt = False,
) -> None:
    """Throw an image's read cache away, so its next VM disk starts cold (refused while in use)."""
    view = View(cli_runner())
    repo, name = image.split_ref(ref)
    plan = delete.plan_drop_read_cache(view, cache_vg or node.default_cache_vg(view), repo, name)
    if run_plan(plan, dry_run, view.runner):
        typer.echo(f"read cache of {ref} dropped")


@cache_app.command("flush")
def cache_flush(
    name: Annotated[str, typer.Argument(help="A skycache write-back cache device.")],
    timeout: Annotated[str, typer.Option("--timeout", help="Time to wait (600, 10min, 1h).")] = "600",
) -> None:
    """Write back every dirty block and wait until the cache is clean."""
    seconds = parse_duration(timeout, what="--timeout", positive=True, maximum=7 * 86400.0)
    cachestatus.flush(cli_runner(), name, lambda n: _progress(f"{name}: {n} blocks to write back"), seconds)
    typer.echo(f"{name} is clean")


# -- disk ------------------------------------------------------------------------------------------


@disk_app.command("clone")
def disk_clone(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    base: Annotated[str, typer.Argument(metavar="REPO/BASE")],
    portal: Annotated[str, typer.Option("--portal", help="Repository portal ADDR[:PORT].")],
    cow: Annotated[str, typer.Option("--cow", help="snapshot (dm-snapshot) or thin (dm-thin).")] = "snapshot",
    read_cache: Annotated[
        str | None, typer.Option("--read-cache", help="Read cache size (shared per image).")
    ] = None,
    write_cache: Annotated[
        str | None, typer.Option("--write-cache", help="Write-back cache size (per VM).")
    ] = None,
    write_engine: Annotated[
        str, typer.Option("--write-engine", help="writecache (dm-writecache) or dmcache.")
    ] = "writecache",
    cache_vg: CacheVgOpt = "",
    dry_run: DryRunOpt = False,
) -> None:
    """Build the VM-disk stack from a base image; prints the VM disk path as the last line."""
    req = clone.CloneRequest(
        vm_id,
        base,
        portal,
        cow,
        _size(read_cache, "--read-cache"),
        _size(write_cache, "--write-cache"),
        write_engine,
        cache_vg,
    )
    view = View(cli_runner())
    plan, path = clone.plan_clone(view, req)
    run_plan(plan, dry_run, view.runner)
    typer.echo(path)


@disk_app.command("ln")
def disk_ln(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    ref: Annotated[str, typer.Argument(metavar="REPO/IMAGE")],
    portal: Annotated[str, typer.Option("--portal", help="Repository portal ADDR[:PORT].")] = DEFAULT_PORTAL,
    read_cache: Annotated[
        str | None, typer.Option("--read-cache", help="Read cache size (dm-cache writethrough, per image).")
    ] = None,
    write_cache: Annotated[
        str | None, typer.Option("--write-cache", help="Write-back cache size (flushed on delete).")
    ] = None,
    write_engine: Annotated[
        str, typer.Option("--write-engine", help="writecache (dm-writecache) or dmcache.")
    ] = "writecache",
    cache_vg: CacheVgOpt = "",
    dry_run: DryRunOpt = False,
) -> None:
    """Attach a persistent image itself (no COW); prints the VM disk path as the last line."""
    view = View(cli_runner())
    plan, path = volumes.plan_ln(
        view,
        vm_id,
        ref,
        portal,
        read_cache=_size(read_cache, "--read-cache"),
        write_cache=_size(write_cache, "--write-cache"),
        write_engine=write_engine,
        cache_vg=cache_vg,
    )
    run_plan(plan, dry_run, view.runner)
    typer.echo(path)


def _mk(vm_id: str, size: str, cache_vg: str, dry_run: bool, swap: bool) -> None:
    nbytes = parse_positive_size(size, what="size")
    view = View(cli_runner())
    plan, path = volumes.plan_mkimage(view, vm_id, nbytes, cache_vg=cache_vg, swap=swap)
    run_plan(plan, dry_run, view.runner)
    typer.echo(path)


@disk_app.command("mkimage")
def disk_mkimage(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    size: Annotated[str, typer.Argument(metavar="SIZE")],
    cache_vg: CacheVgOpt = "",
    dry_run: DryRunOpt = False,
) -> None:
    """Make a new empty local disk; prints its path as the last line."""
    _mk(vm_id, size, cache_vg, dry_run, swap=False)


@disk_app.command("mkswap")
def disk_mkswap(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    size: Annotated[str, typer.Argument(metavar="SIZE")],
    cache_vg: CacheVgOpt = "",
    dry_run: DryRunOpt = False,
) -> None:
    """Make a new local swap disk (formatted with mkswap); prints its path as the last line."""
    _mk(vm_id, size, cache_vg, dry_run, swap=True)


@disk_app.command("mv")
def disk_mv(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    to_node: Annotated[str, typer.Option("--to-node", help="The target node's cache VG.")],
    portal: Annotated[str, typer.Option("--portal", help="Portal seen from the target node.")] = "",
    dry_run: DryRunOpt = False,
) -> None:
    """Synchronise the VM disk, then rebuild it on another node; prints the new path last."""
    view = View(cli_runner())
    sync, req = move.plan_sync_for_move(view, vm_id, to_node, portal=portal)
    if not run_plan(sync, dry_run, view.runner):
        return
    after = View(view.runner)
    rebuild, path = clone.plan_clone(after, req, rebuild=True)
    rebuild.title = f"move VM disk {vm_id}, step 2 of 2: rebuild with cache VG {to_node}"
    run_plan(rebuild, False, after.runner)
    typer.echo(path)


@disk_app.command("delete")
def disk_delete(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    sync: Annotated[
        bool, typer.Option("--sync", help="Flush to the repository first and keep the COW store.")
    ] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Tear the VM disk down (with --sync: flush it into its COW store on the repository first)."""
    view = View(cli_runner())
    plan = delete.plan_delete(view, vm_id, sync=sync)
    if run_plan(plan, dry_run, view.runner):
        typer.echo(f"VM disk {vm_id} deleted" + (" (synced to the repository)" if sync else ""))


@disk_app.command("purge")
def disk_purge(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    dry_run: DryRunOpt = False,
) -> None:
    """Remove a synced COW store from the repository."""
    view = View(cli_runner())
    if run_plan(delete.plan_purge(view, vm_id), dry_run, view.runner):
        typer.echo(f"COW store of {vm_id} purged")


@disk_app.command("save")
def disk_save(
    vm_id: Annotated[str, typer.Argument(metavar="VMID")],
    new_ref: Annotated[str, typer.Argument(metavar="REPO/NEW")],
    dry_run: DryRunOpt = False,
) -> None:
    """Materialise the VM's disk (base + COW store) as a new image in the repository."""
    view = View(cli_runner())
    plan = save.plan_save(view, vm_id, new_ref)
    if run_plan(plan, dry_run, view.runner):
        typer.echo(f"VM disk {vm_id} saved as {new_ref}")


@disk_app.command("list")
def disk_list(as_json: JsonOpt = False) -> None:
    """List VM disks (live on this node, or synced to a repository)."""
    disks = query.list_disks(View(cli_runner()))
    print_list(
        disks,
        as_json,
        ["VMID", "KIND", "STATE", "IMAGE", "COW", "READ-CACHE", "WRITE-CACHE", "DIRTY", "PATH"],
        lambda d: [
            d.vm_id,
            d.kind,
            d.state,
            d.image or "-",
            d.cow or "-",
            format_size(d.read_cache) if d.read_cache else "-",
            f"{format_size(d.write_cache)} {d.write_engine}" if d.write_cache else "-",
            "-" if d.dirty is None else str(d.dirty),
            d.path or "-",
        ],
    )
