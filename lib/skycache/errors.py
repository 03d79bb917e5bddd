"""The error hierarchy every skycache module raises.

The CLI turns any :class:`SkycacheError` into one line on stderr and its exit status; anything else
is a bug: one line too, exit 70, with the traceback written to a file (``skycache.cli.common.run_app``,
docs/errors.md).
"""

from __future__ import annotations


class SkycacheError(Exception):
    """A failure the user can act on; ``str(err)`` is the whole one-line message."""

    exit_code: int = 1


class InvalidInput(SkycacheError):
    """A name, size, path or file given by the user is not acceptable."""

    exit_code = 2


class NotOwned(SkycacheError):
    """The object exists but does not carry skycache's mark, so skycache refuses to touch it."""


class NotFound(SkycacheError):
    """A named object (repository, image, device, session) does not exist."""


class Busy(SkycacheError):
    """The object is in use (clones, exports, sessions, dirty cache) and the operation would lose data."""
