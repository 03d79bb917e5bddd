"""``skycache bench nat``: the NAT load measurement; ``skycache net nat-bench`` is its older name.

The benchmark is a bench verb (``bench show`` and ``bench compare`` read its runs). The old name stays
in lib's ``net`` group: lib/ must not import bench/ (docs/architecture.md, "Dependency rules"), so it
reaches that group through the ``skycache.cli.net`` entry-point group, which cli/main.py calls with
the group's app.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from skycache import files
from skycache.errors import InvalidInput, SkycacheError
from skycache.runner import SystemRunner


def register(net_app: typer.Typer) -> None:
    """``net nat-bench``: the form docs and scripts wrote before ``bench nat``."""
    net_app.command("nat-bench", help="The NAT benchmark (another name of `skycache bench nat`).")(nat_bench)


def nat_bench(
    where: Annotated[
        str,
        typer.Option(
            "--where", help="lab (boot the lab kernel; inside the lab: run there) or host (this kernel)."
        ),
    ] = "lab",
    repetitions: Annotated[int, typer.Option("--repetitions", help="Repetitions per condition.")] = 3,
    out: Annotated[
        Path, typer.Option("--out", help="Results root (run goes to OUT/nat-bench/<run-id>/).")
    ] = Path("results"),
    bulk_seconds: Annotated[float, typer.Option("--bulk-seconds", help="iperf3 duration per run.")] = 5.0,
    conn_seconds: Annotated[float, typer.Option("--conn-seconds", help="Short-flow loop duration.")] = 5.0,
    max_conns: Annotated[int, typer.Option("--max-conns", help="Upper bound of short connections.")] = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Measure NAT (MASQUERADE + conntrack) against plain routing on the same namespace path.

    Prints NAT vs routed throughput, connections/s, CPU per packet and per connection, conntrack
    entries and memory, with 95% intervals over the repetitions. `skycache bench show RUN` prints a
    run's table again; `skycache bench compare RUN...` compares runs. Also `skycache net nat-bench`.
    """
    # natbench imports pandas (seconds; a minute in the TCG lab): only when the verb runs, not each
    # time `skycache` registers its verbs.
    from skycache.bench import natbench as nb

    opts = nb.NatBenchOptions(repetitions, bulk_seconds, conn_seconds, max_conns, out, where)
    opts.validate()
    files.check_output_dir(out, what="--out")  # before a lab boots or a namespace is made
    runner = SystemRunner()
    if where == "lab" and os.environ.get("SKYCACHE_IN_LAB") != "1":
        cwd = Path.cwd().resolve()
        if not out.resolve().is_relative_to(cwd):
            raise InvalidInput(f"--out {out} must be under the current directory (the lab writes only there)")
        exe = shutil.which("skycache") or str(Path(sys.executable).with_name("skycache"))
        before = set((out / "nat-bench").glob("*"))
        # --json: stdout is the JSON alone, the lab's lines go to stderr
        echo = (lambda line: typer.echo(line, err=True)) if as_json else typer.echo
        code = runner.stream(nb.lab_argv(opts, exe), on_line=echo, timeout_s=3600)
        if code != 0:
            raise SkycacheError(f"nat-bench in the lab failed (exit {code})")
        if as_json:
            new = sorted(set((out / "nat-bench").glob("*")) - before)
            if not new:
                raise SkycacheError(f"nat-bench in the lab wrote no run under {out / 'nat-bench'}")
            manifest = json.loads((new[-1] / "manifest.json").read_text())
            typer.echo(
                json.dumps({"run_dir": str(new[-1]), "summary": manifest.get("summary", [])}, indent=2)
            )
        return
    result = nb.run(runner, opts, progress=lambda line: typer.echo(line, err=True))
    if as_json:
        doc = {"run_dir": str(result.run_dir), "summary": nb.summary_json(result.summary)}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    typer.echo(nb.format_table(result.summary, repetitions))
    typer.echo(f"results: {result.run_dir}")
