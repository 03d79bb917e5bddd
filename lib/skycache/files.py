"""The one reader of files a user hands in (scenarios, calibrations, suites, traces, job files), and
the check of output directories before a run starts.

Every problem is one :class:`~skycache.errors.InvalidInput` line that names the path and what is
wrong with it, never a raw ``OSError``, ``UnicodeDecodeError`` or ``RecursionError``:

- only regular files are read: a directory, a FIFO, a socket or a device is refused after ``open``
  with ``O_NONBLOCK`` (so a FIFO with no writer cannot block the open) by ``fstat`` of the open
  descriptor, so the check and the read are about the same file;
- files under /proc and /sys are refused by their real path: they claim a size of 0 and some never
  end (``/proc/self/mem`` fails with EIO, ``/dev/zero`` via a link would fill memory);
- the text must be UTF-8 without NUL bytes, and at most ``max_bytes`` long (read stops one byte after
  the bound, so a file that grows while it is read cannot exhaust memory either).

This module only reads and stats the local filesystem: user files live where the ``skycache`` command
runs, not on the managed host (that is :mod:`skycache.state`'s job, through the runner).
"""

from __future__ import annotations

import errno
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from skycache.errors import InvalidInput

# Scenario, calibration and suite files are a few KiB; an SWF trace of a year of a large cluster is
# some hundreds of MiB, so callers of traces pass their own bound.
MAX_TEXT_BYTES = 16 * 2**20
# Filesystems whose files are not data: procfs and sysfs report size 0 and generate their content.
PSEUDO_ROOTS = ("/proc", "/sys")


def shown(path: str | os.PathLike[str]) -> str:
    """The path as it is printed in an error: verbatim, or quoted when it holds a newline or another
    character that would break the one line (or hide part of it)."""
    s = os.fspath(path)
    return s if s.isprintable() and s.strip() == s and s else repr(s)


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _os_problem(exc: OSError) -> str:
    """An OSError of open/stat/read as the end of a sentence about the path."""
    if exc.errno == errno.ENOENT:
        return "not found"
    if exc.errno == errno.ELOOP:
        return "is a symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.EACCES or exc.errno == errno.EPERM:
        return "cannot be read (permission denied)"
    if exc.errno == errno.ENOTDIR:
        return "not found (a part of the path is not a directory)"
    if exc.errno == errno.ENAMETOOLONG:
        return "cannot be opened (the path is too long)"
    return f"cannot be read ({exc.strerror or exc})"


def _under_pseudo_fs(path: Path) -> bool:
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    return any(real == root or real.startswith(root + "/") for root in PSEUDO_ROOTS)


def _refuse_path(p: Path, where: str) -> None:
    """What no file skycache reads may be, known from the path alone."""
    if "\0" in os.fspath(p):
        raise InvalidInput(f"{where} path contains a NUL byte")
    if _under_pseudo_fs(p):
        raise InvalidInput(f"{where} is under /proc or /sys (not a file skycache reads)")


def read_bytes(path: str | os.PathLike[str], *, what: str, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The content of a regular file of at most ``max_bytes``; InvalidInput naming ``path`` otherwise.

    ``what`` names the file in the message ("scenario file", "calibration file"): the line reads
    ``PATH: WHAT is a directory``.
    """
    p = Path(path)
    where = f"{shown(p)}: {what}"
    _refuse_path(p, where)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"{where} {_os_problem(exc)}") from None
    try:
        info = os.fstat(fd)
        kind = _kind(info.st_mode)
        if kind is not None:
            raise InvalidInput(f"{where} is {kind}, not a regular file")
        if info.st_size > max_bytes:
            raise InvalidInput(f"{where} is too large ({info.st_size} bytes; at most {max_bytes})")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise InvalidInput(f"{where} is too large (more than {max_bytes} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise InvalidInput(f"{where} {_os_problem(exc)}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], *, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file without NUL bytes (see :func:`read_bytes` for what else is refused)."""
    data = read_bytes(path, what=what, max_bytes=max_bytes)
    where = f"{shown(path)}: {what}"
    nul = data.find(b"\0")
    if nul >= 0:
        raise InvalidInput(f"{where} holds a NUL byte at offset {nul}: not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def parse_toml(text: str, *, where: str) -> dict[str, Any]:
    """TOML text as a dict; a syntax error or absurd nesting is one line starting with ``where``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{where} is not valid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: thousands of "[" exhaust the stack
        raise InvalidInput(f"{where} is not valid TOML: arrays or tables nested too deeply") from None


def load_toml(path: str | os.PathLike[str], *, what: str, max_bytes: int = MAX_TEXT_BYTES) -> dict[str, Any]:
    """A TOML file read with :func:`read_text` and parsed with :func:`parse_toml`."""
    return parse_toml(read_text(path, what=what, max_bytes=max_bytes), where=f"{shown(path)}: {what}")


def check_input_file(path: str | os.PathLike[str], *, what: str) -> Path:
    """``path`` as a regular file another library will open (pandas' parquet reader): the same
    refusals as :func:`read_bytes`, without reading it."""
    p = Path(path)
    where = f"{shown(p)}: {what}"
    _refuse_path(p, where)
    try:
        info = p.stat()
    except OSError as exc:
        raise InvalidInput(f"{where} {_os_problem(exc)}") from None
    kind = _kind(info.st_mode)
    if kind is not None:
        raise InvalidInput(f"{where} is {kind}, not a regular file")
    return p


def check_output_dir(path: str | os.PathLike[str], *, what: str) -> Path:
    """Refuse an output directory that cannot be written, before any work starts.

    ``path`` may not exist yet: then its nearest existing ancestor must be a writable directory (the
    run creates the rest). Refused with one line: a path that is (or is under) a file, under /proc or
    /sys, or in a directory this user cannot write. Nothing is created here.
    """
    p = Path(path)
    where = f"{what} {shown(p)}"
    if "\0" in os.fspath(p):
        raise InvalidInput(f"{where}: the path contains a NUL byte")
    if _under_pseudo_fs(p.absolute()):
        raise InvalidInput(f"{where}: is under /proc or /sys, not a place for results")
    probe = p.absolute()
    while True:
        try:
            info = probe.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            # NotADirectoryError: a part above is a file; walking up finds it and names it
            if probe.parent == probe:
                raise InvalidInput(f"{where}: no part of the path exists") from None
            probe = probe.parent
        except OSError as exc:
            raise InvalidInput(f"{where}: {_os_problem(exc)}") from None
    at = "" if probe == p.absolute() else f" {shown(probe)}"
    if not stat.S_ISDIR(info.st_mode):
        if not at:
            raise InvalidInput(f"{where}: is {_kind(info.st_mode) or 'a file'}, not a directory")
        raise InvalidInput(f"{where}:{at} is {_kind(info.st_mode) or 'a file'}, not a directory")
    # No write bit at all is refused even for root (who may write anyway): the owner made it read-only.
    if not os.access(probe, os.W_OK | os.X_OK) or not info.st_mode & 0o222:
        mode = stat.S_IMODE(info.st_mode)
        raise InvalidInput(f"{where}: directory{at} is read-only (mode {mode:04o}) for this user")
    return p
