"""How a machine runs: the outer QEMU (argv, accelerator, process, QMP), its disks, SSH into
its guests and their kernel logs. Knows nothing of Xen, workloads or campaigns."""
