"""Snapshot fast reset: boot the nested stack once, to "domU up, workload not started", save
the outer machine's whole state, and start every later iteration from it in seconds.

How, and why it is sound:
  - The state is saved with QMP ``migrate`` to a file (``QemuMachine.save_state``). When the
    migration completes, QEMU has drained and flushed every disk, and the VM is paused: the
    disk files and the state file describe one instant. The disks are then frozen
    (read-only files): each restore runs on fresh qcow2 overlays over them, so no iteration
    sees another's writes, and the disk under test starts from the same bytes every time.
  - A restore is the same command line plus ``-incoming fd:N``; only host-side things
    differ (overlay paths, the loopback SSH port, an optional blkdebug filter on the disk
    under test), none of which is part of the guest-visible machine.
  - What a restore breaks, and what is done about it (``XenStack._resume``): SSH sessions
    do not survive (they are closed before the save, and re-opened after); the guests'
    wall clocks are set to the host's time; every iteration mixes bytes derived from its
    seed into dom0's and the domU's entropy pools, so guests do not share a random future
    while the run stays reproducible from the seed.
  - Guest page caches hold nothing of the disk under test at save time (dropped first), so
    an iteration starts like a fresh boot: every write it acknowledges happens after the
    restore and goes through the same stack as on a full boot.
A snapshot is keyed by everything that shapes the machine: image digests, stack config,
kernel and hypervisor command lines, accelerator and QEMU version. Any change makes a new one.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import StackConfig
from ..images import ImagePair, ImageStore
from ..jsonio import utc_stamp
from ..progress import Progress
from .boot import ColdBoot
from .saved import FROZEN_DISKS, STATE_FILE, Snapshot, cached_or_built, snapshot_key
from .xen import make_stack


def ensure_snapshot(stack_config: StackConfig, images: ImagePair, store: ImageStore, progress: Progress,
                    machine: dict[str, Any]) -> Snapshot:
    """The snapshot for this configuration: reused if present, else booted and saved once
    (about as long as one full boot)."""
    key = snapshot_key(asdict(stack_config), images, machine)

    def build(work: Path, final: Path) -> Snapshot:
        progress(f"snapshot {key}: booting the stack once to save it (later iterations restore it)")
        t0 = time.monotonic()
        with make_stack(stack_config, work, store, work / "dut.img", ColdBoot(), progress, images) as stack:
            save_s, info = stack.save(work / STATE_FILE)
        snap = Snapshot(dir=final, key=key, created=utc_stamp(),
                        seconds_to_build=round(time.monotonic() - t0, 1), seconds_to_save=round(save_s, 1),
                        state_bytes=(work / STATE_FILE).stat().st_size, stack_info=info)
        for name in (*FROZEN_DISKS, STATE_FILE):
            (work / name).chmod(0o444)
        progress(f"snapshot {key}: saved in {snap.seconds_to_build:.0f} s "
                 f"(state {snap.state_bytes / 2**20:.0f} MiB, written in {snap.seconds_to_save:.1f} s)")
        return snap
    return cached_or_built(store, key, build)
