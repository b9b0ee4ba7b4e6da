"""The stack under test: outer QEMU -> Xen -> dom0 -> domU, booted or restored from a snapshot."""
