"""Node-local caches on device-mapper: dmcache (dm-cache tables), writecache (dm-writecache tables),
cachestatus (their status lines, dirty counts and flushes)."""
