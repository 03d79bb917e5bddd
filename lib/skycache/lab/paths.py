"""Where the lab keeps what it fetches and remembers (per user, outside the project tree)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SKYCACHE_CACHE_DIR``, else ``$XDG_CACHE_HOME/skycache``, else ``~/.cache/skycache``."""
    explicit = os.environ.get("SKYCACHE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "skycache"


def lab_dir() -> Path:
    return cache_dir() / "lab"
