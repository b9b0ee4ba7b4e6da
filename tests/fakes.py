"""Fakes for control-flow tests (not part of xdh): no VM, no QEMU, no SSH.

Each fake returns the real typed values the stages hand forward (``CrashOutcome``, ``Checked``,
``BuiltImage``/``ImagePair``, ``Snapshot``) or raises, as a script says, so that the real
campaign, compare and CLI code around them runs unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.campaign.checks import Checked
from harness.catalog.workloads import Ack
from harness.config import TortureConfig
from harness.crash.ended import WorkloadEnd
from harness.crash.files import CrashPaths
from harness.crash.plan import CutPlan
from harness.crash.run import CrashOutcome
from harness.errors import GuestCommandError, GuestDied, WorkloadError
from harness.images import BuiltImage, ImagePair
from harness.stack.saved import Snapshot
from harness.status import Status
from harness.verify.oracle import Violation
from harness.vm.machine import Machines


# --- images ---------------------------------------------------------------------------------
def fake_image(root: Path, name: str) -> BuiltImage:
    d = root / f"{name}-fake"
    d.mkdir(parents=True, exist_ok=True)
    for f in ("rootfs.img", "vmlinuz", "initrd.img", "xen.gz"):
        (d / f).touch()
    return BuiltImage(name=name, digest="0123456789abcdef", dir=d,
                      host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake",
                      artifacts={"kernel": "vmlinuz", "initrd": "initrd.img", "xen": "xen.gz"},
                      packages={}, build_seconds=0.0, built_at="never", root_device="/dev/vda")


def fake_pair(root: Path) -> ImagePair:
    return ImagePair(fake_image(root, "dom0"), fake_image(root, "domu"))


# --- signals --------------------------------------------------------------------------------
def sigterm_self() -> None:
    """Deliver a real SIGTERM to this process and give its Python handler the chance to run
    (``harness.cleanup.install_signal_handlers`` turns it into ``Interrupted``)."""
    if not callable(signal.getsignal(signal.SIGTERM)):     # SIG_DFL would kill the test run itself
        raise AssertionError("no SIGTERM handler installed: a SIGTERM would kill the process")
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):
        time.sleep(0.01)
    raise AssertionError("SIGTERM did not interrupt (are the xdh signal handlers installed?)")


# --- the crash run and its check --------------------------------------------------------------
# What one fake crash run does. Verdicts: "pass", "loss", "ended" (a pass whose workload exited
# after its acks). Failures raised in the crash run: "guest-died" (GuestDied), "workload"
# (WorkloadError), "bug" (KeyError), "sigint" (KeyboardInterrupt), "sigterm" (a real SIGTERM).
Action = str
Script = Callable[[TortureConfig, str], Action]   # (the iteration's config, iteration name) -> action


@dataclass
class CrashCall:
    backend: str
    fault: str
    workload: str
    disk_cache: str
    name: str           # iteration name: iter-NNNN or canary
    path: Path          # the iteration directory

    @property
    def cell(self) -> str:
        return f"bookworm__{self.backend}__{self.fault}__{self.workload}__{self.disk_cache}"   # compare's cell name


@dataclass
class FakeCrashes:
    """``run_until_cut`` and ``check_outcome`` driven by a script; records every crash run."""

    script: Script
    acks: int = 5
    calls: list[CrashCall] = field(default_factory=list)
    _actions: dict[Path, Action] = field(default_factory=dict)

    def run_until_cut(self, cfg: TortureConfig, seed: int, plan: CutPlan, paths: CrashPaths, images: ImagePair,
                      boot: object, store: object, say: Callable[[str], None] = lambda m: None,
                      machines: Machines | None = None) -> CrashOutcome:
        it_dir = paths.dut.parent
        call = CrashCall(cfg.stack.backend, cfg.fault, cfg.workload, cfg.disk_cache.value, it_dir.name, it_dir)
        self.calls.append(call)
        action = self.script(cfg, it_dir.name)
        self._actions[it_dir] = action
        paths.boot.mkdir(parents=True, exist_ok=True)
        if action == "guest-died":
            raise GuestDied("QEMU exited unexpectedly (exit code 1)", log_tail="(XEN) Panic on CPU 0")
        if action == "workload":
            raise WorkloadError("the workload ended before the cut")
        if action == "bug":
            raise KeyError("no-such-key")
        if action == "disk-full":     # what the I/O watch records, then an SSH command into the paused guest fails
            assert machines is not None        # the kit's registry, as the real crash run gets it
            machines.halt(f"disk full: QEMU paused on 'No space left on device' writing {paths.dut} "
                                   "(disk dut); the file system at /tmp has 0.0 MiB free")
            raise GuestCommandError("domu: `mkfs.ext4 ...` failed: SSH connection is closed")
        if action == "sigint":
            raise KeyboardInterrupt
        if action == "sigterm":
            sigterm_self()
        assert action in ("pass", "loss", "ended"), action
        acks = tuple(Ack(str(i), 100.0 + i, 1000 + 10 * i) for i in range(self.acks))
        with open(paths.acks, "w") as f:
            for a in acks:
                f.write(json.dumps({"id": a.ident, "t": a.t, "latency_us": a.latency_us}) + "\n")
        ended = WorkloadEnd(self.acks, 1, "OSError: [Errno 5] Input/output error") if action == "ended" else None
        return CrashOutcome(acks=acks, cut_t=100.0 + self.acks, plan=plan, dut=paths.dut,
                            seconds={"crash_run": 1.0}, ended=ended)

    def check_outcome(self, plan: object, kit: object, it: Any, outcome: CrashOutcome,
                      say: Callable[[str], None]) -> Checked:
        if self._actions[it.path] == "loss":
            return Checked(Status.LOSS, 2, [Violation("lost", "acked records 3..4", "zero", 2, ranges=[(3, 4)])],
                           seconds={"verify_fast": 1.0})
        return Checked(Status.PASS, 0, [], seconds={"verify_fast": 1.0})

    def cells_started(self) -> list[str]:
        """Cells in the order their first crash run started (canaries included)."""
        out: list[str] = []
        for c in self.calls:
            if c.cell not in out and c.name != "canary":
                out.append(c.cell)
        return out


# --- the fast verifier and the snapshot -------------------------------------------------------
class FakeVerifier:
    """Stands in for ``FastVerifier``: records its lifecycle, never boots anything."""

    instances: list[FakeVerifier] = []

    def __init__(self, run_dir: Path, domu: BuiltImage, store: object, **kw: object):
        self.run_dir = run_dir
        self.store = store          # as FastVerifier's: compare hands it down to its cells
        self.machines = kw.get("machines")
        self.started = self.stopped = 0
        self.ensured = 0
        FakeVerifier.instances.append(self)

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1

    def ensure_running(self) -> None:
        self.ensured += 1

    def verify(self, *a: object, **kw: object) -> None:
        raise AssertionError("check_outcome is faked: nothing verifies")


def fake_snapshot(root: Path) -> Snapshot:
    return Snapshot(dir=root / "snapshot-fake", key="fakekey0123")


# --- QEMU process and QMP -------------------------------------------------------------------
class FakeProcess:
    """Stands in for the QEMU ``subprocess.Popen``: never runs anything."""

    instances: list[FakeProcess] = []
    on_kill: Callable[[], None] | None = None
    log_text: bytes = b""

    def __init__(self, argv: list[str], stdout: Any = None, **kw: Any):
        self.argv = argv
        self.kw = kw
        self.pid = 999999
        self.returncode: int | None = None
        self.killed = False
        self.waited = False
        if stdout is not None and FakeProcess.log_text:
            stdout.write(FakeProcess.log_text)
            stdout.flush()
        FakeProcess.instances.append(self)

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.killed = True
        if FakeProcess.on_kill is not None:
            FakeProcess.on_kill()
        self.returncode = -signal.SIGKILL

    def wait(self, timeout: float | None = None) -> int:
        self.waited = True
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.argv, timeout or 0)
        return self.returncode


class FakeQMP:
    """Stands in for ``QEMUMonitorProtocol``; ``accept`` does what ``on_accept`` says."""

    instances: list[FakeQMP] = []
    on_accept: Callable[[], None] = staticmethod(lambda: None)

    def __init__(self, path: str, server: bool = False, nickname: str = ""):
        self.path = Path(path)
        self.closed = False
        self.commands: list[str] = []
        self.loop = asyncio.get_event_loop()      # what qemu.qmp's sync shim binds itself to
        FakeQMP.instances.append(self)

    def accept(self, timeout: float | None = None) -> None:
        type(self).on_accept()

    def settimeout(self, timeout: float | None) -> None:
        pass

    def cmd(self, name: str, **args: object) -> dict:
        self.commands.append(name)
        return {}

    def close(self) -> None:
        self.closed = True


def fake_subprocess_module() -> types.SimpleNamespace:
    """What ``harness.vm.machine`` uses of ``subprocess``, with ``Popen`` faked (only there)."""
    return types.SimpleNamespace(Popen=FakeProcess, DEVNULL=subprocess.DEVNULL, STDOUT=subprocess.STDOUT,
                                 TimeoutExpired=subprocess.TimeoutExpired)


def reset_fakes() -> None:
    FakeProcess.instances = []
    FakeProcess.on_kill = None
    FakeProcess.log_text = b""
    FakeQMP.instances = []
    FakeQMP.on_accept = staticmethod(lambda: None)
    FakeVerifier.instances = []
