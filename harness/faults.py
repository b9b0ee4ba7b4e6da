"""Faults: a declarative registry. Each is a positive control (a lost flush the oracle
must catch) or a real finding to expose. See shared notes research-xen-flush.md."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .workloads import MOUNT

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
    domu_script: str | None = None      # run in the domU after setup, before the workload
    needs_fs: bool = False
    outer_blkdebug: str | None = None   # blkdebug config for the disk under test in the outer QEMU
    evidence: str = ""                  # kernel log pattern that shows the fault acting
    outer_no_flush: bool = False        # the outer disk acknowledges flushes without doing them
    device_model: str = ""              # qdisk modes: run dom0's device model through this wrapper


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("none", "no fault: a correct stack, where the oracle must report nothing"),
    Fault("drop-flush", "domU block layer drops PREFLUSH/FUA and completes empty flushes itself "
          "(write_cache = write through), as the 2010 blkfront bug did",
          domu_script='echo "write through" > /sys/block/xvdb/queue/write_cache; cat /sys/block/xvdb/queue/write_cache'),
    Fault("nobarrier", "ext4 remounted with barrier=0: jbd2 and fsync send no flush",
          domu_script=f"mount -o remount,barrier=0 {MOUNT}; grep ' {MOUNT} ' /proc/mounts", needs_fs=True),
    Fault("flush-eio", "the outer disk fails the first flush with EIO (QEMU blkdebug); Linux 6.1 blkfront "
          "turns a failed empty flush into success and turns flushing off",
          outer_blkdebug=BLKDEBUG_FLUSH_EIO, evidence="empty flush op failed"),
    Fault("disk-lies", "the outer disk acknowledges flushes and does nothing (QEMU cache.no-flush=on on the disk "
          "under test); visible only with --disk-cache volatile", outer_no_flush=True),
    Fault("backend-lies", "qdisk's fdatasync does nothing: dom0's device model runs under eatmydata "
          "(device_model_override); qdisk modes only", device_model="/usr/local/sbin/xdh-qemu-eatmydata"),
)}


def get(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise ConfigError(f"unknown fault {name!r}", hint="choose one of: " + ", ".join(FAULTS)) from None
