"""xdh: an end-to-end durability harness for Xen virtual block stacks.

Data flows one way: config -> stack -> workload -> cut -> verify -> report.
"""

__version__ = "0.1.0"
