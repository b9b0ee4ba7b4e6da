"""Live kernel logs: ``dmesg --follow`` from dom0 and the domU, streamed into the run
directory line by line, because everything in guest RAM is gone after the cut."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

from .ssh import Shell

LOG = logging.getLogger(__name__)

# lines about the disk under test (xvdb in the domU, vdc in dom0) or about failing I/O and flushes
EVIDENCE = re.compile(r"xvdb|\bvdc\b|I/O error|Buffer I/O|(?:flush|barrier) op failed|barrier or flush|flush diskcache|"
                      r"blk_update_request|critical medium|JBD2: .*error|EXT4-fs error|EXT4-fs \(sd[a-z]+\)|"
                      r"xen_block|qdisk", re.IGNORECASE)


class KernelLogTap:
    """A thread copying ``dmesg --follow`` of one guest into a file (host time prefixed)."""

    def __init__(self, shell: Shell, path: Path):
        self.path = path
        self._stream = shell.stream(["dmesg", "--follow", "--ctime"])
        self._thread = threading.Thread(target=self._pump, name=f"kmsg-{path.name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            with open(self.path, "a", buffering=1) as f:
                try:
                    for t, line in self._stream.lines():
                        f.write(f"{time.strftime('%H:%M:%S', time.localtime(t))}.{int(t % 1 * 1000):03d} {line}\n")
                except Exception as exc:  # noqa: BLE001 - the connection dies at the cut: expected
                    f.write(f"# stream ended: {exc}\n")
        except OSError as exc:   # a full disk: the crash run reports it; this log keeps what fitted
            LOG.debug("kernel log %s: %s", self.path, exc)

    def stop(self, timeout: float = 5.0) -> None:
        self._stream.close()
        self._thread.join(timeout)


def evidence(paths: list[Path], limit: int = 40) -> list[str]:
    """Kernel lines about the block path from the given logs (name-prefixed)."""
    out = []
    for p in paths:
        if not p.exists():
            continue
        for line in p.read_text(errors="replace").splitlines():
            if EVIDENCE.search(line) and not line.startswith("#"):
                out.append(f"{p.stem}: {line}")
    return out[-limit:]
