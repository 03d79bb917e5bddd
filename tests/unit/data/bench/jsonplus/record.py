"""Re-record the json+ fixtures of this directory with the host's fio (no device, no root needed).

    .venv/bin/python tests/unit/data/bench/jsonplus/record.py

Jobs are rendered by skycache.bench.fiojob (what `bench run` runs) on a temporary file:
- ``run/fio/rep-<r>/file-local/4k/``: three repetitions of one condition, JSON and logs in the
  layout of a run directory (fio-plot reads it; the latency merge is checked on it);
- ``randrw-libaio.json``: one mixed job (both directions; clat and lat differ by the submission time);
- ``per-io/rep-<r>.json`` with ``rep-<r>_{clat,lat}.1.log``: two short repetitions whose logs hold
  every I/O's latency (``log_avg_msec=0``): the truth a merged-histogram percentile is checked against;
- ``two-servers.json``: one job on two local fio servers (client mode), with fio's own "All clients"
  aggregate, whose percentiles fio computes from the two histograms merged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skycache.bench import fiojob
from skycache.bench.scenario import Workload

HERE = Path(__file__).parent
PORTS = (18766, 18767)


def _workload(rw: str) -> Workload:
    return Workload(
        name=rw, rw=rw, bs="4k", iodepth=4, size="4M", runtime_s=3, ioengine="libaio", direct=False,
        options={"rate_iops": 200},  # a few hundred I/Os per run keep the files small
    )  # fmt: skip


def _fio(job: Path, out: Path, *clients: str) -> None:
    argv = fiojob.fio_argv(job, out, clients=clients)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        run = HERE / "run"
        shutil.rmtree(run, ignore_errors=True)
        w = _workload("randread")
        sh = fiojob.shape(w)
        for rep in (1, 2, 3):
            d = run / "fio" / f"rep-{rep}" / "file-local" / sh.bs
            d.mkdir(parents=True)
            job = Path(tmp) / f"rep{rep}.fio"
            job.write_text(fiojob.render(w, str(data), log_dir=d))
            _fio(job, d / f"{sh.stem}.json")
        per_io = HERE / "per-io"
        shutil.rmtree(per_io, ignore_errors=True)
        per_io.mkdir()
        short = w.model_copy(update={"runtime_s": 1.0})
        for rep in (1, 2):
            job = Path(tmp) / f"per-io{rep}.fio"
            text = fiojob.render(short, str(data), log_dir=None)
            job.write_text(text + f"write_lat_log={per_io / f'rep-{rep}'}\nlog_avg_msec=0\n")
            _fio(job, per_io / f"rep-{rep}.json")
            (per_io / f"rep-{rep}_slat.1.log").unlink()
        mixed = Path(tmp) / "randrw.fio"
        mixed.write_text(fiojob.render(_workload("randrw"), str(data), log_dir=None))
        _fio(mixed, HERE / "randrw-libaio.json")
        servers = [
            subprocess.Popen(["fio", f"--server=ip:127.0.0.1,{port}"], stdout=subprocess.DEVNULL)
            for port in PORTS
        ]
        try:
            time.sleep(1)
            jobs = []
            for port in PORTS:
                j = Path(tmp) / f"server{port}.fio"
                j.write_text(fiojob.render(w, f"{data}{port}", log_dir=None))
                jobs.append(j)
            argv = ["fio", "--output-format=json+", f"--output={HERE / 'two-servers.json'}"]
            for port, j in zip(PORTS, jobs, strict=True):
                argv += [f"--client=ip:127.0.0.1,{port}", str(j)]
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        finally:
            for s in servers:
                s.terminate()
                s.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
