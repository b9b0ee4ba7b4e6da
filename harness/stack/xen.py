"""The nested stack: outer QEMU -> Xen -> dom0 -> PV domU, as one lifecycle object.

Outer disks, each its own host file:
  - ``dom0-root``: throwaway qcow2 overlay over the read-only dom0 base (dom0 /dev/vda);
  - ``domu-root``: throwaway qcow2 overlay over the read-only domU base, given to the
    domU as ``xvda`` through blkback;
  - ``dut``: the disk under test, the domU's ``xvdb`` through the chosen backend mode. Its
    outer drive (with any fault's filters) is built by the caller; it survives power cuts.
Where the machine state comes from (a cold boot or a snapshot restore) is the boot source's
business (``boot.py``); faults act through the drive and the config, never through flags here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, paths, releases
from ..catalog import backends
from ..catalog.faults import Fault
from ..config import StackConfig
from ..errors import InfraError
from ..images import ImagePair, ImageStore, kernel
from ..jsonio import without_paths, write_json
from ..progress import Progress
from ..vm import accel as accel_mod
from ..vm.argv import Drive, MachineSpec, backing_child, quote_optarg
from ..vm.disks import QEMU_BINARY, qemu_version
from ..vm.lifecycle import Lifecycle
from ..vm.machine import Machines, QemuMachine, launch_on_free_port
from ..vm.ssh import Endpoint, Shell, wait_for_shell
from ..vm.state import save_state, wait_running
from . import inputs
from .backend_check import read_backend
from .boot import BootSource, ColdBoot
from .domu import create_domu, domu_failure_text
from .running import check_running
from .saved import DOM0_ROOT, DOMU_ROOT, Snapshot
from .xl import DOM0_ARGS, DOM0_BRIDGE_IP, DOMU_ARGS, DOMU_IP, XEN_ARGS

LOG = logging.getLogger(__name__)


def dut_drive(path: Path, write_log: Path | None = None, fault: Fault | None = None,
              rules_dir: Path | None = None) -> Drive:
    """The disk under test's outer drive, with a fault's filters (its blkdebug rules file is
    written to ``rules_dir``)."""
    drive = Drive("dut", path, "qcow2" if path.suffix == ".qcow2" else "raw", write_log=write_log)
    if fault is not None and fault.outer_blkdebug:
        assert rules_dir is not None
        rules_dir.mkdir(parents=True, exist_ok=True)
        rules = rules_dir / "blkdebug.conf"
        rules.write_text(fault.outer_blkdebug)
        if fault.outer_blkdebug_at is None:
            drive = dataclasses.replace(drive, blkdebug=rules)
        else:       # inserted over QMP while it runs (XenStack.insert_blkdebug)
            drive = dataclasses.replace(drive, later_blkdebug=rules)
    if fault is not None and fault.outer_no_flush:
        drive = dataclasses.replace(drive, no_flush=True)
    return drive


def versions(images: ImagePair, config: StackConfig | None = None) -> dict[str, Any]:
    def pick(pkgs: dict, *names: str) -> dict:
        return {n: pkgs[n] for n in names if n in pkgs}
    dom0, domu = images
    return {
        "host_qemu": qemu_version(),
        "release": dom0.release,
        "dom0": pick(dom0.packages, *(p for p in dom0.packages if p.startswith(("xen-hypervisor-4", "xen-utils-4"))),
                     "qemu-system-xen", "linux-image-amd64"),
        "domu": pick(domu.packages, "linux-image-amd64", "python3", "sqlite3", "xfsprogs"),
        "images": {"dom0": dom0.digest, "domu": domu.digest},
        "xdh": f"{__version__} ({paths.source()})",
        "dom0_kernel": dom0.artifacts.get("kernel"),
        "domu_kernel": domu.artifacts.get("kernel"),
        "own_debs": {"dom0": dom0.debs, "domu": domu.debs},   # your packages: file, hash, version
        **(own_kernel(config) if config else {}),
    }


def own_kernel(config: StackConfig) -> dict[str, Any]:
    """Your domU kernel file (and initramfs), by hash: part of the record and of the snapshot key
    ({} without one)."""
    if not config.domu_kernel:
        return {}
    file = kernel.inspect(config.domu_kernel).to_json() | {"initrd": kernel.initrd(config.domu_initrd)}
    return {"domu_kernel_file": file}


def user_monitor(path: Path) -> list[str]:
    """A QMP monitor on a listening socket (not part of the machine's saved state)."""
    return ["-chardev", f"socket,id=userqmp,path={quote_optarg(str(path))},server=on,wait=off",
            "-mon", "chardev=userqmp,mode=control"]


def machine_identity(config: StackConfig, store: ImageStore, images: ImagePair) -> dict[str, Any]:
    """What a saved machine state depends on besides images and config (the snapshot key)."""
    choice = accel_mod.choose(config.accel, QEMU_BINARY, images.dom0.artifact("kernel"), store.root)
    own = {k: without_paths(v) for k, v in own_kernel(config).items()}     # by content: the path is in no key
    return {**own, "accel": choice.accel, "accel_args": choice.qemu_args(), "qemu": qemu_version(),
            "xen_args": XEN_ARGS, "dom0_args": DOM0_ARGS, "domu_args": DOMU_ARGS, "bridge": DOM0_BRIDGE_IP}


def make_stack(config: StackConfig, run_dir: Path, store: ImageStore | None = None, dut: Path | None = None,
               boot: BootSource | None = None, progress: Progress | None = None,
               images: ImagePair | None = None) -> XenStack:
    """A stack (not started) on ``dut`` (default: a new one in ``run_dir``), cold-booted unless
    ``boot`` says otherwise: for ``xdh up``, the snapshot build and tests."""
    store = store or ImageStore()
    boot = boot or ColdBoot()
    run_dir.mkdir(parents=True, exist_ok=True)
    dut = dut or run_dir / boot.dut_name
    boot.prepare_dut(dut, config.dut_size_mib)
    return XenStack(config, run_dir, images or store.pair(config.components()), dut_drive(dut), boot, store, progress)


@dataclass
class StackInfo:
    config: dict[str, Any]
    accel: dict[str, str]
    ssh_port: int
    dom0_device: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    backend: dict[str, Any] | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None        # key of the snapshot this boot was restored from
    running: dict[str, str] = field(default_factory=dict)   # kernels, Xen, device model, read after boot


class XenStack(Lifecycle):
    """Owns one boot of the whole nested stack. Use as a context manager.

    ``start()`` brings up QEMU, dom0 and the domU and checks the backend mode; ``stop()``
    (always, on any exit) closes SSH and stops QEMU; ``cut()`` is the deliberate crash.
    """

    def __init__(self, config: StackConfig, run_dir: Path, images: ImagePair, dut: Drive, boot: BootSource,
                 store: ImageStore | None = None, progress: Progress | None = None, user_qmp: Path | None = None,
                 machines: Machines | None = None):
        inputs.check(config)
        self.machines = machines     # the campaign's registry (``vm.machine.Machines``), if any
        self.user_qmp = user_qmp     # a second QMP monitor for people (``xdh up``): the harness holds the first
        self.config = config
        self.backend = backends.get(config.backend)
        self.run_dir = run_dir
        self.images = images
        self.dut = dut
        self.boot = boot
        self.store = store or ImageStore()
        self.progress = progress or (lambda msg: LOG.info("%s", msg))
        self._machine: QemuMachine | None = None
        self.dom0: Shell | None = None
        self.domu: Shell | None = None
        self.info: StackInfo | None = None
        self._t0 = 0.0

    @property
    def machine(self) -> QemuMachine:
        if self._machine is None:
            raise InfraError("the stack's QEMU is not running")
        return self._machine

    def _step(self, msg: str) -> None:
        self.progress(f"[{time.monotonic() - self._t0:6.1f}s] {msg}")

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 1)

    # --- bring-up -------------------------------------------------------------------
    def _start(self) -> None:
        self._t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.boot.prepare_disks(self.run_dir, self.images)
        self._launch()
        self.boot.bring_up(self)

    def _launch(self) -> None:
        dom0_img = self.images.dom0
        choice = accel_mod.choose(self.config.accel, QEMU_BINARY, dom0_img.artifact("kernel"), self.store.root)
        self._step(f"accelerator: {choice.accel} ({choice.reason})")
        drives = [Drive("dom0-root", self.run_dir / DOM0_ROOT, "qcow2"),
                  Drive("domu-root", self.run_dir / DOMU_ROOT, "qcow2"), self.dut]
        c = self.config
        modules = [(dom0_img.artifact("kernel"), DOM0_ARGS), (dom0_img.artifact("initrd"), "")]
        state_fd = self.boot.state_fd()

        def spec_for(port: int) -> MachineSpec:
            return MachineSpec(accel=choice, kernel=dom0_img.artifact("xen"),
                               append=XEN_ARGS.format(mem=c.dom0_mem_mib), initrds=modules, drives=drives,
                               ssh_port=port, memory_mib=c.memory_mib, incoming_fd=state_fd,
                               extra=user_monitor(self.user_qmp) if self.user_qmp else [])
        rewind = None if state_fd is None else functools.partial(os.lseek, state_fd, 0, os.SEEK_SET)
        try:
            self._machine = launch_on_free_port(spec_for, self.run_dir, "l0", before_retry=rewind,
                                                machines=self.machines)
        finally:
            if state_fd is not None:
                os.close(state_fd)
        spec = self._machine.spec
        self.info = StackInfo(config=asdict(c), accel=accel_mod.to_json(choice), ssh_port=spec.ssh_port,
                              versions=versions(self.images, self.config))
        self._write_info()
        self._step(f"QEMU started (pid {self._machine.pid}, dom0 ssh on 127.0.0.1:{spec.ssh_port})")
        self.info.timings["qemu_started"] = self._elapsed()
        self.dom0_endpoint = Endpoint("dom0", "127.0.0.1", spec.ssh_port, dom0_img.host_key)
        self.domu_endpoint = Endpoint("domu", DOMU_IP, 22, self.images.domu.host_key)
        (self.run_dir / "known_hosts").write_text(self.dom0_endpoint.known_hosts_line() + "\n"
                                                  + self.domu_endpoint.known_hosts_line() + "\n")

    def boot_guests(self) -> None:
        """A cold boot: wait for dom0, create the domU, wait for it, check the backend."""
        assert self.info is not None
        self.dom0 = self._connect_dom0()
        self.info.timings["dom0_ssh"] = self._elapsed()
        self._step("dom0 is up (SSH)")
        self._wait_xen_tools(self.dom0)
        domu = self.images.domu
        self.info.dom0_device = create_domu(self.dom0, self.config, self.backend, self.run_dir, self._step,
                                            (domu.artifacts["kernel"], domu.artifacts["initrd"]))
        self.info.timings["xl_create"] = self._elapsed()
        self._step("domU created; waiting for its SSH through dom0")
        try:
            self.domu = self._wait_shell(self._connect_domu, "domU")
        except InfraError as exc:
            raise exc.with_tail(domu_failure_text(self.dom0, self.run_dir)) from None
        self.info.timings["domu_ssh"] = self._elapsed()
        self._step("domU is up (SSH)")
        own = kernel.inspect(self.config.domu_kernel).release if self.config.domu_kernel else ""
        self.info.running = check_running(self.dom0, self.domu, self.images, releases.get(self.config.release), own)
        b = read_backend(self.dom0, self.domu, self.backend, self.info.dom0_device.get("dut", ""))
        self.info.backend = asdict(b)
        self._write_info()
        self._step(f"disk under test: {self.backend.name}: {b.backend_kind} params={b.params} "
                   f"feature-flush-cache={b.feature_flush_cache} write_cache={b.write_cache!r}"
                   + (f" O_DIRECT={b.dm_o_direct}" if self.backend.o_direct else ""))

    def resume(self, snap: Snapshot, refresh: Callable[[Shell, str], None]) -> None:
        """After a restore: wait for the state to load, re-open SSH, ``refresh`` each guest."""
        assert self.info is not None
        wait_running(self.machine, timeout=self.config.boot_timeout)
        self.info.timings["state_loaded"] = self._elapsed()
        self._step(f"state loaded from snapshot {snap.key}")
        self.dom0 = self._connect_dom0()
        refresh(self.dom0, "dom0")
        self.domu = self._wait_shell(self._connect_domu, "domU")
        refresh(self.domu, "domu")
        self.info.timings["domu_ssh"] = self._elapsed()
        saved = snap.stack_info
        self.info.dom0_device = saved.get("dom0_device", {})
        self.info.backend = saved.get("backend")
        self.info.running = saved.get("running", {})
        self.info.snapshot = snap.key
        self._write_info()
        self._step("domU is up (SSH, restored)")

    def _wait_shell(self, connect: Callable[[], Shell], what: str) -> Shell:
        try:
            return wait_for_shell(connect, self.config.boot_timeout, what, alive=self.machine.check_alive)
        except InfraError as exc:
            raise exc.with_tail(self.machine.failure_text()) from None

    def _connect_dom0(self) -> Shell:
        return self._wait_shell(lambda: Shell.connect(self.dom0_endpoint, self.store.client_key), "dom0")

    def _connect_domu(self) -> Shell:
        assert self.dom0 is not None
        if not self.dom0.is_active():
            LOG.warning("dom0 SSH connection dropped while waiting for the domU; reconnecting")
            self.dom0 = self._connect_dom0()
        return Shell.connect(self.domu_endpoint, self.store.client_key, gateway=self.dom0)

    def _wait_xen_tools(self, dom0: Shell) -> None:
        """xenstored and the xl toolstack come up a little after sshd."""
        deadline = time.monotonic() + 120
        while True:
            self.machine.check_alive()
            res = dom0.run(["xl", "list"], check=False, timeout=60)
            if res.status == 0:
                return
            if time.monotonic() > deadline:
                raise InfraError(f"Xen toolstack not ready in dom0 after 120 s: {res.stderr.strip()}",
                                 log_tail=self.machine.failure_text())
            time.sleep(2)

    def _write_info(self) -> None:
        if self.info is not None:
            write_json(self.run_dir / "stack.json", asdict(self.info))

    # --- running ----------------------------------------------------------------------
    def alive(self) -> None:
        """Raise GuestDied if QEMU exited or a layer panicked."""
        self.machine.check_alive()

    def insert_blkdebug(self) -> str:
        """Put the disk under test's later blkdebug filter (a fault's, at its ``during`` point) under
        its format node over QMP; returns the filter's node name."""
        backing = backing_child(self.machine.qmp("x-debug-query-block-graph"), self.dut.format_node)
        for cmd, args in self.dut.insert_blkdebug(backing):
            self.machine.qmp(cmd, **args)
        return self.dut.later_node

    def save(self, state: Path) -> tuple[float, dict[str, Any]]:
        """Save the running stack (snapshot): drop guest caches, close SSH, write the machine
        state. Returns the seconds the save took and the StackInfo of this boot."""
        for sh in (self.domu, self.dom0):
            if sh is not None:   # nothing of the disk under test in any page cache, and less state to save
                sh.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], timeout=120)
        self.close_shells()
        return save_state(self.machine, state), asdict(self.info) if self.info else {}

    def cut(self, method: str = "kill") -> None:
        """The deliberate crash (see QemuMachine.cut_power): nothing above the outer disk survives."""
        self.close_shells()
        self.machine.cut_power(method)

    # --- teardown ---------------------------------------------------------------------
    def close_shells(self) -> None:
        for sh in (self.domu, self.dom0):
            if sh is not None:
                sh.close()
        self.domu = self.dom0 = None

    def stop(self) -> None:
        """Idempotent; always leaves no QEMU behind (QemuMachine.shutdown holds signals off)."""
        self.close_shells()
        if self._machine is not None:
            self._machine.shutdown()
