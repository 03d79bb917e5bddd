"""skycache.bench: scenario suites, fio runs over real stacks, tidy results, statistics and plots."""
