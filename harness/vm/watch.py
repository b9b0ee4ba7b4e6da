"""A watch on the outer QEMU's I/O errors, from a second QMP monitor of its own.

A full host file system does not kill QEMU: with the default ``werror=enospc`` it pauses the
machine and says so only on QMP (a ``BLOCK_IO_ERROR`` event, run state ``io-error``), and
every SSH command into the paused guests then waits for its timeout. This thread listens on
its own monitor (events reach every monitor; the owner's QMP connection is left alone), and on
an I/O error calls back at once with a one-line reason naming the file, its file system and
the space left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from ..errors import DiskFull
from .argv import Drive, quote_optarg

FULL_HINT = "free space there, or pass --run-dir on a larger file system"

LOG = logging.getLogger(__name__)


def monitor_args(path: Path) -> list[str]:
    """A QMP monitor on a listening socket, for the watch (not part of the saved state)."""
    return ["-chardev", f"socket,id=xdhwatch,path={quote_optarg(str(path))},server=on,wait=off",
            "-mon", "chardev=xdhwatch,mode=control"]


def mount_point(path: Path) -> Path:
    p = path.resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def free_text(path: Path) -> str:
    """``12.3 MiB free`` on the file system holding ``path`` (what the errors say)."""
    try:
        return f"{free_mib(path):.1f} MiB free"
    except OSError:
        return "free space unknown"


def free_mib(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2**20


def describe(event: dict[str, Any], drives: list[Drive]) -> str:
    """``BLOCK_IO_ERROR`` in words: which disk file, which file system, how much is free there."""
    data = event.get("data", {})
    node = str(data.get("node-name") or data.get("device") or "?")
    drive = next((d for d in drives if node == d.node or node.startswith(d.node + "-")), None)
    reason = data.get("reason") or "I/O error"
    if drive is None:
        return f"QEMU stopped on an I/O error on node {node}: {reason}"
    where = drive.path.parent
    free = free_text(where)
    what = "disk full" if data.get("nospace") else "I/O error"
    return (f"{what}: QEMU paused on {reason!r} writing {drive.path} (disk {drive.node}); the file system at "
            f"{mount_point(where)} has {free}")


def enospc(exc: BaseException | None, where: Path) -> DiskFull | None:
    """A DiskFull if ``exc`` (or what it was raised from) is the harness's own write failing with
    ENOSPC: the run directory's file system filled up before QEMU noticed."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            target = exc.filename or where
            return DiskFull(f"disk full: writing {target}: No space left on device; the file system at "
                            f"{mount_point(Path(where))} has {free_text(where)}", hint=FULL_HINT)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class IoWatch(threading.Thread):
    """Connects to the watch monitor and calls ``on_error(event)`` once, on the first
    ``BLOCK_IO_ERROR``; ends with ``stop()`` or when QEMU goes away."""

    def __init__(self, socket_path: Path, on_error: Callable[[dict[str, Any]], None], name: str = "io-watch"):
        super().__init__(name=name, daemon=True)
        self.socket_path = socket_path
        self.on_error = on_error
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        qmp: QEMUMonitorProtocol | None = None
        try:
            qmp = self._connect()
            while qmp is not None and not self._stop_event.is_set():
                try:
                    event = qmp.pull_event(wait=0.5)
                except TimeoutError:     # qemu.qmp's legacy shim raises when no event came in time
                    continue
                # only an error that stopped the machine (werror=enospc: a full disk); a reported
                # one (flush-eio's injected EIO) is the guest's to see, and the point of that fault
                if event and event.get("event") == "BLOCK_IO_ERROR" and \
                        (event.get("data", {}).get("action") == "stop" or event.get("data", {}).get("nospace")):
                    self.on_error(event)
                    return
        except Exception as exc:  # noqa: BLE001 - QEMU went away: nothing more to watch
            LOG.debug("io watch ended: %s", exc)
        finally:
            if qmp is not None:
                with contextlib.suppress(Exception):
                    qmp.close()
            loop.close()

    def _connect(self) -> QEMUMonitorProtocol | None:
        deadline = time.monotonic() + 30
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            qmp = QEMUMonitorProtocol(str(self.socket_path))
            try:
                qmp.connect(negotiate=True)
                return qmp
            except Exception:  # noqa: BLE001 - not listening yet
                with contextlib.suppress(Exception):
                    qmp.close()
                time.sleep(0.1)
        return None
