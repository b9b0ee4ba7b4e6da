"""The outer QEMU ("the physical machine"): one class that owns the process.

Patterned on QEMU's python/qemu/machine: launch = pre-launch, Popen, post-launch (QMP
accept); on failure clean up first, then raise one rich error with the serial tail;
shutdown escalates from QMP ``quit`` to SIGKILL with bounded waits. The process runs in
its own session (Ctrl-C reaches us, not QEMU) and with PR_SET_PDEATHSIG, so it dies
even if the harness is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from qemu.qmp.legacy import QEMUMonitorProtocol

from ..cleanup import signals_ignored
from ..errors import DiskFull, GuestDied, LaunchError
from .argv import MachineSpec, build_argv
from .sockets import socket_dir
from .watch import FULL_HINT, IoWatch, describe, monitor_args

LOG = logging.getLogger(__name__)

# Seen on the console when a layer died: fail fast instead of waiting for a timeout.
FATAL_CONSOLE = re.compile(r"\(XEN\) Panic on CPU|Kernel panic - not syncing|\(XEN\) \*\*\*\* Panic")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (QEMU binds it; a rare race is retried by the caller)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup() -> None:
    """In the child: die with the parent (PR_SET_PDEATHSIG = 1)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def _fresh_loop() -> asyncio.AbstractEventLoop:
    """qemu.qmp's sync shim binds the thread's current event loop: one per machine, so that two
    threads can drive two machines at once (the crash run beside the verifier)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _spawn(argv: list[str], log: BinaryIO, incoming_fd: int | None) -> subprocess.Popen[bytes]:
    """QEMU in its own session (Ctrl-C reaches us, not QEMU), dying with us (_child_setup)."""
    pass_fds = () if incoming_fd is None else (incoming_fd,)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, pass_fds=pass_fds,
                            preexec_fn=_child_setup)  # noqa: PLW1509 - prctl(PR_SET_PDEATHSIG) has no Popen option


def tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_bytes()[-64 * 1024:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _log_tails(qemu_log: Path, serial_log: Path) -> str:
    """The end of QEMU's own log (prefixed ``[qemu]``), then the end of the serial console."""
    parts = []
    q = tail(qemu_log, 10)
    if q:
        parts.append("[qemu] " + q.replace("\n", "\n[qemu] "))
    s = tail(serial_log)
    if s:
        parts.append(s)
    return "\n".join(parts)


class QemuMachine:
    """Owns one outer QEMU process: launch, QMP, power cut, shutdown; logs to ``log_dir``."""

    def __init__(self, spec: MachineSpec, log_dir: Path, name: str = "l0", machines: Machines | None = None):
        self.spec = spec
        self.machines = machines if machines is not None else Machines()   # the registry it is counted in
        self.log_dir = log_dir
        self.name = name
        self.serial_log = log_dir / "serial.log"
        self.qemu_log = log_dir / "qemu.log"
        self._sock_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._qemu_log_file: BinaryIO | None = None
        self.argv: list[str] = []
        self.killed_on_purpose = False
        self.exit_code: int | None = None
        self.halted = ""                 # why the I/O watch stopped the machine (disk full)
        self._watch: IoWatch | None = None

    # --- lifecycle -------------------------------------------------------------
    def __enter__(self) -> QemuMachine:
        self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> None:
        """Start QEMU and accept its QMP connection. On failure nothing is left running; an
        interrupt (KeyboardInterrupt, Interrupted: BaseExceptions) is re-raised as it is, never
        wrapped into a LaunchError, as QEMU's own machine.py does."""
        try:
            self._launch()
        except BaseException as exc:
            self.shutdown(hard=True)
            if isinstance(exc, LaunchError) or not isinstance(exc, Exception):
                raise
            raise LaunchError(f"QEMU failed to start: {exc}", log_tail=self.failure_text(),
                              argv=self.argv) from exc

    def _launch(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to 108 bytes: keep the socket in a short tmp dir
        self._sock_dir = socket_dir("qmp")
        qmp_path = self._sock_dir / "qmp.sock"
        self._loop = _fresh_loop()
        self._qmp = QEMUMonitorProtocol(str(qmp_path), server=True, nickname=self.name)
        self.argv = build_argv(self.spec, qmp_path, self.serial_log) + monitor_args(self._sock_dir / "watch.sock")
        (self.log_dir / "qemu.argv").write_text("\n".join(self.argv) + "\n")
        LOG.debug("launching %s", self.argv)
        self._qemu_log_file = open(self.qemu_log, "ab")  # noqa: SIM115 - closed in _post_shutdown()
        self._proc = _spawn(self.argv, self._qemu_log_file, self.spec.incoming_fd)
        self.machines.add(self)
        try:
            self._qmp.accept(timeout=30)
        except Exception as exc:
            self._proc.poll()
            raise LaunchError(f"QEMU did not connect to QMP (exit code {self._proc.returncode})",
                              log_tail=self.failure_text(), argv=self.argv) from exc
        self._qmp.settimeout(60)
        self._watch = IoWatch(self._sock_dir / "watch.sock", self._io_error, name=f"io-watch-{self.name}")
        self._watch.start()

    def _io_error(self, event: dict[str, Any]) -> None:
        """From the watch thread: QEMU paused on an I/O error (a full disk). Kill it, so that
        whatever waits on its guests fails now; ``check_alive`` then says why."""
        self.halted = describe(event, self.spec.drives)
        LOG.error("%s", self.halted)
        self.machines.halt(self.halted)
        self.kill()

    def kill(self) -> None:
        """SIGKILL, also from another thread (``Machines.kill_all``); the owner's shutdown still runs."""
        self.killed_on_purpose = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
    def failure_text(self) -> str:
        return _log_tails(self.qemu_log, self.serial_log)

    def check_alive(self) -> None:
        """Raise GuestDied if QEMU exited or a layer panicked on the console."""
        if self.halted:
            raise DiskFull(self.halted, hint=FULL_HINT)
        # (the watch kills QEMU right after the event: its exit below is then the same failure)
        if self._proc is None:
            raise GuestDied("QEMU is not running")
        if self._proc.poll() is not None:
            raise GuestDied(f"QEMU exited unexpectedly (exit code {self._proc.returncode})",
                            log_tail=self.failure_text(), argv=self.argv)
        m = FATAL_CONSOLE.search(tail(self.serial_log, 200))
        if m:
            raise GuestDied(f"fatal message on the console: {m.group(0)!r}", log_tail=self.failure_text(),
                            argv=self.argv)

    # --- QMP -----------------------------------------------------------------
    def qmp(self, cmd: str, **args: object) -> Any:
        if self._qmp is None:
            raise GuestDied("QMP is not connected")
        return self._qmp.cmd(cmd, **args)

    def send_fd(self, fd: int) -> None:
        """Pass a file descriptor to QEMU over the QMP socket (SCM_RIGHTS), for ``getfd``."""
        if self._qmp is None:
            raise GuestDied("QMP is not connected")
        self._qmp.send_fd_scm(fd)

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any] | None:
        """The next QMP event ``name`` whose data matches ``data``, or None after ``timeout``."""
        if self._qmp is None:
            raise GuestDied("QMP is not connected")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self._qmp.pull_event(wait=min(0.5, max(0.01, deadline - time.monotonic())))
            except TimeoutError:     # qemu.qmp's legacy shim raises when no event came in time
                continue
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
                with contextlib.suppress(Exception):  # the reply may race with the exit
                    self.qmp("quit")
            self._hard_shutdown()
            self._post_shutdown()

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
        """Idempotent: QMP quit and a bounded wait, then SIGKILL; always releases resources.
        Signals are held off meanwhile: a second Ctrl-C cannot leave QEMU behind."""
        with signals_ignored():
            self._shutdown(hard, timeout)

    def _shutdown(self, hard: bool, timeout: float) -> None:
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
        self.machines.discard(self)
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._qmp is not None:
            with contextlib.suppress(Exception):   # closing a dead connection
                self._qmp.close()
            self._qmp = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
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


class Machines:
    """The QEMU machines of one campaign (its kit owns the registry and hands it to every stack
    and verifier): on an interrupt all of them are killed at once, the ones other threads own
    (campaign lanes, the check beside the crash run) included; and the first that the I/O watch
    stopped on a full disk is the error to report for whatever failed after it."""

    def __init__(self) -> None:
        self._live: set[QemuMachine] = set()
        self._halted: list[str] = []
        self._lock = threading.Lock()

    def add(self, machine: QemuMachine) -> None:
        with self._lock:
            self._live.add(machine)

    def discard(self, machine: QemuMachine) -> None:
        with self._lock:
            self._live.discard(machine)

    def halt(self, why: str) -> None:
        """A machine stopped on a full disk (the I/O watch says why)."""
        with self._lock:
            self._halted.append(why)

    def disk_full(self) -> DiskFull | None:
        """The error to report if a machine stopped on a full disk: whatever failed after that
        (an SSH command into the paused guest, a verification) failed because of it."""
        with self._lock:
            return DiskFull(self._halted[0], hint=FULL_HINT) if self._halted else None

    def kill_all(self) -> int:
        """SIGKILL every machine started and not stopped yet; their owners' cleanup then runs."""
        with self._lock:
            live = list(self._live)
        for m in live:
            m.kill()
        return len(live)


def launch_on_free_port(make_spec: Callable[[int], MachineSpec], log_dir: Path, name: str, attempts: int = 3,
                        before_retry: Callable[[], object] | None = None,
                        machines: Machines | None = None) -> QemuMachine:
    """Launch ``make_spec(port)`` on a free loopback port; if another process took the port in
    the meantime (QEMU then cannot set up the forward), try again with a new one."""
    for attempt in range(attempts):
        machine = QemuMachine(make_spec(free_port()), log_dir, name=name, machines=machines)
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
