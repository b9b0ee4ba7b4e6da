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

import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import LaunchError
from .images import BuiltImage, ImageStore

LOG = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "1"
STATE_FILE = "state.bin"
FROZEN_DISKS = ("dom0-root.qcow2", "domu-root.qcow2", "dut.img")


@functools.lru_cache(maxsize=None)
def qemu_version(binary: str = "qemu-system-x86_64") -> str:
    """Asked once per process: every boot records it and every snapshot key includes it."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


def snapshot_key(stack_config: dict, images: tuple[BuiltImage, BuiltImage], machine: dict) -> str:
    """Digest of everything the saved machine depends on (boot timeout excluded)."""
    cfg = {k: v for k, v in stack_config.items() if k != "boot_timeout"}
    blob = json.dumps({"format": SNAPSHOT_FORMAT, "stack": cfg, "dom0": images[0].digest,
                       "domu": images[1].digest, "machine": machine}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Snapshot:
    """A saved stack on disk: frozen disks, the machine state, and what the stack looked like."""

    dir: Path
    key: str
    created: str = ""
    seconds_to_build: float = 0.0
    seconds_to_save: float = 0.0
    state_bytes: int = 0
    stack_info: dict = field(default_factory=dict)    # StackInfo of the boot that was saved

    @property
    def state(self) -> Path:
        return self.dir / STATE_FILE

    def disk(self, name: str) -> Path:
        return self.dir / name

    @classmethod
    def load(cls, d: Path) -> "Snapshot":
        meta = json.loads((d / "snapshot.json").read_text())
        meta["dir"] = d
        return cls(**meta)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("dir")
        return d


def snapshots_root(store: ImageStore) -> Path:
    return store.root / "snapshots"


def ensure_snapshot(stack_config, images: tuple[BuiltImage, BuiltImage], store: ImageStore, progress,
                    machine: dict) -> Snapshot:
    """The snapshot for this configuration: reused if present, else booted and saved once
    (about as long as one full boot). A lock keeps concurrent campaigns from building it twice."""
    from .stack import XenStack   # stack uses this module for restores

    key = snapshot_key(asdict(stack_config), images, machine)
    root = snapshots_root(store)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "snapshot.json").exists():
            return Snapshot.load(final)
        work = root / f".build-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        progress(f"snapshot {key}: booting the stack once to save it (later iterations restore it)")
        t0 = time.monotonic()
        stack = XenStack(stack_config, work, store, dut=work / "dut.img", progress=progress, images=images)
        try:
            stack.start()
            assert stack.dom0 is not None and stack.domu is not None and stack.machine is not None
            # nothing of the disk under test in any page cache, and less state to save
            for sh in (stack.domu, stack.dom0):
                sh.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], timeout=120)
            stack.close_shells()
            save_s = stack.machine.save_state(work / STATE_FILE)
            info = asdict(stack.info) if stack.info else {}
        except BaseException:
            stack.stop()
            raise
        stack.stop()
        snap = Snapshot(dir=final, key=key, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        seconds_to_build=round(time.monotonic() - t0, 1), seconds_to_save=round(save_s, 1),
                        state_bytes=(work / STATE_FILE).stat().st_size, stack_info=info)
        for name in (*FROZEN_DISKS, STATE_FILE):
            (work / name).chmod(0o444)
        (work / "snapshot.json").write_text(json.dumps(snap.to_json(), indent=2) + "\n")
        os.rename(work, final)
        progress(f"snapshot {key}: saved in {snap.seconds_to_build:.0f} s "
                 f"(state {snap.state_bytes / 2**20:.0f} MiB, written in {snap.seconds_to_save:.1f} s)")
        return snap


def check_restorable(snap: Snapshot) -> None:
    missing = [n for n in (*FROZEN_DISKS, STATE_FILE) if not snap.disk(n).exists()]
    if missing:
        raise LaunchError(f"snapshot {snap.key} is incomplete (missing {', '.join(missing)})",
                          hint=f"remove {snap.dir} and run again")


def clean_snapshots(store: ImageStore, everything: bool = False) -> list[Path]:
    """Remove snapshots of images that are no longer current (all with ``everything``)."""
    from .images import IMAGE_NAMES
    root = snapshots_root(store)
    removed: list[Path] = []
    if not root.exists():
        return removed
    current = {n: img.digest for n in IMAGE_NAMES if (img := store.current(n))}
    for d in sorted(root.iterdir()):
        if d.name.endswith(".lock"):
            continue
        try:
            used = Snapshot.load(d).stack_info.get("versions", {}).get("images", {})
        except (OSError, ValueError, TypeError):
            used = {}     # incomplete or unreadable: remove
        if not everything and used and all(current.get(n) == dg for n, dg in used.items()):
            continue
        for f in d.rglob("*"):
            if f.is_file():
                f.chmod(0o644)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed
