"""Private directories for unix sockets (QMP), named by the owning process: a run that was
SIGKILLed cannot remove its own, so the next launch removes those whose process is gone."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

NAME = re.compile(r"^xdh-(?:qmp|up)-(\d+)-")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state first, start time at index 19 ([] if gone)."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[-1].split()
    except (OSError, ValueError):
        return []


def start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def running(pid: int, started: str = "") -> bool:
    """The process runs, and is the one that started then (a zombie, ended but not yet reaped by
    its parent, does not run; a recycled pid is another process)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z" and (not started or fields[19] == started)


def sweep(root: Path | None = None) -> list[Path]:
    """Remove socket directories left by processes that no longer run; returns them."""
    base = root or Path(tempfile.gettempdir())
    removed = []
    for d in base.glob("xdh-*-*-*"):
        m = NAME.match(d.name)
        if m and d.is_dir() and not running(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def socket_dir(kind: str) -> Path:
    """A new private directory ``xdh-KIND-PID-*`` in the temporary directory (unix socket paths
    must stay under 108 bytes), after sweeping stale ones."""
    sweep()
    return Path(tempfile.mkdtemp(prefix=f"xdh-{kind}-{os.getpid()}-"))
