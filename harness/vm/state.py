"""Saved machine states: QMP ``migrate`` to a file (the snapshot reset, the saved verifier), and
waiting for a restore (``-incoming``) to run."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import InfraError, LaunchError
from .machine import QemuMachine


def save_state(machine: QemuMachine, path: Path, timeout: float = 900.0) -> float:
    """Pause the machine and write its whole state (RAM, devices) to ``path``: QMP ``migrate``
    to a file descriptor passed over the QMP socket (no shell, unlike ``exec:``). On success
    QEMU has flushed and released every disk, so the disk files match the state from now on.
    Returns the seconds taken; the machine stays paused."""
    t0 = time.monotonic()
    machine.qmp("stop")
    with open(path, "wb") as f:
        machine.send_fd(f.fileno())
        machine.qmp("getfd", fdname="xdh-state")
        machine.qmp("migrate", uri="fd:xdh-state")
        _wait_migrated(machine, t0, timeout)
    return time.monotonic() - t0


def wait_running(machine: QemuMachine, timeout: float = 300.0) -> float:
    """After an ``-incoming`` launch: wait until the state is loaded and the vCPUs run."""
    t0 = time.monotonic()
    while True:
        status = machine.qmp("query-status").get("status")
        if status == "running":
            return time.monotonic() - t0
        if status == "paused" or status == "postmigrate":
            machine.qmp("cont")
        elif status not in ("inmigrate", "prelaunch", "restore-vm"):
            raise LaunchError(f"restoring the machine state failed: status {status!r}",
                              log_tail=machine.failure_text())
        if time.monotonic() - t0 > timeout:
            raise LaunchError(f"the saved state did not load in {timeout:.0f} s", log_tail=machine.failure_text())
        machine.check_alive()
        time.sleep(0.1)


def _wait_migrated(machine: QemuMachine, t0: float, timeout: float) -> None:
    """Poll QMP ``query-migrate`` until the state ``save_state`` started at ``t0`` is written."""
    while True:
        info = machine.qmp("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise InfraError(f"saving the machine state failed: {info.get('error-desc', status)}",
                             log_tail=machine.failure_text())
        if time.monotonic() - t0 > timeout:
            raise InfraError(f"saving the machine state took more than {timeout:.0f} s")
        machine.check_alive()
        time.sleep(0.2)
