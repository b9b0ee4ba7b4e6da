"""Helpers shared by the tests (not part of xdh)."""

from __future__ import annotations

import os
from pathlib import Path


def pids_matching(fragment: str) -> list[int]:
    """PIDs of processes whose command line contains ``fragment`` (leak checks)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmd:
            out.append(int(d.name))
    return out
