"""Reader and validator for the Standard Workload Format (SWF) of the Parallel Workloads Archive.

An SWF file is text: header comment lines start with ``;`` (``; MaxNodes: 128``), and every other
non-blank line is one job with exactly 18 whitespace-separated numeric fields, -1 meaning unknown:

 1 job number, 2 submit time (s), 3 wait time, 4 run time (s), 5 allocated processors,
 6 average CPU time, 7 used memory, 8 requested processors, 9 requested time, 10 requested memory,
 11 status, 12 user, 13 group, 14 executable (application) number, 15 queue, 16 partition,
 17 preceding job, 18 think time.

Jobs are sorted by submit time in the archive's cleaned traces; a file that is not sorted, has the
wrong number of fields or non-numeric fields is refused with the line number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from skycache import files
from skycache.errors import InvalidInput
from skycache.sim.budget import MAX_VMS

FIELDS = 18
# Logs of the Parallel Workloads Archive are tens of MiB; the bound keeps the parse within memory.
MAX_TRACE_BYTES = 512 * 2**20
# Larger than any time (30 million years in seconds) or count a real trace has; int64-safe.
MAX_FIELD = 1e15


@dataclass(frozen=True)
class SwfTrace:
    submit: npt.NDArray[np.float64]  # seconds, from the first job's submit time
    runtime: npt.NDArray[np.float64]  # seconds; -1 (unknown) kept as -1
    processors: npt.NDArray[np.int64]  # allocated, or requested when allocated is unknown
    executable: npt.NDArray[np.int64]  # -1 when unknown
    header: dict[str, str]

    def __len__(self) -> int:
        return len(self.submit)


def parse_swf(text: str, *, name: str = "trace", limit: int = 0) -> SwfTrace:
    """Parse SWF text; ``limit`` > 0 keeps only the first ``limit`` jobs."""
    header: dict[str, str] = {}
    rows: list[list[float]] = []
    last_submit = -np.inf
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(";"):
            key, sep, value = stripped[1:].partition(":")
            if sep:
                header[key.strip()] = value.strip()
            continue
        fields = stripped.split()
        if len(fields) != FIELDS:
            raise InvalidInput(f"{name} line {lineno} has {len(fields)} fields, SWF has {FIELDS}: not SWF")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise InvalidInput(f"{name} line {lineno} has a non-numeric field: not SWF") from None
        # float() reads "nan" and "inf" (and 1e999 as inf): no SWF field is either.
        if not all(math.isfinite(v) and abs(v) <= MAX_FIELD for v in values):
            raise InvalidInput(f"{name} line {lineno} has a field that is not a finite number below 1e15")
        for col in (4, 7):  # allocated and requested processors: each one is a VM in the model
            if values[col] > MAX_VMS:
                raise InvalidInput(
                    f"{name} line {lineno}: {fields[col]} processors, above the model's bound of "
                    f"{MAX_VMS:,} VMs"
                )
        submit = values[1]
        if submit < 0:
            raise InvalidInput(f"{name} line {lineno}: negative submit time {fields[1]}")
        if submit < last_submit:
            raise InvalidInput(f"{name} line {lineno}: submit time {fields[1]} goes backwards")
        last_submit = submit
        rows.append(values)
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise InvalidInput(f"{name} has no job lines: not SWF")
    a = np.asarray(rows, dtype=np.float64)
    procs = np.where(a[:, 4] > 0, a[:, 4], a[:, 7]).astype(np.int64)
    return SwfTrace(
        submit=a[:, 1] - a[0, 1],
        runtime=a[:, 3],
        processors=np.maximum(procs, 1),
        executable=a[:, 13].astype(np.int64),
        header=header,
    )


def load_swf(path: Path, *, limit: int = 0) -> SwfTrace:
    # Traces of large clusters run to hundreds of MiB; the reader refuses directories, FIFOs, binary.
    text = files.read_text(path, what="SWF trace", max_bytes=MAX_TRACE_BYTES)
    return parse_swf(text, name=str(path), limit=limit)
