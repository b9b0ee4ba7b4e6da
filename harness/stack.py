"""The nested stack: outer QEMU -> Xen -> dom0 -> PV domU, as one lifecycle object.

Every boot goes through ``XenStack``. Outer disks, each its own host file:
  - ``dom0-root``: throwaway qcow2 overlay over the read-only dom0 base (dom0 /dev/vda);
  - ``domu-root``: throwaway qcow2 overlay over the read-only domU base, given to the
    domU as ``xvda`` through blkback;
  - ``dut``: the disk under test, the domU's ``xvdb`` through the chosen backend mode. It
    is passed in (or created), survives power cuts, and the host can copy or inspect it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paramiko

from . import accel as accel_mod
from . import backends
from .cleanup import signals_ignored
from .errors import ConfigError, LaunchError, XdhError
from .images import BuiltImage, ImageStore
from .snapshot import Snapshot, check_restorable, qemu_version
from .qemu import Drive, MachineSpec, QemuMachine, launch_on_free_port
from .ssh import Endpoint, Shell, wait_for_shell

LOG = logging.getLogger(__name__)

DOMU_NAME = "domu"
DOMU_IP = "169.254.77.2"
DOM0_BRIDGE_IP = "169.254.77.1"
DOMU_MAC = "00:16:3e:77:00:02"
DUT_VDEV = "xvdb"
DUT_DEVID = 51728          # xenstore device id of xvdb: 202 << 8 | 16
XEN_ARGS = "console=com1 com1=115200,8n1 dom0_mem={mem}M,max:{mem}M dom0_max_vcpus=2 noreboot"
# cpufreq.off: udev would load powernow_k8 for the AMD-flavoured TCG CPU; in a Xen PV guest the
# boot then hung intermittently right after "powernow_k8: Power state transitions not supported".
DOM0_ARGS = "console=hvc0 root=/dev/vda rw net.ifnames=0 cpufreq.off=1 quiet"
DOMU_ARGS = "root=/dev/xvda rw console=hvc0 net.ifnames=0 cpufreq.off=1"


@dataclass
class StackConfig:
    """What to boot. Validated before anything is launched."""

    backend: str = backends.DEFAULT_BACKEND
    accel: str = "auto"
    memory_mib: int = 3072
    dom0_mem_mib: int = 1536
    domu_mem_mib: int = 512
    domu_vcpus: int = 1
    dut_size_mib: int = 1024
    boot_timeout: float = 300.0
    device_model: str = ""      # dom0 path of a wrapper run as the domU's device model (qdisk), "" = Xen's own

    def validate(self) -> None:
        backends.get(self.backend)
        if self.accel not in accel_mod.ACCELS:
            raise ConfigError(f"unknown accelerator {self.accel!r}", hint="use one of: " + ", ".join(accel_mod.ACCELS))
        if self.domu_mem_mib < 512:
            raise ConfigError(f"domU memory {self.domu_mem_mib} MiB is too small (Debian's initrd OOMs)",
                              hint="use at least 512")
        if self.dom0_mem_mib < 768:
            raise ConfigError(f"dom0 memory {self.dom0_mem_mib} MiB is too small", hint="use at least 768")
        if self.dom0_mem_mib + self.domu_mem_mib + 256 > self.memory_mib:
            raise ConfigError(f"outer memory {self.memory_mib} MiB cannot hold dom0 ({self.dom0_mem_mib}) + "
                              f"domU ({self.domu_mem_mib}) + Xen", hint="raise --memory")
        if not 64 <= self.dut_size_mib <= 1 << 20:
            raise ConfigError(f"disk-under-test size {self.dut_size_mib} MiB out of range", hint="use 64..1048576")
        if self.boot_timeout <= 0:
            raise ConfigError("boot timeout must be positive")
        if self.device_model and not self.device_model.startswith("/"):
            raise ConfigError(f"device model {self.device_model!r} is not an absolute dom0 path")


@dataclass
class BackendInfo:
    """The disk under test as both ends see it, read back after the domU is up."""

    mode: str
    xenstore_path: str
    backend_kind: str                 # "qdisk" or "vbd" (blkback)
    params: str
    feature_flush_cache: str | None
    feature_barrier: str | None
    direct_io_safe: str | None
    write_cache: str                  # domU /sys/block/xvdb/queue/write_cache
    fua: str
    blkfront_line: str                # domU dmesg "blkfront: xvdb: ..."


@dataclass
class StackInfo:
    config: dict
    accel: dict
    ssh_port: int
    dom0_device: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    backend: dict | None = None
    versions: dict = field(default_factory=dict)
    snapshot: str | None = None        # key of the snapshot this boot was restored from


def make_overlay(base: Path, overlay: Path, base_fmt: str | None = None) -> None:
    """A throwaway qcow2 overlay over a base that is never written (raw unless it ends in .qcow2)."""
    overlay.unlink(missing_ok=True)
    fmt = base_fmt or ("qcow2" if base.suffix == ".qcow2" else "raw")
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base), str(overlay)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise LaunchError(f"qemu-img create {overlay.name} failed: {proc.stderr.strip()}")


def make_dut(path: Path, size_mib: int) -> None:
    """A fresh, sparse, raw disk under test."""
    with open(path, "wb") as f:
        f.truncate(size_mib * 2**20)


def versions(dom0: BuiltImage, domu: BuiltImage) -> dict:
    def pick(pkgs: dict, *names: str) -> dict:
        return {n: pkgs[n] for n in names if n in pkgs}
    return {
        "host_qemu": qemu_version(),
        "dom0": pick(dom0.packages, "xen-hypervisor-4.17-amd64", "xen-utils-4.17", "qemu-system-xen", "linux-image-amd64"),
        "domu": pick(domu.packages, "linux-image-amd64", "python3", "sqlite3", "xfsprogs"),
        "images": {"dom0": dom0.digest, "domu": domu.digest},
        "dom0_kernel": dom0.artifacts.get("kernel"),
    }


def machine_identity(config: StackConfig, store: ImageStore, dom0: BuiltImage) -> dict:
    """What a saved machine state depends on besides images and config (the snapshot key)."""
    choice = accel_mod.choose(config.accel, "qemu-system-x86_64", dom0.artifact("kernel"), store.root)
    return {"accel": choice.accel, "accel_args": choice.qemu_args(), "qemu": qemu_version(),
            "xen_args": XEN_ARGS, "dom0_args": DOM0_ARGS, "domu_args": DOMU_ARGS, "bridge": DOM0_BRIDGE_IP}


class XenStack:
    """Owns one boot of the whole nested stack. Use as a context manager.

    ``start()`` brings up QEMU, dom0 and the domU and checks the backend mode;
    ``stop()`` (always, on any exit) closes SSH and stops QEMU; ``cut_power()`` is the
    deliberate crash. ``dut`` is the disk under test; it is created if missing.
    """

    def __init__(self, config: StackConfig, run_dir: Path, store: ImageStore | None = None,
                 dut: Path | None = None, progress=None, dut_blkdebug: Path | None = None,
                 images: tuple[BuiltImage, BuiltImage] | None = None, snapshot: Snapshot | None = None,
                 guest_seed: int = 0, dut_write_log: Path | None = None, dut_no_flush: bool = False):
        config.validate()
        self.config = config
        self.backend = backends.get(config.backend)
        self.run_dir = run_dir
        self.store = store or ImageStore()
        self.dut = dut or (run_dir / "dut.img")
        self.dut_blkdebug = dut_blkdebug
        self.dut_write_log = dut_write_log   # volatile disk-cache model: record writes and flushes here
        self.dut_no_flush = dut_no_flush     # disk-lies: the outer disk drops flushes
        self.images = images      # (dom0, domU) pinned by a campaign, so both boots use the same
        self.snapshot = snapshot  # restore this saved stack instead of booting (see snapshot.py)
        self.guest_seed = guest_seed
        self.progress = progress or (lambda msg: LOG.info("%s", msg))
        self.machine: QemuMachine | None = None
        self.dom0: Shell | None = None
        self.domu: Shell | None = None
        self.info: StackInfo | None = None
        self._t0 = 0.0

    def __enter__(self) -> "XenStack":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- bring-up -------------------------------------------------------------------
    def _step(self, msg: str) -> None:
        self.progress(f"[{time.monotonic() - self._t0:6.1f}s] {msg}")

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._t0 = time.monotonic()
        dom0_img, domu_img = self.images or (self.store.require("dom0"), self.store.require("domu"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        snap = self.snapshot
        if snap is None:
            make_overlay(dom0_img.rootfs, self.run_dir / "dom0-root.qcow2")
            make_overlay(domu_img.rootfs, self.run_dir / "domu-root.qcow2")
            if not self.dut.exists():
                make_dut(self.dut, self.config.dut_size_mib)
        else:
            check_restorable(snap)
            make_overlay(snap.disk("dom0-root.qcow2"), self.run_dir / "dom0-root.qcow2")
            make_overlay(snap.disk("domu-root.qcow2"), self.run_dir / "domu-root.qcow2")
            if not self.dut.exists():
                make_overlay(snap.disk("dut.img"), self.dut, "raw")
        choice = accel_mod.choose(self.config.accel, "qemu-system-x86_64", dom0_img.artifact("kernel"),
                                  self.store.root)
        self._step(f"accelerator: {choice.accel} ({choice.reason})")
        drives = [Drive("dom0-root", self.run_dir / "dom0-root.qcow2", "qcow2"),
                  Drive("domu-root", self.run_dir / "domu-root.qcow2", "qcow2"),
                  Drive("dut", self.dut, "qcow2" if self.dut.suffix == ".qcow2" else "raw",
                        blkdebug=self.dut_blkdebug, write_log=self.dut_write_log, no_flush=self.dut_no_flush)]
        c = self.config
        modules = [(dom0_img.artifact("kernel"), DOM0_ARGS), (dom0_img.artifact("initrd"), "")]
        state_fd = os.open(snap.state, os.O_RDONLY) if snap else None

        def spec_for(port: int) -> MachineSpec:
            return MachineSpec(accel=choice, kernel=dom0_img.artifact("xen"), append=XEN_ARGS.format(mem=c.dom0_mem_mib),
                               initrds=modules, drives=drives, ssh_port=port, memory_mib=c.memory_mib,
                               incoming_fd=state_fd)
        try:
            self.machine = launch_on_free_port(
                spec_for, self.run_dir, "l0",
                before_retry=(lambda: os.lseek(state_fd, 0, os.SEEK_SET)) if state_fd is not None else None)
        finally:
            if state_fd is not None:
                os.close(state_fd)
        spec = self.machine.spec
        self.info = StackInfo(config=asdict(c), accel=accel_mod.to_json(choice), ssh_port=spec.ssh_port,
                              versions=versions(dom0_img, domu_img))
        self._write_info()
        self._step(f"QEMU started (pid {self.machine.pid}, dom0 ssh on 127.0.0.1:{spec.ssh_port})"
                   + (f", restoring snapshot {snap.key}" if snap else ""))
        self.info.timings["qemu_started"] = self._elapsed()

        dom0_ep = self.dom0_endpoint = Endpoint("dom0", "127.0.0.1", spec.ssh_port, dom0_img.host_key)
        self.domu_endpoint = Endpoint("domu", DOMU_IP, 22, domu_img.host_key)
        (self.run_dir / "known_hosts").write_text(dom0_ep.known_hosts_line() + "\n"
                                                  + self.domu_endpoint.known_hosts_line() + "\n")
        key = self.store.client_key
        if snap is not None:
            self._resume(snap)
            return
        self.dom0 = self._wait_shell(lambda: Shell.connect(dom0_ep, key), "dom0")
        self.info.timings["dom0_ssh"] = self._elapsed()
        self._step("dom0 is up (SSH)")
        self._wait_xen_tools()
        self._create_domu()
        self.info.timings["xl_create"] = self._elapsed()
        self._step("domU created; waiting for its SSH through dom0")
        try:
            self.domu = self._wait_shell(self._connect_domu, "domU")
        except LaunchError as exc:
            console = self.save_domu_console()
            diag = self.dom0_diagnostics()
            exc.log_tail = "\n".join(x for x in (
                "[domU console]\n" + "\n".join(console.splitlines()[-20:]) if console else "",
                "[dom0 diagnostics]\n" + "\n".join(diag.splitlines()[-25:]) if diag else "") if x) or exc.log_tail
            raise
        self.info.timings["domu_ssh"] = self._elapsed()
        self._step("domU is up (SSH)")
        self.info.backend = asdict(self.check_backend())
        self._write_info()
        b = self.info.backend
        self._step(f"disk under test: {self.backend.name}: {b['backend_kind']} params={b['params']} "
                   f"feature-flush-cache={b['feature_flush_cache']} write_cache={b['write_cache']!r}")

    def _resume(self, snap: Snapshot) -> None:
        """After a restore: wait for the state to load, re-open SSH, and give each guest the
        host's time and fresh entropy derived from the seed (see snapshot.py)."""
        assert self.machine is not None and self.info is not None
        self.machine.wait_running(timeout=self.config.boot_timeout)
        self.info.timings["state_loaded"] = self._elapsed()
        self._step(f"state loaded from snapshot {snap.key}")
        self.dom0 = self._wait_shell(lambda: Shell.connect(self.dom0_endpoint, self.store.client_key), "dom0")
        self._refresh_guest(self.dom0, "dom0")
        self.domu = self._wait_shell(self._connect_domu, "domU")
        self._refresh_guest(self.domu, "domu")
        self.info.timings["domu_ssh"] = self._elapsed()
        saved = snap.stack_info
        self.info.dom0_device = saved.get("dom0_device", {})
        self.info.backend = saved.get("backend")
        self.info.snapshot = snap.key
        self._write_info()
        self._step("domU is up (SSH, restored)")

    def _refresh_guest(self, shell: Shell, name: str) -> None:
        entropy = hashlib.sha256(f"xdh-entropy:{self.guest_seed}:{name}".encode()).hexdigest()
        shell.run(["sh", "-c", f"date -u -s @{time.time():.3f} >/dev/null && echo {entropy} > /dev/urandom"])

    def save_domu_console(self) -> str:
        """Copy the domU console log that xenconsoled keeps in dom0 into the run directory."""
        if self.dom0 is None:
            return ""
        try:
            text = self.dom0.get_bytes(f"/var/log/xen/console/guest-{DOMU_NAME}.log").decode(errors="replace")
        except (OSError, paramiko.SSHException, XdhError):
            return ""
        (self.run_dir / "domu-console.log").write_text(text)
        return text

    def dom0_diagnostics(self) -> str:
        """What dom0 knows about the domU's disks and network; saved to the run directory."""
        if self.dom0 is None:
            return ""
        script = ("xl list; xl network-list domu; xl block-list domu; ip -br addr; ip -br link show master xenbr0; "
                  "tail -n 20 /var/log/xen/xen-hotplug.log")
        try:
            res = self.dom0.run(["sh", "-c", script], check=False, timeout=60)
        except XdhError:
            return ""
        text = res.stdout + res.stderr
        (self.run_dir / "dom0-diagnostics.txt").write_text(text)
        return text

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 1)

    def _wait_shell(self, connect, what: str) -> Shell:
        assert self.machine is not None
        try:
            return wait_for_shell(connect, self.config.boot_timeout, what, alive=self.machine.check_alive)
        except LaunchError as exc:
            exc.log_tail = exc.log_tail or self.machine.failure_text()
            raise

    def _connect_domu(self) -> Shell:
        assert self.dom0 is not None
        if not self.dom0.is_active():
            LOG.warning("dom0 SSH connection dropped while waiting for the domU; reconnecting")
            self.dom0 = self._wait_shell(lambda: Shell.connect(self.dom0_endpoint, self.store.client_key), "dom0")
        sock = self.dom0.jump_channel(DOMU_IP, 22)
        try:
            return Shell.connect(self.domu_endpoint, self.store.client_key, sock=sock)
        except BaseException:
            sock.close()
            raise

    def _wait_xen_tools(self) -> None:
        """xenstored and the xl toolstack come up a little after sshd."""
        assert self.dom0 is not None and self.machine is not None
        deadline = time.monotonic() + 120
        while True:
            self.machine.check_alive()
            res = self.dom0.run(["xl", "list"], check=False, timeout=60)
            if res.status == 0:
                return
            if time.monotonic() > deadline:
                raise LaunchError(f"Xen toolstack not ready in dom0 after 120 s: {res.stderr.strip()}",
                                  log_tail=self.machine.failure_text())
            time.sleep(2)

    def _dom0_device(self, serial: str) -> str:
        assert self.dom0 is not None
        return self.dom0.run(["readlink", "-f", f"/dev/disk/by-id/virtio-{serial}"]).stdout.strip()

    def _create_domu(self) -> None:
        assert self.dom0 is not None and self.info is not None
        root_dev = self._dom0_device("domu-root")
        dut_dev = self._dom0_device("dut")
        self.info.dom0_device = {"domu_root": root_dev, "dut": dut_dev}
        prep = self.backend.dom0_prepare(dut_dev, self.config.dut_size_mib)
        if prep:
            self._step(f"dom0: preparing {self.backend.name} on {dut_dev}")
            self.dom0.run(["sh", "-c", prep], timeout=180)
        # The domU's kernel and initramfs come from its own image, so they match its modules.
        self.dom0.run(["sh", "-c",
                       "set -e; m=/run/xdh/domu-root; mkdir -p $m; mount -o ro,noload \"$1\" $m; "
                       "cp \"$(ls $m/boot/vmlinuz-* | tail -n1)\" /run/xdh/vmlinuz; "
                       "cp \"$(ls $m/boot/initrd.img-* | tail -n1)\" /run/xdh/initrd.img; umount $m",
                       "sh", root_dev], timeout=120)
        # the domU's network: a bridge local to dom0, link-local addresses, routed nowhere
        self.dom0.run(["sh", "-c", "ip link show xenbr0 >/dev/null 2>&1 || ip link add xenbr0 type bridge; "
                       f"ip addr replace {DOM0_BRIDGE_IP}/24 dev xenbr0; ip link set xenbr0 up"])
        cfg = self.domu_config(root_dev, dut_dev)
        (self.run_dir / "domu.cfg").write_text(cfg)
        self.dom0.put_bytes(cfg.encode(), "/run/xdh/domu.cfg")
        self._step(f"dom0: xl create (disk under test: {self.backend.xl_disk(dut_dev)})")
        res = self.dom0.run(["xl", "create", "/run/xdh/domu.cfg"], check=False, timeout=180)
        if res.status != 0:
            raise LaunchError(f"xl create failed: {(res.stderr.strip() or res.stdout.strip())[-500:]}",
                              log_tail=self.machine.failure_text() if self.machine else "")
        self._check_device_model()

    def _check_device_model(self) -> None:
        """qdisk backends are created by the domU's QEMU in dom0; libxl does not notice when that
        fails, and the domU then waits for its disk forever. Read the device model's log instead."""
        assert self.dom0 is not None
        log = self.dom0.run(["sh", "-c", f"cat /var/log/xen/qemu-dm-{DOMU_NAME}.log 2>/dev/null"], check=False).stdout
        failed = [l for l in log.splitlines() if "failed to create" in l]
        if failed:
            (self.run_dir / "qemu-dm.log").write_text(log)
            hint = ""
            if "aio=native" in failed[0]:
                hint = ("Debian 12's qemu-system-xen is built without linux-aio, which qdisk needs for "
                        "direct-io-safe; use another backend mode")
            raise LaunchError(f"backend {self.backend.name}: dom0's device model could not create the disk: "
                              f"{failed[0].strip()}", hint=hint)
        if self.config.device_model:
            # the wrapper must really be in place: the running device model has libeatmydata mapped
            res = self.dom0.run(["sh", "-c", "for p in $(pgrep -f xen-qemu-system); do "
                                 "grep -q libeatmydata /proc/$p/maps && echo $p; done"], check=False)
            if not res.stdout.strip():
                raise LaunchError(f"device model override {self.config.device_model} is not in effect "
                                  "(no device model process has libeatmydata loaded)")
            self._step(f"dom0: device model runs under eatmydata (pid {res.stdout.split()[0]})")

    def domu_config(self, root_dev: str, dut_dev: str) -> str:
        c = self.config
        disks = [f"format=raw,vdev=xvda,access=rw,backendtype=phy,target={root_dev}",
                 self.backend.xl_disk(dut_dev, DUT_VDEV)]
        return "\n".join([
            f'name = "{DOMU_NAME}"',
            'type = "pv"',
            'kernel = "/run/xdh/vmlinuz"',
            'ramdisk = "/run/xdh/initrd.img"',
            f'extra = "{DOMU_ARGS}"',
            f"memory = {c.domu_mem_mib}",
            f"vcpus = {c.domu_vcpus}",
            "disk = [ " + ", ".join(f'"{d}"' for d in disks) + " ]",
            f'vif = [ "bridge=xenbr0,mac={DOMU_MAC}" ]',
            'on_crash = "preserve"',
            *([f'device_model_override = "{c.device_model}"', 'device_model_version = "qemu-xen"']
              if c.device_model else []),
            "",
        ])

    # --- checks -----------------------------------------------------------------------
    def check_backend(self) -> BackendInfo:
        """Read the disk under test back from dom0's xenstore and the domU; fail if it is not
        the requested mode."""
        assert self.dom0 is not None and self.domu is not None
        domid = self.dom0.run(["xl", "domid", DOMU_NAME]).stdout.strip()
        kind = self.backend.xenstore_kind
        path = f"/local/domain/0/backend/{kind}/{domid}/{DUT_DEVID}"
        res = self.dom0.run(["xenstore-ls", "-f", path], check=False)
        if res.status != 0:
            other = "vbd" if kind == "qdisk" else "qdisk"
            raise LaunchError(f"backend {self.backend.name}: no xenstore node {path} "
                              f"(is xvdb attached through {other}?)")
        keys = {}
        for line in res.stdout.splitlines():
            k, _, v = line.partition(" = ")
            keys[k.rsplit("/", 1)[-1]] = v.strip().strip('"')
        q = lambda p: self.domu.run(["cat", p]).stdout.strip()  # noqa: E731
        write_cache = q(f"/sys/block/{DUT_VDEV}/queue/write_cache")
        fua = q(f"/sys/block/{DUT_VDEV}/queue/fua")
        dmesg = self.domu.run(["dmesg"]).stdout
        lines = [l for l in dmesg.splitlines() if f"blkfront: {DUT_VDEV}:" in l]
        info = BackendInfo(mode=self.backend.name, xenstore_path=path, backend_kind=kind,
                           params=keys.get("params", ""), feature_flush_cache=keys.get("feature-flush-cache"),
                           feature_barrier=keys.get("feature-barrier"), direct_io_safe=keys.get("direct-io-safe"),
                           write_cache=write_cache, fua=fua, blkfront_line=lines[-1].split("] ", 1)[-1] if lines else "")
        problems = []
        if self.backend.direct_io_safe != (info.direct_io_safe == "1"):
            problems.append(f"direct-io-safe is {info.direct_io_safe!r}")
        if self.backend.on_filesystem and not info.params.startswith("qcow2:"):
            problems.append(f"params {info.params!r} is not a qcow2 image")
        if not lines:
            problems.append("no blkfront line for xvdb in the domU's dmesg")
        if problems:
            raise LaunchError(f"backend {self.backend.name} not set up as asked: " + "; ".join(problems))
        return info

    def _write_info(self) -> None:
        if self.info is not None:
            (self.run_dir / "stack.json").write_text(json.dumps(asdict(self.info), indent=2) + "\n")

    # --- teardown ---------------------------------------------------------------------
    def cut_power(self, method: str = "kill") -> None:
        """The deliberate crash: freeze, then kill QEMU; nothing above the outer disk survives."""
        self.close_shells()
        if self.machine:
            self.machine.cut_power(method)

    def close_shells(self) -> None:
        for sh in (self.domu, self.dom0):
            if sh is not None:
                try:
                    sh.close()
                except Exception:  # noqa: BLE001
                    pass
        self.domu = self.dom0 = None

    def stop(self) -> None:
        """Idempotent; always leaves no QEMU behind (a second Ctrl-C cannot skip it)."""
        with signals_ignored():
            self.close_shells()
            if self.machine is not None:
                self.machine.shutdown()
