"""Where a stack's machine state comes from: a cold boot, or a restore of a saved snapshot.

Composition, not a flag: ``XenStack`` asks its boot source for the root disks, the disk under
test, the state to load and how to bring the guests up, and does the rest the same way.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..images import ImagePair
from ..vm.disks import make_dut, make_overlay
from ..vm.ssh import Shell
from .saved import DOM0_ROOT, DOMU_ROOT, ROOT_OVERLAYS, Snapshot, check_restorable


class Bringable(Protocol):
    """What a boot source drives once the machine runs (``XenStack``)."""

    def boot_guests(self) -> None: ...

    def resume(self, snap: Snapshot, refresh: Callable[[Shell, str], None]) -> None: ...


class BootSource(Protocol):
    @property
    def dut_name(self) -> str: ...

    def prepare_disks(self, run_dir: Path, images: ImagePair) -> None: ...

    def prepare_dut(self, path: Path, size_mib: int) -> None: ...

    def state_fd(self) -> int | None: ...

    @property
    def frozen_dut(self) -> Path | None: ...

    def bring_up(self, stack: Bringable) -> None: ...


@dataclass(frozen=True)
class ColdBoot:
    """A full boot: Xen, dom0, ``xl create``, the domU; about 85 s under TCG."""

    dut_name: str = "dut.img"

    def prepare_disks(self, run_dir: Path, images: ImagePair) -> None:
        make_overlay(images.dom0.rootfs, run_dir / DOM0_ROOT)
        make_overlay(images.domu.rootfs, run_dir / DOMU_ROOT)

    def prepare_dut(self, path: Path, size_mib: int) -> None:
        if not path.exists():
            make_dut(path, size_mib)

    def state_fd(self) -> int | None:
        return None

    @property
    def frozen_dut(self) -> Path | None:
        """The disk under test a crash run starts from: none, a blank one."""
        return None

    def bring_up(self, stack: Bringable) -> None:
        stack.boot_guests()


@dataclass(frozen=True)
class Restore:
    """A restore of a saved stack (see snapshot.py): the same argv plus ``-incoming``, on fresh
    overlays over the frozen disks; seconds instead of a boot. ``guest_seed`` feeds the guests'
    entropy pools, so restored guests do not share a random future."""

    snapshot: Snapshot
    guest_seed: int = 0
    dut_name: str = "dut.qcow2"

    def prepare_disks(self, run_dir: Path, images: ImagePair) -> None:
        check_restorable(self.snapshot)
        for name in ROOT_OVERLAYS:
            make_overlay(self.snapshot.disk(name), run_dir / name)

    def prepare_dut(self, path: Path, size_mib: int) -> None:
        if not path.exists():
            make_overlay(self.snapshot.disk("dut.img"), path, "raw")

    def state_fd(self) -> int | None:
        return os.open(self.snapshot.state, os.O_RDONLY)

    @property
    def frozen_dut(self) -> Path | None:
        """The disk under test a crash run starts from: the snapshot's frozen one."""
        return self.snapshot.disk("dut.img")

    def bring_up(self, stack: Bringable) -> None:
        """Wait for the state to load, re-open SSH, give each guest the host's time and fresh
        entropy derived from the seed."""
        stack.resume(self.snapshot, self.refresh)

    def refresh(self, shell: Shell, name: str) -> None:
        entropy = hashlib.sha256(f"xdh-entropy:{self.guest_seed}:{name}".encode()).hexdigest()
        shell.run(["sh", "-c", f"date -u -s @{time.time():.3f} >/dev/null && echo {entropy} > /dev/urandom"])
