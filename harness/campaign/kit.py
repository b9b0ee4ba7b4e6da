"""The kit a campaign sets up once and every iteration uses: the pinned images, the saved stack
(snapshot reset) and the fast verifier VM. One kit for torture, compare, reproduce and bench."""

from __future__ import annotations

import time
from pathlib import Path

from ..config import Reset, StackConfig, TortureConfig, VerifyPath
from ..images import ImagePair, ImageStore
from ..progress import Progress
from ..stack.boot import BootSource, ColdBoot, Restore
from ..stack.saved import Snapshot
from ..stack.snapshot import ensure_snapshot
from ..stack.xen import machine_identity
from ..verify.fast import FastVerifier
from ..verify.guest import Verifier
from ..verify.reboot import RebootVerifier
from ..vm.host import require_tools
from ..vm.lifecycle import Lifecycle
from ..vm.machine import Machines


class Kit(Lifecycle):
    """A context manager: on entry the snapshot exists (``--reset snapshot``) and the fast verifier
    runs (``--verify fast|both``); on exit a verifier it started is stopped. A running verifier
    can be shared (``xdh compare``): it is then left running."""

    def __init__(self, cfg: TortureConfig, verifier_dir: Path, store: ImageStore, images: ImagePair,
                 progress: Progress, verifier: FastVerifier | None = None, machines: Machines | None = None):
        self.cfg = cfg
        # every QEMU this kit (and its lanes) starts; a verifier handed in brings its own registry
        self.machines = machines or (verifier.machines if verifier is not None and verifier.machines else Machines())
        self.verifier_dir = verifier_dir
        self.store = store
        self.images = images
        self.progress = progress
        self.snapshot: Snapshot | None = None
        self.fast: FastVerifier | None = verifier
        self._own_verifier = verifier is None
        self.setup_seconds: dict[str, float] = {}

    def lane(self, n: int) -> Kit:
        """A kit for campaign lane ``n`` (``--jobs``): the same images and snapshot, its own fast
        verifier (lane 0 shares this kit's)."""
        k = Kit(self.cfg, self.verifier_dir / f"lane-{n}", self.store, self.images, self.progress,
                self.fast if n == 0 else None, self.machines)
        k.snapshot = self.snapshot
        return k

    def _start(self) -> None:
        require_tools()
        cfg = self.cfg
        if cfg.reset == Reset.SNAPSHOT and self.snapshot is None:
            t0 = time.monotonic()
            stack = cfg.effective_stack()
            self.snapshot = ensure_snapshot(stack, self.images, self.store, self.progress,
                                            machine_identity(stack, self.store, self.images))
            self.setup_seconds["snapshot"] = round(time.monotonic() - t0, 1)
        if cfg.verify_mode() in (VerifyPath.FAST, VerifyPath.BOTH) and self.fast is None:
            t1 = time.monotonic()
            self.fast = FastVerifier(self.verifier_dir, self.images.domu, self.store, accel=cfg.stack.accel,
                                     progress=self.progress, boot_timeout=cfg.stack.boot_timeout,
                                     machines=self.machines)
            self.fast.start()
            self.setup_seconds["verifier"] = round(time.monotonic() - t1, 1)

    def stop(self) -> None:
        if self.fast is not None and self._own_verifier:
            self.fast.stop()

    @property
    def reset(self) -> Reset:
        return Reset.SNAPSHOT if self.snapshot is not None else Reset.BOOT

    def boot_source(self, seed: int) -> BootSource:
        """Where an iteration's crash run starts: the snapshot (its guests reseeded from ``seed``) or a boot."""
        return Restore(self.snapshot, seed) if self.snapshot is not None else ColdBoot()

    def verifier(self, path: VerifyPath, stack: StackConfig) -> Verifier:
        """The verifier of one path; ``stack`` is what a reboot brings up (the iteration's effective
        stack): restored from this kit's saved stack when it is that stack's, else booted."""
        if path == VerifyPath.FAST:
            if self.fast is None:
                raise ValueError("no fast verifier in this kit (verify mode reboot)")
            return self.fast
        saved = self.snapshot if stack == self.cfg.effective_stack() else None
        return RebootVerifier(stack, self.images, self.store, self.machines, saved)
