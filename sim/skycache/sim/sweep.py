"""Parameter sweeps: every grid point x variant x replication as one task on a Dask cluster."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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


def run_sweep(
    sf: ScenarioFile,
    cal: Calibration,
    *,
    replications: int,
    scheduler: str | None = None,
    workers: int = 2,
    variants: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Run the grid on a Dask cluster (a LocalCluster of ``workers`` processes unless ``scheduler``)."""
    import logging

    import dask

    # Dask's INFO chatter (scheduler/worker start and stop) is not the user's business.
    dask.config.set({"logging.distributed": "warning"})
    from distributed import Client, LocalCluster  # imported here: heavy, only sweeps need it

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
        rows = client.gather(futures)  # type: ignore[no-untyped-call]
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
