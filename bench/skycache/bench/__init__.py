"""skycache.bench: scenario suites, fio runs over real stacks, tidy results, statistics and plots.

``skycache.bench.load(path_or_paths)`` returns the tidy table of one or more run directories as one
pandas DataFrame (any run directory with a tidy.parquet: fio runs and nat-bench runs alike).
"""

from __future__ import annotations

from skycache.bench.tidy import load

__all__ = ["load"]
