"""skycache.bench: scenario suites, fio runs over real stacks, tidy results, statistics and plots.

``skycache.bench.load(path_or_paths)`` returns the tidy table of one or more run directories as one
pandas DataFrame (any run directory with a tidy.parquet: fio runs and nat-bench runs alike).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skycache.bench.tidy import load

__all__ = ["load"]


def __getattr__(name: str) -> Any:
    # pandas costs seconds to import (a minute inside the TCG lab); every `skycache` invocation
    # loads this package to register the bench verbs, so load() is imported on first use only.
    if name == "load":
        from skycache.bench.tidy import load

        return load
    raise AttributeError(f"module 'skycache.bench' has no attribute {name!r}")
