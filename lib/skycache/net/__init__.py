"""Network parts of skycache: namespaces, shaping of the iSCSI path, NAT and VM isolation rules.

Every object made here carries skycache's mark: network namespaces are named ``skycache-*``, tc
qdiscs use the handle :data:`skycache.net.shaping.ROOT_HANDLE`, iptables chains are named
``SKYCACHE-*`` and the rules that jump to them carry a ``skycache:`` comment. Addresses come from the
benchmarking range 198.18.0.0/15 (RFC 2544) or are 127.0.0.1, so no experiment reaches anything else.
"""
