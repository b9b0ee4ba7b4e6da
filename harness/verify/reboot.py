"""The reboot verifier: a fresh Xen stack booted on an overlay of the crash image, verifying
through the very backend under test (``--verify reboot``; the canary always includes it)."""

from __future__ import annotations

from pathlib import Path

from ..catalog.workloads import DEVICE
from ..config import StackConfig
from ..images import ImagePair, ImageStore
from ..progress import quiet
from ..stack.boot import ColdBoot
from ..stack.saved import ROOT_OVERLAYS
from ..stack.xen import XenStack, dut_drive
from ..vm.disks import make_overlay
from ..vm.kernlog import KernelLogTap
from ..vm.machine import Machines
from .guest import VerifyJob, VerifyReport, verify_on


class RebootVerifier:
    """Boots the stack ``config`` per crash image; the crash image itself is never written."""

    def __init__(self, config: StackConfig, images: ImagePair, store: ImageStore, machines: Machines | None = None):
        self.machines = machines
        self.config = config
        self.images = images
        self.store = store

    def verify(self, image: Path, job: VerifyJob, out_dir: Path) -> VerifyReport:
        out_dir.mkdir(parents=True, exist_ok=True)
        overlay = out_dir / "dut-verify.qcow2"
        make_overlay(image, overlay)
        logs = (out_dir / "kmsg-domu.log", out_dir / "kmsg-dom0.log")
        stack = XenStack(self.config, out_dir, self.images, dut_drive(overlay), ColdBoot(), self.store, quiet,
                         machines=self.machines)
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
