"""A manifest workload's program, copied into a guest over SFTP before it runs there: the domU of
a crash run, the fast verifier, a reboot verification. Images stay as they are."""

from __future__ import annotations

from pathlib import Path

from ..catalog.workloads import GUEST_BIN, Workload
from ..vm.ssh import Shell


def install_program(shell: Shell, workload: Workload) -> None:
    """Copy the program to ``GUEST_BIN`` (built-in workloads are in the image already)."""
    if workload.source:
        shell.put_bytes(Path(workload.source).read_bytes(), f"{GUEST_BIN}/{workload.program}", 0o755)
