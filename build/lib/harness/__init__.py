"""xdh: an end-to-end durability harness for Xen virtual block stacks.

The package reads as the pipeline: config -> stack -> workload -> cut -> crash states -> verify
-> report (``config``, ``stack/``, ``crash/``, ``verify/``, ``report/``), on the substrates
``vm/`` (the outer QEMU), ``images`` and ``catalog/`` (what can be combined), driven by
``campaign/`` and ``cli/``. No stage imports a later one (an import-linter contract, tested).
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
