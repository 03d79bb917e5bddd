"""The fio options a scenario may set: an allow-list, every value checked (issue 18).

fio runs as root on the stacks skycache builds, and a scenario may come from a colleague. fio itself
has options that run commands (``exec_prerun``, ``exec_postrun``, ``trigger_cmd``), that name the
files or devices it opens (``filename``, ``directory``, ``filename_format``, ``opendir``), that write
or read files anywhere (``write_iolog``, ``write_*_log``, ``verify_state_save``...), that delete
files (``unlink``), change a device's scheduler (``ioscheduler``), change users or cgroups, or load
a shared object (``ioengine=external:...``). None of them may come from a scenario: the stack gives
the device (``filename`` is set by :mod:`skycache.bench.fiojob`), the run directory gets the logs.

So a scenario's ``options`` (and every option line of a ``job_file``) must be in :data:`ALLOWED`,
each with a value of its kind; no value may hold a line break or a NUL (in a job file it would start
a new option line). The allow-list is documented in docs/bench.md ("fio options"): keep both in step.
Errors name the file, the key and the problem in one line; they never echo a job file's content
(a ``job_file`` pointing at a secret must not print it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Protocol

from skycache import files
from skycache.errors import InvalidInput

JOB_FILE_MAX_BYTES = 64 * 1024
# What skycache asks fio to write (not a scenario option): json+ is fio's JSON plus each latency
# histogram ("bins": bucket value in ns -> count), from which percentiles across repetitions are
# computed by merging (skycache.bench.latency), never by averaging per-repetition percentiles.
OUTPUT_FORMAT = "json+"
VALUE_MAX_CHARS = 256

IOENGINES = ("libaio", "io_uring", "psync", "sync", "pvsync", "pvsync2", "posixaio", "null")
RW_MODES = ("read", "write", "randread", "randwrite", "randrw", "readwrite", "rw", "trim", "randtrim")

Check = Callable[[str], str | None]  # the value as text -> None when fine, else what is wrong

_INT = re.compile(r"^[0-9]{1,12}$")
_SIGNED = re.compile(r"^-?[0-9]{1,3}$")
_SIZE = r"[0-9]{1,15}(?:[kmgtp]i?b?)?"
_TIME = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,6})?(?:us|usec|ms|msec|s|sec|m|min|h|d)?$")
_FLOAT = re.compile(r"^[0-9]{1,6}(?:\.[0-9]{1,6})?$")


def _ints(lo: int, hi: int) -> Check:
    def check(v: str) -> str | None:
        if not (_SIGNED if lo < 0 else _INT).fullmatch(v) or not lo <= int(v) <= hi:
            return f"must be an integer from {lo} to {hi}"
        return None

    return check


def _pattern(regex: str, what: str, flags: int = 0) -> Check:
    compiled = re.compile(regex, flags)

    def check(v: str) -> str | None:
        return None if compiled.fullmatch(v) else f"must be {what}"

    return check


def _choice(*words: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in words else f"must be one of {', '.join(words)}"

    return check


_BOOL = _choice("0", "1")
_PERCENT = _ints(0, 100)
_TIME_CHECK = _pattern(_TIME.pattern, "a time such as 30, 500ms or 2m")
_SIZE_OR_PERCENT = _pattern(
    rf"{_SIZE}|[0-9]{{1,2}}%|100%", "a size (64M) or a percentage (50%)", re.IGNORECASE
)
_SIZES = _pattern(rf"{_SIZE}(?:,{_SIZE}){{0,2}}", "a size, or sizes for read,write,trim", re.IGNORECASE)
_SIZE_RANGES = _pattern(
    rf"{_SIZE}-{_SIZE}(?:,{_SIZE}-{_SIZE}){{0,2}}", "a size range such as 4k-64k", re.IGNORECASE
)
_BSSPLIT = _pattern(
    rf"{_SIZE}(?:-{_SIZE})?/[0-9]{{0,3}}(?::{_SIZE}(?:-{_SIZE})?/[0-9]{{0,3}})*"
    rf"(?:,{_SIZE}(?:-{_SIZE})?/[0-9]{{0,3}}(?::{_SIZE}(?:-{_SIZE})?/[0-9]{{0,3}})*){{0,2}}",
    "a block size split such as 4k/60:64k/40",
    re.IGNORECASE,
)


def _rw(v: str) -> str | None:
    mode, _, count = v.partition(":")
    if mode not in RW_MODES or (count and not _INT.fullmatch(count)):
        return f"must be a fio rw mode ({', '.join(RW_MODES)}), optionally with :N"
    return None


def _text(v: str) -> str | None:
    return None if v.isprintable() else "must be printable text"


# Option -> check of its value. None: a switch that may also stand alone (``time_based``) in a job file.
ALLOWED: Mapping[str, Check] = {
    # what the I/O is
    "rw": _rw,
    "readwrite": _rw,
    "rwmixread": _PERCENT,
    "rwmixwrite": _PERCENT,
    "bs": _SIZES,
    "blocksize": _SIZES,
    "bsrange": _SIZE_RANGES,
    "blocksize_range": _SIZE_RANGES,
    "bssplit": _BSSPLIT,
    "ba": _SIZES,
    "blockalign": _SIZES,
    "bs_unaligned": _BOOL,
    "size": _SIZE_OR_PERCENT,
    "io_size": _SIZE_OR_PERCENT,
    "io_limit": _SIZE_OR_PERCENT,
    "offset": _SIZE_OR_PERCENT,
    "offset_increment": _SIZE_OR_PERCENT,
    "number_ios": _ints(1, 10**12),
    "loops": _ints(1, 10**6),
    "ioengine": _choice(*IOENGINES),
    "iodepth": _ints(1, 65536),
    "iodepth_batch": _ints(0, 65536),
    "iodepth_batch_submit": _ints(0, 65536),
    "iodepth_batch_complete_min": _ints(0, 65536),
    "iodepth_batch_complete_max": _ints(0, 65536),
    "iodepth_low": _ints(0, 65536),
    "numjobs": _ints(1, 4096),
    "direct": _BOOL,
    "buffered": _BOOL,
    "sync": _choice("0", "1", "sync", "dsync", "none"),
    "fsync": _ints(0, 10**9),
    "fdatasync": _ints(0, 10**9),
    "end_fsync": _BOOL,
    "fsync_on_close": _BOOL,
    "invalidate": _BOOL,
    "thread": _BOOL,
    "hipri": _BOOL,
    "fixedbufs": _BOOL,
    "registerfiles": _BOOL,
    "sqthread_poll": _BOOL,
    "mem": _choice("malloc", "shm", "shmhuge", "mmap"),
    "iomem": _choice("malloc", "shm", "shmhuge", "mmap"),
    # where the offsets go
    "norandommap": _BOOL,
    "randrepeat": _BOOL,
    "randseed": _ints(0, 2**63 - 1),
    "random_generator": _choice("tausworthe", "lfsr", "tausworthe64"),
    "random_distribution": _pattern(
        r"random|(?:zipf|pareto|normal|gauss):[0-9]{1,6}(?:\.[0-9]{1,6})?(?::[0-9]{1,6}(?:\.[0-9]{1,6})?)?"
        r"|zoned(?:_abs)?:[0-9./:,kKmMgG]{1,200}",
        "random, zipf:THETA, pareto:H, normal:DEV, gauss:DEV or zoned:...",
    ),
    "percentage_random": _pattern(r"[0-9]{1,3}(?:,[0-9]{1,3}){0,2}", "percentages such as 50 or 50,20"),
    # how fast, how long
    "runtime": _TIME_CHECK,
    "time_based": _BOOL,
    "ramp_time": _TIME_CHECK,
    "startdelay": _TIME_CHECK,
    "thinktime": _TIME_CHECK,
    "thinktime_spin": _TIME_CHECK,
    "thinktime_blocks": _ints(1, 10**9),
    "rate": _SIZES,
    "rate_min": _SIZES,
    "rate_iops": _pattern(r"[0-9]{1,12}(?:,[0-9]{1,12}){0,2}", "IOPS, or IOPS for read,write,trim"),
    "rate_iops_min": _pattern(r"[0-9]{1,12}(?:,[0-9]{1,12}){0,2}", "IOPS, or IOPS for read,write,trim"),
    "rate_process": _choice("linear", "poisson"),
    "max_latency": _TIME_CHECK,
    "latency_target": _TIME_CHECK,
    "latency_window": _TIME_CHECK,
    "latency_percentile": _pattern(_FLOAT.pattern, "a percentile such as 99.9"),
    # data written
    "refill_buffers": _BOOL,
    "scramble_buffers": _BOOL,
    "zero_buffers": _BOOL,
    "buffer_compress_percentage": _PERCENT,
    "buffer_compress_chunk": _SIZES,
    "dedupe_percentage": _PERCENT,
    "verify": _choice(
        "0",
        "md5",
        "crc64",
        "crc32c",
        "crc32c-intel",
        "crc32",
        "crc16",
        "crc7",
        "xxhash",
        "sha1",
        "sha256",
        "sha512",
        "meta",
        "null",
    ),
    "do_verify": _BOOL,
    "verify_fatal": _BOOL,
    "verify_backlog": _ints(0, 10**9),
    "verify_interval": _SIZES,
    "continue_on_error": _choice("none", "read", "write", "io", "verify", "all", "0", "1"),
    # reporting and scheduling
    "name": _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", "a job name of letters, digits, '.', '_', '-'"),
    "description": _text,
    "group_reporting": _BOOL,
    "stonewall": _BOOL,
    "wait_for_previous": _BOOL,
    "new_group": _BOOL,
    "unified_rw_reporting": _choice("0", "1", "none", "mixed", "both"),
    "percentile_list": _pattern(
        r"[0-9]{1,3}(?:\.[0-9]{1,6})?(?::[0-9]{1,3}(?:\.[0-9]{1,6})?){0,19}", "percentiles such as 50:99:99.9"
    ),
    "clat_percentiles": _BOOL,
    "lat_percentiles": _BOOL,
    "slat_percentiles": _BOOL,
    "disable_lat": _BOOL,
    "disable_clat": _BOOL,
    "disable_slat": _BOOL,
    "disable_bw_measurement": _BOOL,
    "gtod_reduce": _BOOL,
    "clocksource": _choice("gettimeofday", "clock_gettime", "cpu"),
    "log_avg_msec": _ints(0, 86_400_000),
    "exitall": _BOOL,
    "exitall_on_error": _BOOL,
    "serialize_overlap": _BOOL,
    "cpus_allowed": _pattern(r"[0-9,-]{1,64}", "CPU numbers such as 0-3,6"),
    "cpus_allowed_policy": _choice("shared", "split"),
    "nice": _ints(-20, 19),
    "prio": _ints(0, 7),
    "prioclass": _ints(0, 3),
}

# Switches that a job file may write alone (fio sets them to 1).
SWITCHES = frozenset(k for k, v in ALLOWED.items() if v is _BOOL)

# Options refused with the reason, for a clearer line than "not in the allow-list".
_RUNS = "runs a command"
_FILE = "names a file or device (the stack gives the device)"
_IO = "reads or writes a file outside the run directory (skycache sets the logs)"
REFUSED: Mapping[str, str] = {
    "exec_prerun": _RUNS,
    "exec_postrun": _RUNS,
    "trigger": _RUNS,
    "trigger_cmd": _RUNS,
    "trigger_file": _RUNS,
    "filename": _FILE,
    "directory": _FILE,
    "filename_format": _FILE,
    "opendir": _FILE,
    "lockfile": _FILE,
    "nrfiles": _FILE,
    "replay_redirect": _FILE,
    "write_iolog": _IO,
    "read_iolog": _IO,
    "write_bw_log": _IO,
    "write_lat_log": _IO,
    "write_iops_log": _IO,
    "write_hist_log": _IO,
    "verify_state_save": _IO,
    "verify_state_load": _IO,
    "verify_dump": _IO,
    "unlink": "deletes files",
    "unlink_each_loop": "deletes files",
    "ioscheduler": "changes the device's I/O scheduler",
    "allow_mounted_write": "writes to a mounted device",
    "cgroup": "changes cgroups",
    "uid": "changes the user fio runs as",
    "gid": "changes the group fio runs as",
    "daemonize": "leaves a process behind",
    "include": "includes another file",
}


def problem(key: str, value: str | None, *, echo: bool = True) -> str | None:
    """What is wrong with fio option ``key`` set to ``value`` (None: a bare switch); None when fine.
    ``echo``: whether the message may quote the value (not for a job file's lines)."""
    if key in REFUSED:
        return f"not allowed: it {REFUSED[key]}"
    check = ALLOWED.get(key)
    if check is None:
        return "not in the allow-list of fio options (docs/bench.md, 'fio options')"
    if value is None:
        return None if key in SWITCHES else "needs a value"
    if any(c in value for c in "\n\r\0"):
        return "the value holds a line break or NUL"
    if len(value) > VALUE_MAX_CHARS:
        return f"the value is longer than {VALUE_MAX_CHARS} characters"
    wrong = check(value)
    if wrong is None:
        return None
    return f"{value!r} {wrong}" if echo else f"the value {wrong}"


def check_options(options: Mapping[str, str | int], where: str) -> None:
    """A scenario's ``options`` table (TOML strings or integers)."""
    for key, raw in options.items():
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise InvalidInput(f"{where}.{_shown_key(key)}: must be a string or an integer")
        wrong = problem(key, str(raw))
        if wrong is not None:
            raise InvalidInput(f"{where}.{_shown_key(key)}: {wrong}")


_SECTION = re.compile(r"^\[([A-Za-z0-9][A-Za-z0-9._ -]{0,62})\]$")
_OPTION = re.compile(r"^([A-Za-z][A-Za-z0-9_]{0,63})\s*(?:=\s*(.*?))?$")


def check_job_text(text: str, where: str) -> None:
    """Every line of a fio job file: blank, a comment (``;`` or ``#``), a ``[section]``, or an allowed
    option with a valid value. Errors name the line number and, when it is a name, the key; never the
    line itself."""
    if "\0" in text or "\r" in text:
        raise InvalidInput(f"{where}: holds a NUL or a carriage return")
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            if not _SECTION.fullmatch(line):
                raise InvalidInput(f"{where}: line {number}: not a job section name [letters, digits, ._ -]")
            continue
        if line.split()[0] == "include":  # fio's "include FILE" directive
            raise InvalidInput(f"{where}: line {number}: include: not allowed: it {REFUSED['include']}")
        m = _OPTION.fullmatch(line)
        if m is None:
            raise InvalidInput(f"{where}: line {number}: not a fio option line (key=value)")
        wrong = problem(m.group(1), m.group(2), echo=False)
        if wrong is not None:
            raise InvalidInput(f"{where}: line {number}: {m.group(1)}: {wrong}")


def read_job_file(scenario: Path, name: str, where: str) -> str:
    """The text of job file ``name`` (relative to the scenario's directory): a regular file (not a
    symbolic link) of at most 64 KiB of UTF-8 text, checked line by line. Read through
    :func:`skycache.files.read_text`, so a FIFO is refused, not waited on."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not name:
        raise InvalidInput(f"{where}: {name!r} must be a path inside the scenario's directory")
    path = scenario.parent / rel
    if path.is_symlink():
        raise InvalidInput(f"{where}: {name} is a symbolic link, not a regular file")
    if not path.exists():
        raise InvalidInput(f"{where}: file not found: {name}")
    try:
        text = files.read_text(path, what="fio job file", max_bytes=JOB_FILE_MAX_BYTES)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    check_job_text(text, f"{where} {name}")
    return text


class FioWorkload(Protocol):
    """What :func:`check_workload` reads of a scenario's workload."""

    @property
    def ioengine(self) -> str: ...

    @property
    def options(self) -> Mapping[str, str | int]: ...

    @property
    def job_file(self) -> str | None: ...


def check_workload(scenario: Path, where: str, workload: FioWorkload) -> None:
    """The hook of :mod:`skycache.bench.scenario`: a workload's ``ioengine``, ``options`` and
    ``job_file``, before anything is built."""
    wrong = problem("ioengine", workload.ioengine)
    if wrong is not None:
        raise InvalidInput(f"{scenario}: {where}.ioengine: {wrong}")
    check_options(workload.options, f"{scenario}: {where}.options")
    if workload.job_file is not None:
        read_job_file(scenario, workload.job_file, f"{scenario}: {where}.job_file")


def _shown_key(key: str) -> str:
    """A key as an error may show it: a plain name as is, anything else quoted and cut short."""
    return key if re.fullmatch(r"[A-Za-z0-9_]{1,64}", key) else repr(key[:40])
