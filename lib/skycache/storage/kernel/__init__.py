"""Kernel subsystems and their tools: lvm, dm (device-mapper), loopdev, lio (the LIO iSCSI target),
iscsi (the open-iscsi initiator), blockqueue (a block device's write-cache flag)."""
