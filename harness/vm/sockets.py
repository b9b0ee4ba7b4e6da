"""Private directories for unix sockets (QMP), named by the owning process: a run that was
SIGKILLed cannot remove its own, so the next launch removes those whose process is gone."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

NAME = re.compile(r"^xdh-(?:qmp|up)-(\d+)-")


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def sweep(root: Path | None = None) -> list[Path]:
    """Remove socket directories left by processes that no longer run; returns them."""
    base = root or Path(tempfile.gettempdir())
    removed = []
    for d in base.glob("xdh-*-*-*"):
        m = NAME.match(d.name)
        if m and d.is_dir() and not _running(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def socket_dir(kind: str) -> Path:
    """A new private directory ``xdh-KIND-PID-*`` in the temporary directory (unix socket paths
    must stay under 108 bytes), after sweeping stale ones."""
    sweep()
    return Path(tempfile.mkdtemp(prefix=f"xdh-{kind}-{os.getpid()}-"))
