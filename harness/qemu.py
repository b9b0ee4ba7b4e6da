"""The outer QEMU ("the physical machine"): argv assembly and one class that owns the process.

Patterned on QEMU's python/qemu/machine: launch = pre-launch, Popen, post-launch (QMP
accept); on failure clean up first, then raise one rich error with the serial tail;
shutdown escalates from QMP ``quit`` to SIGKILL with bounded waits. The process runs in
its own session (Ctrl-C reaches us, not QEMU) and with PR_SET_PDEATHSIG, so it dies
even if the harness is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from .accel import AccelChoice
from .errors import LaunchError

LOG = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"
# Seen on the console when a layer died: fail fast instead of waiting for a timeout.
FATAL_CONSOLE = re.compile(r"\(XEN\) Panic on CPU|Kernel panic - not syncing|\(XEN\) \*\*\*\* Panic")


def quote_optarg(value: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return value.replace(",", ",,")


@dataclass(frozen=True)
class Drive:
    """One outer disk: a host file seen by dom0 as a virtio disk with a stable serial."""

    node: str            # name of the node the device uses, also the virtio serial (/dev/disk/by-id/virtio-<node>)
    path: Path
    fmt: str = "qcow2"   # "qcow2" or "raw"
    readonly: bool = False
    blkdebug: Path | None = None   # blkdebug rules file: a fault-injecting filter under the format node
    write_log: Path | None = None  # record every write and flush here (blklogwrites, dm-log-writes format)
    no_flush: bool = False         # the disk acknowledges flushes without doing them (cache.no-flush=on)

    def args(self) -> list[str]:
        file_node = f"file,node-name={self.node}-file,filename={quote_optarg(str(self.path))}"
        args = ["-blockdev", "driver=" + file_node + ",cache.direct=off,cache.no-flush=off"]
        child = f"{self.node}-file"
        if self.blkdebug is not None:
            args += ["-blockdev", f"driver=blkdebug,node-name={self.node}-dbg,"
                                  f"config={quote_optarg(str(self.blkdebug))},image={child}"]
            child = f"{self.node}-dbg"
        logged = self.write_log is not None
        fmt_name = f"{self.node}-fmt" if logged else self.node
        fmt_node = (f"driver={self.fmt},node-name={fmt_name},file={child},"
                    f"read-only={'on' if self.readonly else 'off'}")
        if self.no_flush and not logged:
            fmt_node += ",cache.no-flush=on"
        args += ["-blockdev", fmt_node]
        if logged:
            # above the format node, so the log holds guest-visible offsets of the disk
            args += ["-blockdev", f"driver=file,node-name={self.node}-log,"
                                  f"filename={quote_optarg(str(self.write_log))},cache.no-flush=off",
                     "-blockdev", f"driver=blklogwrites,node-name={self.node},file={fmt_name},"
                                  f"log={self.node}-log,log-sector-size=512,log-append=off"
                                  + (",cache.no-flush=on" if self.no_flush else "")]
        return [*args, "-device", f"virtio-blk-pci,drive={self.node},serial={self.node}"]


@dataclass
class MachineSpec:
    """Everything that defines an outer QEMU's command line.

    ``kernel``/``append``/``initrds`` are Xen and its multiboot modules for the nested stack,
    or a Linux kernel and its one initramfs for the fast verifier: QEMU takes both the same way.
    """

    accel: AccelChoice
    kernel: Path
    append: str
    initrds: list[tuple[Path, str]]      # multiboot modules (path, command line), or one initramfs
    drives: list[Drive]
    ssh_port: int
    memory_mib: int = 3072
    smp: int = 2
    binary: str = QEMU_BINARY
    name: str = "xdh-l0"
    net_options: str = ""                # extra -netdev user options, e.g. net=/host= for a static guest
    guest_ssh: str = ""                  # guest address of the SSH forward ("": slirp's default guest)
    scsi_hotplug: bool = False           # a virtio-scsi bus to hot-plug disks into (the fast verifier)
    incoming_fd: int | None = None       # restore a saved state from this inherited fd (snapshot reset)
    extra: list[str] = field(default_factory=list)


def build_argv(spec: MachineSpec, qmp_socket: Path, serial_log: Path) -> list[str]:
    """The full argv, as a list; never goes through a shell."""
    initrd = ",".join(quote_optarg(f"{p} {cmd}".strip()) for p, cmd in spec.initrds)
    argv = [spec.binary, "-name", spec.name, "-nodefaults", "-display", "none", "-no-reboot",
            *spec.accel.qemu_args(),
            "-m", str(spec.memory_mib), "-smp", str(spec.smp),
            "-chardev", f"socket,id=qmp,path={quote_optarg(str(qmp_socket))}",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"file,id=serial0,path={quote_optarg(str(serial_log))}",
            "-serial", "chardev:serial0",
            "-kernel", str(spec.kernel), "-append", spec.append,
            "-initrd", initrd]
    for d in spec.drives:
        argv += d.args()
    net = "user,id=net0,restrict=on"
    if spec.net_options:
        net += "," + spec.net_options
    argv += ["-netdev", f"{net},hostfwd=tcp:127.0.0.1:{spec.ssh_port}-{spec.guest_ssh}:22",
             "-device", "virtio-net-pci,netdev=net0"]
    if spec.scsi_hotplug:
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    if spec.incoming_fd is not None:
        argv += ["-incoming", f"fd:{spec.incoming_fd}"]
    return argv + list(spec.extra)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (QEMU binds it; a rare race is retried by the caller)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup() -> None:
    """In the child: die with the parent (PR_SET_PDEATHSIG = 1)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_bytes()[-64 * 1024:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class QemuMachine:
    """Owns one outer QEMU process: launch, QMP, power cut, shutdown; logs to ``log_dir``."""

    def __init__(self, spec: MachineSpec, log_dir: Path, name: str = "l0"):
        self.spec = spec
        self.log_dir = log_dir
        self.name = name
        self.serial_log = log_dir / "serial.log"
        self.qemu_log = log_dir / "qemu.log"
        self._sock_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._qemu_log_file = None
        self.argv: list[str] = []
        self.killed_on_purpose = False
        self.exit_code: int | None = None

    # --- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "QemuMachine":
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> None:
        try:
            self._launch()
        except BaseException as exc:
            self.shutdown(hard=True)
            if isinstance(exc, (LaunchError, KeyboardInterrupt)) or not isinstance(exc, Exception):
                raise
            raise LaunchError(f"QEMU failed to start: {exc}", log_tail=self.failure_text(),
                              argv=self.argv) from exc

    def _launch(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to 108 bytes: keep the socket in a short tmp dir
        self._sock_dir = Path(tempfile.mkdtemp(prefix="xdh-qmp-"))
        qmp_path = self._sock_dir / "qmp.sock"
        self._qmp = QEMUMonitorProtocol(str(qmp_path), server=True, nickname=self.name)
        self.argv = build_argv(self.spec, qmp_path, self.serial_log)
        (self.log_dir / "qemu.argv").write_text("\n".join(self.argv) + "\n")
        LOG.debug("launching %s", self.argv)
        self._qemu_log_file = open(self.qemu_log, "ab")
        pass_fds = () if self.spec.incoming_fd is None else (self.spec.incoming_fd,)
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._qemu_log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=_child_setup, pass_fds=pass_fds)
        try:
            self._qmp.accept(timeout=30)
        except Exception as exc:
            self._proc.poll()
            raise LaunchError(f"QEMU did not connect to QMP (exit code {self._proc.returncode})",
                              log_tail=self.failure_text(), argv=self.argv) from exc
        self._qmp.settimeout(60)

    def failure_text(self) -> str:
        parts = []
        q = tail(self.qemu_log, 10)
        if q:
            parts.append("[qemu] " + q.replace("\n", "\n[qemu] "))
        s = tail(self.serial_log)
        if s:
            parts.append(s)
        return "\n".join(parts)

    def check_alive(self) -> None:
        """Raise LaunchError if QEMU exited or a layer panicked on the console."""
        if self._proc is None:
            raise LaunchError("QEMU is not running")
        if self._proc.poll() is not None:
            raise LaunchError(f"QEMU exited unexpectedly (exit code {self._proc.returncode})",
                              log_tail=self.failure_text(), argv=self.argv)
        m = FATAL_CONSOLE.search(tail(self.serial_log, 200))
        if m:
            raise LaunchError(f"fatal message on the console: {m.group(0)!r}", log_tail=self.failure_text(),
                              argv=self.argv)

    # --- QMP -----------------------------------------------------------------
    def qmp(self, cmd: str, **args):
        if self._qmp is None:
            raise LaunchError("QMP is not connected")
        return self._qmp.cmd(cmd, **args)

    def wait_event(self, name: str, timeout: float, **data) -> dict | None:
        """The next QMP event ``name`` whose data matches ``data``, or None after ``timeout``."""
        if self._qmp is None:
            raise LaunchError("QMP is not connected")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self._qmp.pull_event(wait=min(0.5, max(0.01, deadline - time.monotonic())))
            if ev and ev.get("event") == name and all(ev.get("data", {}).get(k) == v for k, v in data.items()):
                return ev
        return None

    def cut_power(self, method: str = "kill") -> None:
        """Power cut. ``kill``/``quit``: QMP ``stop`` freezes the vCPUs at once, then SIGKILL or
        QMP ``quit``; every cache in guest RAM is lost. But ``stop`` also flushes every disk
        (vm_stop -> bdrv_flush_all): harmless when the host keeps every completed write anyway,
        fatal to a volatile disk-cache model, whose write log would record that flush as if the
        guest had asked for it. ``sigkill`` is therefore a bare SIGKILL: nothing is flushed."""
        self.killed_on_purpose = True
        try:
            if method != "sigkill":
                self.qmp("stop")
        finally:
            if method == "quit":
                try:
                    self.qmp("quit")
                except Exception:  # the reply may race with the exit
                    pass
            self._hard_shutdown()
            self._post_shutdown()

    def save_state(self, path: Path, timeout: float = 900.0) -> float:
        """Pause the machine and write its whole state (RAM, devices) to ``path``: QMP ``migrate``
        to a file descriptor passed over the QMP socket (no shell, unlike ``exec:``). On success
        QEMU has flushed and released every disk, so the disk files match the state from now on.
        Returns the seconds taken; the machine stays paused."""
        t0 = time.monotonic()
        self.qmp("stop")
        with open(path, "wb") as f:
            assert self._qmp is not None
            self._qmp.send_fd_scm(f.fileno())
            self.qmp("getfd", fdname="xdh-state")
            self.qmp("migrate", uri="fd:xdh-state")
            while True:
                info = self.qmp("query-migrate")
                status = info.get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise LaunchError(f"saving the machine state failed: {info.get('error-desc', status)}",
                                      log_tail=self.failure_text())
                if time.monotonic() - t0 > timeout:
                    raise LaunchError(f"saving the machine state took more than {timeout:.0f} s")
                self.check_alive()
                time.sleep(0.2)
        return time.monotonic() - t0

    def wait_running(self, timeout: float = 300.0) -> float:
        """After an ``-incoming`` launch: wait until the state is loaded and the vCPUs run."""
        t0 = time.monotonic()
        while True:
            status = self.qmp("query-status").get("status")
            if status == "running":
                return time.monotonic() - t0
            if status == "paused" or status == "postmigrate":
                self.qmp("cont")
            elif status not in ("inmigrate", "prelaunch", "restore-vm"):
                raise LaunchError(f"restoring the machine state failed: status {status!r}",
                                  log_tail=self.failure_text())
            if time.monotonic() - t0 > timeout:
                raise LaunchError(f"the saved state did not load in {timeout:.0f} s", log_tail=self.failure_text())
            self.check_alive()
            time.sleep(0.1)

    # --- shutdown ------------------------------------------------------------
    def _hard_shutdown(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
        if self._proc:
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                LOG.error("QEMU pid %s did not die after SIGKILL", self._proc.pid)

    def shutdown(self, hard: bool = False, timeout: float = 10.0) -> None:
        """Idempotent: QMP quit and a bounded wait, then SIGKILL; always releases resources."""
        try:
            if self._proc and self._proc.poll() is None:
                if not hard and self._qmp is not None:
                    try:
                        self._qmp.settimeout(timeout)
                        self._qmp.cmd("quit")
                        self._proc.wait(timeout=timeout)
                    except Exception as exc:  # noqa: BLE001 - escalate on any failure
                        LOG.debug("soft shutdown failed (%s); killing", exc)
                self._hard_shutdown()
        finally:
            self._post_shutdown()

    def _post_shutdown(self) -> None:
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:  # noqa: BLE001
                pass
            self._qmp = None
        if self._qemu_log_file is not None:
            self._qemu_log_file.close()
            self._qemu_log_file = None
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        if self._proc is not None and self._proc.returncode is not None:
            self.exit_code = self._proc.returncode
            if self.exit_code < 0 and not self.killed_on_purpose and -self.exit_code != signal.SIGKILL:
                LOG.warning("QEMU died from signal %d: %s", -self.exit_code, " ".join(self.argv))


def host_port_in_use_error(qemu_log: Path) -> bool:
    return "Could not set up host forwarding rule" in tail(qemu_log, 20)


def launch_on_free_port(make_spec, log_dir: Path, name: str, attempts: int = 3, before_retry=None) -> QemuMachine:
    """Launch ``make_spec(port)`` on a free loopback port; if another process took the port in
    the meantime (QEMU then cannot set up the forward), try again with a new one."""
    for attempt in range(attempts):
        machine = QemuMachine(make_spec(free_port()), log_dir, name=name)
        try:
            machine.launch()
            return machine
        except LaunchError:
            if attempt < attempts - 1 and host_port_in_use_error(machine.qemu_log):
                if before_retry is not None:
                    before_retry()
                continue
            raise
    raise AssertionError("unreachable")


def pids_matching(fragment: str) -> list[int]:
    """PIDs of processes whose command line contains ``fragment`` (leak checks in tests)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmd:
            out.append(int(d.name))
    return out
