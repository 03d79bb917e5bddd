"""What each calibration value stands for in the model (its *role*), and which measurements fit it.

A rate is only meaningful for the workload that measured it: 4 KiB random reads at iodepth 4 give
about a tenth of a disk's streaming rate, yet the model reads a whole image working set as one
flow at ``read_bw``. So every value name has a role, the role says which source workloads fit it,
and :func:`judge` tells whether a value's recorded source fits. The model refuses a misfit unless
the calibration lists the value in ``accept_role_mismatch`` (skycache.sim.calibration_use).

A ``default`` (a number written by hand, e.g. the illustrative example calibration) is an
assumption made for the role it is written in, so it fits by construction; its source says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from skycache.errors import InvalidInput
from skycache.sim.calibration_source import Source

# From this request size on a read or write is streaming: it is at least Linux's default readahead
# window (128 KiB) halved, and the per-request cost no longer dominates a spinning disk or iSCSI.
STREAM_MIN_BS = 64 * 1024
# Up to this size a request's latency is its fixed cost (a round trip and a seek), not transfer time,
# which the model adds separately as a flow.
LATENCY_MAX_BS = 64 * 1024
# Bytes per fio size suffix: fio's kb_base defaults to 1024, so "4k" is 4096 bytes.
_FIO_SUFFIX = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_FIO_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def fio_bytes(bs: str | int | None) -> int | None:
    """fio's ``bs`` in bytes ("4k", "1M", 4096); None when absent or not one plain size (a range,
    or separate read/write sizes, does not say which size a rate was measured at)."""
    if bs is None or isinstance(bs, bool):
        return None
    if isinstance(bs, int):
        return bs
    m = _FIO_SIZE.match(bs)
    return int(m.group(1)) * _FIO_SUFFIX[m.group(2).lower()] if m else None


@dataclass(frozen=True)
class Verdict:
    fits: bool
    why: str  # what in the source decided it, for the error message


@dataclass(frozen=True)
class Role:
    """What the model does with a value, which source fits, and how to measure one."""

    title: str
    wants: str  # the fitting workload, as the error states it
    how: str  # what to run to get a fitting value ("{backend}" is filled in)
    fits: Callable[[Source], Verdict]

    @property
    def short(self) -> str:
        """The title without its explanation in parentheses."""
        return self.title.split(" (")[0]


def _workload_text(src: Source) -> str:
    w = src.workload
    parts = [f"rw={w.rw}" if w.rw else "rw not recorded"]
    parts += [f"bs={w.bs}"] if w.bs is not None else []
    parts += [f"iodepth={w.iodepth}"] if w.iodepth is not None else []
    return " ".join(parts)


def _stream(rw: str) -> Callable[[Source], Verdict]:
    def fits(src: Source) -> Verdict:
        w = src.workload
        size = fio_bytes(w.bs)
        ok = w.rw == rw and size is not None and size >= STREAM_MIN_BS
        return Verdict(ok, f"measured with {_workload_text(src)}")

    return fits


def _read_latency(src: Source) -> Verdict:
    w = src.workload
    size = fio_bytes(w.bs)
    ok = w.rw in ("read", "randread") and size is not None and size <= LATENCY_MAX_BS and w.iodepth == 1
    return Verdict(ok, f"measured with {_workload_text(src)}")


def _flush(src: Source) -> Verdict:
    if src.column == FLUSH_COLUMN:
        return Verdict(True, "a measured write-back flush")
    return _stream("write")(src)


def _column(name: str) -> Callable[[Source], Verdict]:
    def fits(src: Source) -> Verdict:
        return Verdict(src.column == name, f"taken from column {src.column or '(none)'!r}")

    return fits


# The flush rate as calibrate derives it from a bench run's write-back cache metrics.
FLUSH_COLUMN = "wb_flushed_bytes / wb_flush_s"

_REPOSITORY = {
    "read_bw": Role(
        "streaming read bandwidth of the repository (a VM's working set is fetched as one flow)",
        f"fio rw=read with bs >= {STREAM_MIN_BS // 1024} KiB",
        "a fio run with rw=read, bs=1M on an image of backend {backend} over iSCSI without read cache",
        _stream("read"),
    ),
    "write_bw": Role(
        "streaming write bandwidth of the repository (write-through and synchronised COW data)",
        f"fio rw=write with bs >= {STREAM_MIN_BS // 1024} KiB",
        "a fio run with rw=write, bs=1M on an image of backend {backend} over iSCSI without write cache",
        _stream("write"),
    ),
    "latency": Role(
        "request latency of the repository (paid once before each fetch)",
        f"fio rw=read or randread, bs <= {LATENCY_MAX_BS // 1024} KiB, iodepth=1 (no queueing)",
        "a fio run with rw=randread, bs=4k, iodepth=1 on an image of backend {backend} over iSCSI "
        "without read cache",
        _read_latency,
    ),
}
_OTHERS = {
    "cache.hit_bw": Role(
        "streaming read bandwidth of a warm read cache (a cache hit reads the working set locally)",
        f"fio rw=read with bs >= {STREAM_MIN_BS // 1024} KiB from a warm read cache",
        "a fio run with rw=read, bs=1M on an image with a read cache, cache_state=warm",
        _stream("read"),
    ),
    "cache.flush_bw": Role(
        "write-back cache flush bandwidth (synchronising a COW clone to the repository)",
        f"a measured write-back flush, or fio rw=write with bs >= {STREAM_MIN_BS // 1024} KiB",
        "a bench run with a write-back cache that records its flush (wb_flush_s, wb_flushed_bytes)",
        _flush,
    ),
    "nat.cpu_per_packet": Role(
        "NAT gateway CPU time per forwarded packet",
        "column cpu_ns_per_packet of a nat-bench run, condition nat",
        "a NAT run (skycache bench nat)",
        _column("cpu_ns_per_packet"),
    ),
    "nat.cpu_per_conn": Role(
        "NAT gateway CPU time per new connection",
        "column cpu_ns_per_conn of a nat-bench run, condition nat",
        "a NAT run (skycache bench nat)",
        _column("cpu_ns_per_conn"),
    ),
}
REPOSITORY_KEYS = tuple(_REPOSITORY)
OTHER_NAMES = tuple(_OTHERS)


def role_of(name: str) -> Role:
    """The role of a dotted value name (``repository.<backend>.read_bw``, ``cache.hit_bw``, ...)."""
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "repository" and parts[2] in _REPOSITORY:
        return _REPOSITORY[parts[2]]
    if name in _OTHERS:
        return _OTHERS[name]
    raise InvalidInput(f"{name!r} is not a calibration value")


def how_to_measure(name: str) -> str:
    parts = name.split(".")
    backend = parts[1] if len(parts) == 3 and parts[0] == "repository" else ""
    return role_of(name).how.format(backend=backend)


def judge(name: str, src: Source) -> Verdict:
    """Whether ``src`` fits the role of value ``name``; a value from --base is judged by its origin."""
    if src.kind == "base" and src.origin is not None:
        src = src.origin
    if src.kind == "default":
        return Verdict(True, "a default, stated as an assumption")
    return role_of(name).fits(src)
