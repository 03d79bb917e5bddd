"""The storage path of VM disks, in three layers (each imports only the layers below it):

- :mod:`skycache.storage.kernel`: one wrapper per kernel subsystem and its tools (LVM, device-mapper,
  loop devices, the LIO target, the open-iscsi initiator, block queue flags): pure builders and
  parsers beside thin functions that run commands through the runner.
- :mod:`skycache.storage.caches`: dm-cache and dm-writecache tables, their status lines and flushes.
- The domain operations: repositories (:mod:`.repository`), images (:mod:`.image`), node cache
  volume groups (:mod:`.node`), VM disks (:mod:`.vmdisk`), and what skycache owns on a host
  (:mod:`.inventory`, :mod:`.teardown`).
"""
