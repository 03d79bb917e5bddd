"""Parameter sweeps: every grid point x variant x replication as one task on a Dask cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skycache.sim.calibration import Calibration
from skycache.sim.model import simulate
from skycache.sim.results import summarise
from skycache.sim.scenario import ScenarioFile


def run_point(
    sf: ScenarioFile, cal: Calibration, variant: str, point: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    """One simulation (runs inside a Dask worker): its summary plus the point's parameters."""
    sc = sf.with_overrides(variant, point)
    t0 = time.perf_counter()
    res = simulate(sc, cal, seed)
    summary = summarise(res, wall_s=time.perf_counter() - t0)
    return {**{f"param:{k}": v for k, v in point.items()}, **summary}


def tasks(
    sf: ScenarioFile, replications: int, variants: Sequence[str] | None = None
) -> list[tuple[str, dict[str, Any], int]]:
    """Every point x variant (all of them, or ``variants``, in the file's order) x replication."""
    chosen = [v for v in ("base", *sf.variants) if variants is None or v in variants]
    out = []
    for point in sf.sweep_points():
        for variant in chosen:
            for rep in range(replications):
                out.append((variant, point, sf.base.seed + rep))
    return out


def point_text(variant: str, point: Mapping[str, Any], seed: int) -> str:
    """One run of a sweep in a progress line: ``variant base, cluster.nodes=100, seed 7``."""
    return ", ".join([f"variant {variant}", *(f"{k}={v}" for k, v in point.items()), f"seed {seed}"])


def run_sweep(
    sf: ScenarioFile,
    cal: Calibration,
    *,
    replications: int,
    scheduler: str | None = None,
    workers: int = 2,
    variants: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> pd.DataFrame:
    """Run the grid on a Dask cluster (a LocalCluster of ``workers`` processes unless ``scheduler``);
    ``progress`` gets a line as each run finishes, with the time since the first was submitted."""
    import logging

    import dask

    # Dask's INFO chatter (scheduler/worker start and stop) is not the user's business.
    dask.config.set({"logging.distributed": "warning"})
    from distributed import Client, LocalCluster, as_completed  # heavy: only sweeps need it

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)

    jobs = tasks(sf, replications, variants)
    cluster = None
    if scheduler:
        client = Client(scheduler)  # type: ignore[no-untyped-call]
    else:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)  # type: ignore[no-untyped-call]
    try:
        futures = [client.submit(run_point, sf, cal, v, p, s, pure=False) for v, p, s in jobs]
        index = {f.key: i for i, f in enumerate(futures)}
        rows: list[dict[str, Any]] = [{} for _ in futures]
        started = time.monotonic()
        # as each run finishes, not in submission order: a log shows the sweep moving
        for done, future in enumerate(as_completed(futures), 1):  # type: ignore[no-untyped-call]
            i = index[future.key]
            rows[i] = future.result()
            variant, point, seed = jobs[i]
            progress(
                f"sweep point {done} of {len(jobs)} done ({point_text(variant, point, seed)}) ... "
                f"{time.monotonic() - started:.1f} s"
            )
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()
    return pd.DataFrame(rows)


def write_sweep(out: Path, table: pd.DataFrame) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.parquet"
    table.to_parquet(path, index=False)
    return path
