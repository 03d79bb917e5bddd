"""The lab: a disposable VM with a real Debian kernel (virtme-ng), where the storage stack runs.

``kernel`` fetches and unpacks the kernel, ``accel`` decides between KVM and TCG, ``vm`` builds the
virtme-ng command line and boots it, and ``guest`` prepares the guest before running the user's
command there.
"""
