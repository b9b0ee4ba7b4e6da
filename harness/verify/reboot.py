"""The reboot verifier: the Xen stack brought up on an overlay of the crash image, verifying
through the very backend under test (``--verify reboot``; the canary always includes it).

The stack is the saved one restored onto the crash image when the campaign has a saved stack:
it was saved with every guest page cache dropped and the disk under test never mounted, so no
layer holds a byte of that disk in memory, and the domU's first read after the restore comes
from the crash image, as after a boot. Not for qdisk-qcow2 (dom0 keeps its ext4 and the qcow2
tables of the saved bytes in memory) and not with ``--reset boot``: a full cold boot then."""

from __future__ import annotations

from pathlib import Path

from ..catalog import backends
from ..catalog.workloads import DEVICE
from ..config import StackConfig
from ..images import ImagePair, ImageStore
from ..progress import quiet
from ..stack.boot import BootSource, ColdBoot, Restore
from ..stack.saved import ROOT_OVERLAYS, Snapshot
from ..stack.xen import XenStack, dut_drive
from ..vm.disks import make_overlay
from ..vm.kernlog import KernelLogTap
from ..vm.machine import Machines
from .guest import VerifyJob, VerifyReport, verify_on


class RebootVerifier:
    """Brings the stack ``config`` up per crash image (restored from ``snapshot`` where that is
    sound, else booted); the crash image itself is never written."""

    def __init__(self, config: StackConfig, images: ImagePair, store: ImageStore, machines: Machines | None = None,
                 snapshot: Snapshot | None = None):
        self.machines = machines
        self.config = config
        self.images = images
        self.store = store
        self.snapshot = None if backends.get(config.backend).holds_dut_state else snapshot

    def boot_source(self, seed: int) -> BootSource:
        """The guests' entropy is reseeded from ``seed`` mixed with the verifier's own mark: not the
        crash run's future again."""
        return Restore(self.snapshot, seed ^ 0x7665726966) if self.snapshot is not None else ColdBoot()

    def verify(self, image: Path, job: VerifyJob, out_dir: Path) -> VerifyReport:
        out_dir.mkdir(parents=True, exist_ok=True)
        overlay = out_dir / "dut-verify.qcow2"
        make_overlay(image, overlay)
        logs = (out_dir / "kmsg-domu.log", out_dir / "kmsg-dom0.log")
        stack = XenStack(self.config, out_dir, self.images, dut_drive(overlay), self.boot_source(job.seed), self.store,
                         quiet, machines=self.machines)
        taps: list[KernelLogTap] = []
        try:
            stack.start()
            assert stack.domu is not None and stack.dom0 is not None
            taps = [KernelLogTap(stack.domu, logs[0]), KernelLogTap(stack.dom0, logs[1])]
            return VerifyReport(verify_on(stack.domu, DEVICE, job.workload, job.seed, job.params), logs)
        finally:
            for tap in taps:
                tap.stop()
            stack.stop()
            for throwaway in (overlay, *(out_dir / name for name in ROOT_OVERLAYS)):
                throwaway.unlink(missing_ok=True)
