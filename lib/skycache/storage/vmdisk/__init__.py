"""VM disks on a worker node and their lifecycle, split by job:

- :mod:`.layers`: the node-side stack as data (dm names and tables, bottom to top);
- :mod:`.records`: names, tags and the node's note about each VM disk;
- :mod:`.query`: what the records say (``disk list``, which disk uses what);
- planners: :mod:`.clone` (``disk clone``), :mod:`.delete` (``disk delete [--sync]``, ``disk purge``),
  :mod:`.save` (``disk save``), :mod:`.volumes` (``disk ln``, ``mkimage``, ``mkswap``),
  :mod:`.move` (``disk mv``).

Safety: a write-back cache is flushed (``delete --sync``) or deliberately discarded together with the
COW store (``delete`` without ``--sync``); teardown refuses or flushes dirty caches.
"""
