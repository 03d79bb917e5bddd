"""Render fio job files (pure: text in, text out).

The rendered file is what runs, byte for byte, and it is stored next to fio's JSON so that anyone can
run the same job by hand on the same stack. Log names follow fio-plot's layout
(``<mode>-iodepth-<d>-numjobs-<n>_{bw,iops,lat}.<job>.log``) so fio-plot reads a run directory as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from skycache.bench import fioopts
from skycache.bench.scenario import Workload
from skycache.errors import InvalidInput
from skycache.units import parse_positive_size

_RW_LINE = re.compile(r"^\s*(?:rw|readwrite)\s*=\s*(\S+)", re.MULTILINE)

# Completion (clat) and total (lat = submission + completion) percentiles and histograms, both: fio
# 3.33 (Debian 12, the lab's and the host's) reports them side by side under clat_ns and lat_ns.
LATENCY_OPTIONS = ("clat_percentiles=1", "lat_percentiles=1")


@dataclass(frozen=True)
class JobShape:
    """The (mode, block size, iodepth, numjobs) that name a result in fio-plot's layout."""

    mode: str
    bs: str
    iodepth: int
    numjobs: int

    @property
    def stem(self) -> str:
        return f"{self.mode}-{self.iodepth}-{self.numjobs}"

    @property
    def log_prefix(self) -> str:
        return f"{self.mode}-iodepth-{self.iodepth}-numjobs-{self.numjobs}"


def bs_label(bs: str | int) -> str:
    """fio-plot's block-size directory names: ``4k``, ``128k``, ``1m``."""
    n = parse_positive_size(bs, what="bs")
    for unit, size in (("m", 2**20), ("k", 2**10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def shape(workload: Workload, job_file_text: str | None = None) -> JobShape:
    if workload.rw is not None:
        return JobShape(workload.rw, bs_label(workload.bs), workload.iodepth, workload.numjobs)
    m = _RW_LINE.search(job_file_text or "")
    return JobShape(m.group(1) if m else "job", bs_label(workload.bs), workload.iodepth, workload.numjobs)


def _fmt_seconds(s: float) -> str:
    return f"{int(s)}" if float(s).is_integer() else f"{s:g}"


def render(
    workload: Workload,
    filename: str,
    *,
    log_dir: Path | None,
    header: str = "",
    job_file_text: str | None = None,
    log_avg_msec: int = 1000,
    untimed: bool = False,
) -> str:
    """The complete job file for ``workload`` on ``filename`` (a block device or file).

    ``log_dir`` None: no bw/iops/lat logs (untimed passes). The job's own ``options`` come last in
    the job section so a scenario can override any default. The scenario's parts are checked against
    the fio allow-list again here (:mod:`skycache.bench.fioopts`): what is rendered is what runs, and a
    job file is read again at run time.
    """
    where = f"workloads.{workload.name}"
    wrong = fioopts.problem("ioengine", workload.ioengine)
    if wrong is not None:
        raise InvalidInput(f"{where}.ioengine: {wrong}")
    fioopts.check_options(workload.options, f"{where}.options")
    if job_file_text is not None:
        fioopts.check_job_text(job_file_text, f"{where}.job_file")
    lines: list[str] = [f"; {line}" for line in header.splitlines()]
    lines += ["[global]", f"filename={filename}", f"ioengine={workload.ioengine}"]
    lines.append(f"direct={1 if workload.direct else 0}")
    lines.append(f"size={_size(workload.size)}")
    # Each repetition must see fresh random offsets: a repeated sequence would hit the same cache blocks.
    lines.append("randrepeat=0")
    lines.append("group_reporting=1")
    lines += LATENCY_OPTIONS
    if log_dir is not None:
        sh = shape(workload, job_file_text)
        prefix = str(log_dir / sh.log_prefix)
        lines += [
            f"write_bw_log={prefix}",
            f"write_iops_log={prefix}",
            f"write_lat_log={prefix}",
            f"log_avg_msec={log_avg_msec}",
        ]
    if job_file_text is not None:
        return "\n".join(lines) + "\n\n" + job_file_text.rstrip() + "\n"
    lines += ["", f"[{workload.name}]", f"rw={workload.rw}", f"bs={_size(workload.bs)}"]
    lines += [f"iodepth={workload.iodepth}", f"numjobs={workload.numjobs}"]
    if workload.rwmixread is not None:
        lines.append(f"rwmixread={workload.rwmixread}")
    if workload.time_based:
        lines += [f"runtime={_fmt_seconds(workload.runtime_s)}", "time_based=1"]
    elif not untimed:
        lines.append(f"runtime={_fmt_seconds(workload.runtime_s)}")
    if workload.ramp_s and not untimed:
        lines.append(f"ramp_time={_fmt_seconds(workload.ramp_s)}")
    for key, value in workload.options.items():
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def _size(value: str | int) -> str:
    """fio reads ``4k`` as 4 KiB (binary) like skycache does; write whole units or plain bytes."""
    n = parse_positive_size(value)
    for unit, size in (("g", 2**30), ("m", 2**20), ("k", 2**10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def fio_argv(job_path: Path, json_path: Path, *, clients: tuple[str, ...] = ()) -> list[str]:
    """fio's command line: JSON (with latency histograms) to a file (stdout may carry progress or
    error text)."""
    argv = ["fio", f"--output-format={fioopts.OUTPUT_FORMAT}", f"--output={json_path}"]
    for host in clients:
        argv.append(f"--client={host}")
    argv.append(str(job_path))
    return argv
