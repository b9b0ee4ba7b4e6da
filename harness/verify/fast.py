"""The fast verifier: one VM that verifies crash images hot-plugged into it.

Both verification paths run the same steps (``verify_on``) with the same domU kernel and
the same ``xdh-workload verify``: mount the disk under test (ext4 replays its journal, as
after a reboot), read it, report JSON. They differ only in how the crash image reaches the
kernel: through a full Xen boot (``--verify reboot``: xvdb via the backend under test), or
hot-plugged into one small VM that stays up (``--verify fast``: the domU's own kernel and
root booted directly under QEMU, no Xen, the crash image on a virtio-scsi disk). A crash
image is a plain disk either way. For ``qdisk-qcow2`` it holds dom0's ext4 with the domU's
disk as a qcow2 file: the verifier mounts that filesystem (replaying dom0's journal, as dom0
would at boot) and exposes the file with ``qemu-nbd --snapshot`` (the same QEMU qcow2 driver
qdisk uses, and nothing is written back), then verifies ``/dev/nbd0``.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..catalog.backends import QCOW2_IMAGE, QCOW2_MOUNT
from ..catalog.workloads import Workload
from ..config import Accel
from ..errors import GuestDied, InfraError, LaunchError, VerifyError
from ..images import BuiltImage, ImageStore
from ..progress import Progress
from ..stack.saved import STATE_FILE
from ..stack.xl import DOM0_BRIDGE_IP, DOMU_IP, DOMU_NET
from ..vm import accel as accel_mod
from ..vm.argv import Drive, MachineSpec
from ..vm.disks import QEMU_BINARY, make_overlay, qemu_version
from ..vm.lifecycle import Lifecycle
from ..vm.machine import Machines, QemuMachine, launch_on_free_port
from ..vm.ssh import Endpoint, Shell, wait_for_shell
from ..vm.state import save_state, wait_running
from . import saved
from .guest import VerifyJob, VerifyReport, verify_on

LOG = logging.getLogger(__name__)

VERIFIER_ARGS = "root=/dev/vda rw console=ttyS0 net.ifnames=0 cpufreq.off=1 quiet"
# the domU image's network config is static 169.254.77.2/24 on eth0: give slirp that subnet
VERIFIER_NET = f"net={DOMU_NET},host={DOM0_BRIDGE_IP}"
VERIFIER_GUEST_IP = DOMU_IP
NBD = "/dev/nbd0"
QCOW2_FILE = QCOW2_IMAGE.removeprefix(QCOW2_MOUNT + "/")    # relative to dom0's mount point
STOPPED = "the fast verifier was stopped by xdh: the run is ending (interrupted, or failed elsewhere)"


class FastVerifier(Lifecycle):
    """One VM that stays up for a whole campaign and verifies crash images hot-plugged over QMP
    (``blockdev-add`` + ``device_add scsi-hd``; ``device_del`` + ``blockdev-del`` after).
    Each image is opened through a fresh qcow2 overlay, so the crash image is never written."""

    def __init__(self, run_dir: Path, domu: BuiltImage, store: ImageStore, accel: Accel = Accel.AUTO,
                 memory_mib: int = 1024, progress: Progress | None = None, boot_timeout: float = 300.0,
                 machines: Machines | None = None):
        self.run_dir = run_dir
        self.machines = machines
        self.image = domu
        self.store = store
        self.accel = accel
        self.memory_mib = memory_mib
        self.boot_timeout = boot_timeout
        self.progress = progress or (lambda m: LOG.info("%s", m))
        self.machine: QemuMachine | None = None
        self.shell: Shell | None = None
        self.boot_seconds = 0.0
        self._n = 0

    def _start(self) -> None:
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "initrd" not in self.image.artifacts:
            raise LaunchError("the domU image has no extracted kernel/initrd for the fast verifier",
                              hint="rebuild it: xdh images build")
        choice = accel_mod.choose(self.accel, QEMU_BINARY, self.image.artifact("kernel"), self.store.root)
        machine = {"accel": choice.accel, "accel_args": choice.qemu_args(), "qemu": qemu_version(),
                   "append": VERIFIER_ARGS, "net": VERIFIER_NET, "memory_mib": self.memory_mib}
        key = saved.verifier_key(self.image, machine)
        snap = saved.save_once(self.store, key, self.image, lambda work: self._boot_and_save(choice, work),
                                self.progress)
        make_overlay(snap.disk(saved.ROOT), self.run_dir / saved.ROOT)
        fd = os.open(snap.state, os.O_RDONLY)
        try:
            self._launch(choice, fd)
        finally:
            os.close(fd)
        assert self.machine is not None
        wait_running(self.machine, timeout=self.boot_timeout)
        self.shell = self._connect()
        self.shell.run(["date", "-u", "-s", f"@{time.time():.3f}"])
        self.boot_seconds = round(time.monotonic() - t0, 1)
        self.progress(f"fast verifier up in {self.boot_seconds:.1f} s (restored {key}: domU kernel, no Xen; "
                      f"ssh on 127.0.0.1:{self.machine.spec.ssh_port})")

    def _boot_and_save(self, choice: accel_mod.AccelChoice, work: Path) -> tuple[Path, float]:
        """A cold boot in ``work``, prepared for batches and saved there; the VM is gone after."""
        self.progress(f"fast verifier: booting it once to save it ({work.name.removeprefix('.build-')})")
        root = work / saved.ROOT
        make_overlay(self.image.rootfs, root)
        self._launch(choice, None, work)
        try:
            assert self.shell is not None and self.machine is not None
            self.shell.run(["sh", "-c", saved.PREPARE], timeout=300)
            self.shell.close()
            return root, save_state(self.machine, work / STATE_FILE)
        finally:
            self.stop()

    def _launch(self, choice: accel_mod.AccelChoice, state_fd: int | None, where: Path | None = None) -> None:
        """QEMU on ``where/root.qcow2`` (default the run directory); a cold boot waits for SSH."""
        where = where or self.run_dir
        root = where / saved.ROOT
        image = self.image
        self.machine = launch_on_free_port(
            lambda port: MachineSpec(accel=choice, kernel=image.artifact("kernel"), append=VERIFIER_ARGS,
                                     initrds=[(image.artifact("initrd"), "")], drives=[Drive("root", root, "qcow2")],
                                     ssh_port=port, memory_mib=self.memory_mib, smp=1, name="xdh-verifier",
                                     net_options=VERIFIER_NET, guest_ssh=VERIFIER_GUEST_IP, scsi_hotplug=True,
                                     incoming_fd=state_fd),
            where, "verifier", before_retry=None if state_fd is None else lambda: os.lseek(state_fd, 0, os.SEEK_SET),
            machines=self.machines)
        if state_fd is None:
            self.shell = self._connect()
        else:
            self.shell = None

    def _connect(self) -> Shell:
        assert self.machine is not None
        ep = Endpoint("verifier", "127.0.0.1", self.machine.spec.ssh_port, self.image.host_key)
        try:
            return wait_for_shell(lambda: Shell.connect(ep, self.store.client_key), self.boot_timeout,
                                  "the fast verifier", alive=self.machine.check_alive)
        except InfraError as exc:
            raise exc.with_tail(self.machine.failure_text()) from None

    def ensure_running(self) -> None:
        """Start again if the VM died (a long matrix shares one verifier)."""
        if self.machine is None or not self.machine.is_running() or self.shell is None or not self.shell.is_active():
            self.progress("fast verifier is not running; starting it again")
            self.stop()
            self.start()

    @contextmanager
    def plugged(self, image: Path, out_dir: Path, label: str = "crash") -> Iterator[str]:
        """``image`` (raw, or qcow2 if it ends in .qcow2) hot-plugged through a throwaway qcow2
        overlay, so it is never written; yields its device node in the VM, unplugs on exit.
        The error under way wins over a failing unplug: an interrupt stays an interrupt."""
        if self.machine is None or self.shell is None:
            raise GuestDied("the fast verifier is not running")
        self.machine.check_alive()
        self._n += 1
        node, dev_id = f"{label}{self._n}", f"{label}dev{self._n}"
        overlay = out_dir / f"{label}-verify.qcow2"
        make_overlay(image, overlay)
        plugged = added = False
        try:
            with explained(self):
                self.machine.qmp("blockdev-add", **{"driver": "qcow2", "node-name": node,
                                                    "file": {"driver": "file", "filename": str(overlay)}})
                added = True
                self.machine.qmp("device_add", driver="scsi-hd", bus="scsi0.0", drive=node, id=dev_id, serial=node)
                plugged = True
                device = self._wait_device(node)
            yield device
        except BaseException:
            try:
                self._release(dev_id if plugged else "", node if added else "")
            except Exception as exc:  # noqa: BLE001 - the error under way is the one to report
                LOG.debug("unplugging %s after an error failed too: %s", node, exc)
            raise
        else:
            with explained(self):
                self._release(dev_id if plugged else "", node if added else "")
        finally:
            overlay.unlink(missing_ok=True)

    def _release(self, dev_id: str, node: str) -> None:
        """Unplug and delete what ``plugged`` added; nothing to do in a VM that is gone."""
        assert self.machine is not None
        if not self.machine.is_running():
            if not stopped_by_xdh(self.machine):
                self.machine.check_alive()      # it died: say how
            return
        if dev_id:
            self._unplug(dev_id)
        if node:
            self.machine.qmp("blockdev-del", **{"node-name": node})

    def verify(self, image: Path, job: VerifyJob, out_dir: Path) -> VerifyReport:
        """Hot-plug ``image``, verify it, unplug it. The verifier's kernel lines for this image
        go to ``out_dir/kmsg-verifier.log``."""
        if self.shell is None:
            raise GuestDied("the fast verifier is not running")
        out_dir.mkdir(parents=True, exist_ok=True)
        marker = f"xdh-verify-begin {self._n + 1}"
        with explained(self):
            self.shell.run(["sh", "-c", f"echo {marker} > /dev/kmsg"])
            try:
                with self.plugged(image, out_dir, "dut") as device:
                    if job.layout == "raw":
                        report = verify_on(self.shell, device, job.workload, job.seed, job.params)
                    else:
                        report = verify_in_dom0_file(self.shell, device, job.workload, job.seed, job.params)
            finally:
                self.save_kmsg(marker, out_dir / "kmsg-verifier.log")
        return VerifyReport(report, (out_dir / "kmsg-verifier.log",))

    def _wait_device(self, node: str, timeout: float = 60.0) -> str:
        assert self.shell is not None
        script = (f"for i in $(seq {int(timeout * 10)}); do "
                  f"for l in /dev/disk/by-id/scsi-*_{node}; do [ -e \"$l\" ] && readlink -f \"$l\" && exit 0; done; "
                  "sleep 0.1; done; exit 1")
        res = self.shell.run(["sh", "-c", script], check=False, timeout=timeout + 30)
        if res.status != 0:
            raise VerifyError(f"the hot-plugged crash image {node} did not appear in the fast verifier "
                              f"in {timeout:.0f} s")
        return res.stdout.strip()

    def _unplug(self, dev_id: str, timeout: float = 30.0) -> None:
        assert self.machine is not None
        self.machine.qmp("device_del", id=dev_id)
        if not self.machine.wait_event("DEVICE_DELETED", timeout, device=dev_id):
            raise VerifyError(f"the fast verifier did not release {dev_id} in {timeout:.0f} s")

    def save_kmsg(self, marker: str, path: Path) -> None:
        assert self.shell is not None
        try:
            out = self.shell.run(["dmesg", "--ctime"], check=False, timeout=60).stdout
        except Exception as exc:  # noqa: BLE001 - evidence only: never replaces the error under way
            LOG.debug("no kernel lines from the fast verifier: %s", exc)
            return
        lines = out.splitlines()
        start = max((i for i, ln in enumerate(lines) if marker in ln), default=-1)
        stamp = time.strftime("%H:%M:%S", time.localtime()) + ".000"   # the format of kernlog.KernelLogTap
        path.write_text("".join(f"{stamp} {ln}\n" for ln in lines[start + 1:]))

    def stop(self) -> None:
        """Idempotent: close SSH, stop the VM, remove its throwaway overlays."""
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        if self.machine is not None:
            self.machine.shutdown()
        for f in self.run_dir.glob("*.qcow2"):
            f.unlink(missing_ok=True)


def stopped_by_xdh(machine: QemuMachine | None) -> bool:
    """xdh killed this VM itself (``Machines.kill_all``: an interrupt, or a failure in another
    lane, is ending the run), not a full disk (``check_alive`` reports that)."""
    return machine is not None and machine.killed_on_purpose and not machine.halted


@contextmanager
def explained(fv: FastVerifier) -> Iterator[None]:
    """A failure while the verifier VM is gone (QMP "is disconnecting", a closed SSH channel)
    is explained by how it went: stopped by xdh itself (no bug in xdh, no finding: a GuestDied
    saying so), or dead (``check_alive``'s GuestDied or DiskFull, with its console)."""
    try:
        yield
    except Exception as exc:
        m = fv.machine
        if stopped_by_xdh(m):
            raise GuestDied(STOPPED) from exc
        if m is not None and not isinstance(exc, InfraError) and not m.is_running():
            m.check_alive()
        raise


def verify_in_dom0_file(shell: Shell, device: str, workload: Workload, seed: int,
                        params: dict[str, Any]) -> dict[str, Any]:
    """qdisk-qcow2: dom0's filesystem on the crash image, the domU's disk a qcow2 file in it."""
    outer = "/mnt/dom0-dut"
    m = shell.run(["sh", "-c", f"mkdir -p {outer} && mount {shlex.quote(device)} {outer}"], check=False,
                       timeout=300)
    if m.status != 0:
        return {"mount_error": "dom0's filesystem on the disk under test: "
                               + (m.stderr.strip() or m.stdout.strip())[-250:]}
    try:
        c = shell.run(["sh", "-c", f"test -e {outer}/{QCOW2_FILE} || exit 3; modprobe nbd; "
                            f"qemu-nbd --snapshot --format=qcow2 --connect={NBD} {outer}/{QCOW2_FILE} && "
                            f"for i in $(seq 100); do [ \"$(cat /sys/block/{NBD[5:]}/size)\" != 0 ] && exit 0; "
                            "sleep 0.1; done; exit 4"], check=False, timeout=120)
        if c.status != 0:
            what = "no qcow2 image in dom0's filesystem" if c.status == 3 else \
                f"qemu-nbd could not open the qcow2 image: {(c.stderr.strip() or c.stdout.strip())[-250:]}"
            return {"mount_error": what}
        try:
            return verify_on(shell, NBD, workload, seed, params)
        finally:
            shell.run(["qemu-nbd", "--disconnect", NBD], check=False, timeout=60)
    finally:
        shell.run(["umount", outer], check=False, timeout=120)
