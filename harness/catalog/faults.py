"""Faults: a declarative registry. Each is a positive control (a lost flush the oracle must
catch) or a real finding to expose.

A fault says in one place what it changes, layer by layer: the outer disk's block graph
(``outer_drive``), dom0's device model (``device_model``), and the domU (``domu_script``, run
after the filesystem is made and before the workload). ``check`` says which backends and
workloads it can be combined with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..vm.argv import Drive
from . import Registry
from .backends import Backend
from .workloads import MOUNT, Workload

BLKDEBUG_FLUSH_EIO = """# xdh flush-eio: the first flush that reaches the outer disk fails with EIO
[inject-error]
event = "flush_to_disk"
errno = "5"
once = "on"
iotype = "flush"
"""


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    # the outer machine: the disk under test's block graph
    outer_blkdebug: str | None = None   # blkdebug rules under the format node
    outer_no_flush: bool = False        # the outer disk acknowledges flushes without doing them
    # dom0
    device_model: str = ""              # qdisk modes: run dom0's device model through this wrapper
    # the domU
    domu_script: str | None = None      # run after setup, before the workload
    needs_fs: bool = False              # domu_script acts on the workload's filesystem

    def outer_drive(self, drive: Drive, rules_dir: Path) -> Drive:
        """The disk under test's outer drive with this fault's filters (rules files go to ``rules_dir``)."""
        changes: dict[str, object] = {}
        if self.outer_blkdebug:
            rules_dir.mkdir(parents=True, exist_ok=True)
            rules = rules_dir / "blkdebug.conf"
            rules.write_text(self.outer_blkdebug)
            changes["blkdebug"] = rules
        if self.outer_no_flush:
            changes["no_flush"] = True
        return dataclasses.replace(drive, **changes) if changes else drive  # type: ignore[arg-type]

    def check(self, backend: Backend, workload: Workload) -> None:
        """Raise ConfigError if this fault cannot act on ``backend`` with ``workload``."""
        if self.needs_fs and not workload.needs_fs:
            raise ConfigError(f"fault {self.name} needs a filesystem workload, and {workload.name} writes the raw "
                              "disk", hint="use --workload append, replace or sqlite")
        if self.outer_blkdebug and backend.on_filesystem:
            raise ConfigError(f"fault {self.name} fails dom0's own filesystem flushes in mode {backend.name}",
                              hint="use --backend qdisk, qdisk-direct or phy")
        if self.device_model and backend.backendtype != "qdisk":
            raise ConfigError(f"fault {self.name} needs a qdisk backend (it replaces dom0's device model)",
                              hint="use --backend qdisk or qdisk-qcow2")


FAULTS: Registry[Fault] = Registry("fault", (
    Fault("none", "no fault: a correct stack, where the oracle must report nothing"),
    Fault("drop-flush", "domU block layer drops PREFLUSH/FUA and completes empty flushes itself "
          "(write_cache = write through), as the 2010 blkfront bug did",
          domu_script='echo "write through" > /sys/block/xvdb/queue/write_cache; '
                      'cat /sys/block/xvdb/queue/write_cache'),
    Fault("nobarrier", "ext4 remounted with barrier=0: jbd2 and fsync send no flush",
          domu_script=f"mount -o remount,barrier=0 {MOUNT}; grep ' {MOUNT} ' /proc/mounts", needs_fs=True),
    Fault("flush-eio", "the outer disk fails the first flush with EIO (QEMU blkdebug); Linux 6.1 blkfront "
          "turns a failed empty flush into success and turns flushing off",
          outer_blkdebug=BLKDEBUG_FLUSH_EIO),
    Fault("disk-lies", "the outer disk acknowledges flushes and does nothing (QEMU cache.no-flush=on on the disk "
          "under test); visible only with --disk-cache volatile", outer_no_flush=True),
    Fault("backend-lies", "qdisk's fdatasync does nothing: dom0's device model runs under eatmydata "
          "(device_model_override); qdisk modes only", device_model="/usr/local/sbin/xdh-qemu-eatmydata"),
))


def get(name: str) -> Fault:
    return FAULTS.get(name)
