"""What the host must have before anything starts: the outer QEMU and qemu-img. A missing
binary is one line naming the package, not a traceback halfway through a boot."""

from __future__ import annotations

import shutil

from ..errors import ConfigError
from .disks import QEMU_BINARY

TOOLS = {QEMU_BINARY: "qemu-system-x86", "qemu-img": "qemu-utils"}


def require_tools() -> None:
    missing = [(tool, pkg) for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        names = ", ".join(t for t, _ in missing)
        pkgs = " ".join(sorted({p for _, p in missing}))
        raise ConfigError(f"{names} not found on PATH",
                          hint=f"apt-get install {pkgs} (or run scripts/setup.sh as root)")
