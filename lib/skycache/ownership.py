"""skycache's mark: how it recognises the objects it created, and the names it accepts.

Every object skycache creates carries the mark (docs/architecture.md, "Safety"): the LVM tag
``skycache`` on VGs and LVs, the name prefix ``skycache-`` on dm devices, files, network namespaces
and chains, and IQNs under one configurable prefix. Listing, changing and deleting go through
:func:`require_owned_*`, which refuse anything unmarked, even when the user names it explicitly.
"""

from __future__ import annotations

import os
import re

from skycache.errors import InvalidInput, NotOwned

LVM_TAG = "skycache"
NAME_PREFIX = "skycache-"
DEFAULT_IQN_PREFIX = "iqn.2026-11.org.skycache"

# Names users give (repositories, images, VM ids): LVM and dm accept more, but this set is safe
# everywhere a name ends up (LV names, dm names, IQN parts, file names, iptables chain names).
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


def iqn_prefix() -> str:
    """The IQN prefix of owned targets and initiators (``$SKYCACHE_IQN_PREFIX`` overrides it)."""
    prefix = os.environ.get("SKYCACHE_IQN_PREFIX", DEFAULT_IQN_PREFIX)
    if not re.fullmatch(r"iqn\.\d{4}-\d{2}\.[a-z0-9.-]+", prefix):
        raise InvalidInput(f"SKYCACHE_IQN_PREFIX {prefix!r} is not an IQN prefix (iqn.YYYY-MM.domain)")
    return prefix


def check_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is in the safe set, else raise a one-line error naming it."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"{what} {name!r} is invalid: use 1-40 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def marked(name: str) -> str:
    """The system-level name of an owned object: ``skycache-<name>``."""
    return name if name.startswith(NAME_PREFIX) else NAME_PREFIX + name


def is_marked_name(name: str) -> bool:
    return name.startswith(NAME_PREFIX)


def require_marked_name(name: str, *, what: str) -> None:
    if not is_marked_name(name):
        raise NotOwned(f"{what} {name!r} was not created by skycache (no {NAME_PREFIX!r} prefix)")


def require_tagged(name: str, tags: list[str] | tuple[str, ...], *, what: str) -> None:
    if LVM_TAG not in tags:
        raise NotOwned(f"{what} {name!r} was not created by skycache (no LVM tag {LVM_TAG!r})")


def is_owned_iqn(iqn: str) -> bool:
    return iqn.startswith(iqn_prefix() + ":")
