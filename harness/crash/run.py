"""The crash run: a running stack, a fresh filesystem, the fault, the workload, and the power
cut at the planned point. Returns what happened (``CrashOutcome``); writes only raw logs (acks,
workload output, kernel logs, the write log) into the paths it is given."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import backends, faults, workloads
from ..catalog.workloads import Ack, Workload
from ..config import CutMode, DiskCache, Reset, TortureConfig
from ..errors import LogError, WorkloadError
from ..images import ImagePair, ImageStore
from ..progress import Progress, quiet
from ..stack.boot import BootSource
from ..stack.domu import dom0_device
from ..stack.programs import install_program
from ..stack.xen import XenStack, dut_drive
from ..stats import percentile
from ..vm.kernlog import KernelLogTap
from ..vm.machine import Machines
from ..vm.ssh import Stream
from . import writelog
from .counters import Recorder
from .ended import WorkloadEnd, last_words
from .files import CrashPaths, ack_line
from .ledger import Ledger
from .plan import CutPlan


@dataclass(frozen=True)
class CrashOutcome:
    """What one crash run produced: every ack with its arrival time, the cut time, the crash image."""

    acks: tuple[Ack, ...]
    cut_t: float
    plan: CutPlan
    dut: Path
    write_log: Path | None = None     # volatile model only
    start_entry: int = 0              # write-log entries before the workload started (mkfs, fault)
    fault_applied: str = ""           # what the domU said after the fault was injected
    seconds: dict[str, float] = field(default_factory=dict)
    base_dut: Path | None = None      # the disk under test it started from (None: a blank one)
    reset: Reset = Reset.BOOT         # how its stack came up (a restore of the saved stack, or a boot)
    ledger: Ledger | None = None      # every layer's flush counters over the run (crash.ledger)
    ended: WorkloadEnd | None = None  # the workload ended before the cut (its acks are judged as usual)


EXIT_STATUS_WAIT = 3.0     # seconds an exit status may trail the end of the workload's output


class AckReader:
    """Reads the workload's stdout in a thread; every ack is kept with its arrival time."""

    def __init__(self, stream: Stream, acks_path: Path, other_path: Path, write_log: Path | None = None):
        self.stream = stream
        self.write_log = write_log
        self.acks: list[Ack] = []
        self.ended = threading.Event()
        self.error: OSError | None = None
        self._acks_file = open(acks_path, "w", buffering=1)  # noqa: SIM115 - closed in finish()
        self._other = open(other_path, "w", buffering=1)  # noqa: SIM115
        self._thread = threading.Thread(target=self._pump, name="acks", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for t, line in self.stream.lines():
                ack = Ack.parse(line, t)
                if ack is None:
                    self._other.write(line + "\n")
                    continue
                if self.write_log is not None:   # maps the ack to a flush of the log (crash.states)
                    ack = dataclasses.replace(ack, log_bytes=self.write_log.stat().st_size)
                self.acks.append(ack)
                self._acks_file.write(ack_line(ack))
        except Exception as exc:  # noqa: BLE001 - the channel dies with the cut
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                self.error = exc        # our own write failed (a full disk): the crash run says so
            with contextlib.suppress(OSError):
                self._other.write(f"# stream ended: {exc}\n")
        finally:
            self.ended.set()

    def exit_status(self) -> int | None:
        """The remote program's exit status once its output ended (None: the channel died without
        one, e.g. with the guest); the status may trail the end of the output a little."""
        deadline = time.monotonic() + EXIT_STATUS_WAIT
        while (status := self.stream.exit_status()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return status

    def finish(self, timeout: float = 15.0) -> None:
        """Drain what the SSH channel still holds after the cut, then close the files."""
        self._thread.join(timeout)
        for f in (self._acks_file, self._other):
            with contextlib.suppress(OSError):    # a full disk: what fitted is kept
                f.close()


def latency_stats(acks: tuple[Ack, ...] | list[Ack]) -> dict[str, Any]:
    if not acks:
        return {}
    lat = [a.latency_us for a in acks]
    span = acks[-1].t - acks[0].t if len(acks) > 1 else 0
    return {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
            "ops_per_s": round((len(acks) - 1) / span, 1) if span else None}


def log_entries(path: Path) -> int:
    """Entries in a write log so far (read live from the host)."""
    try:
        return len(writelog.parse(path).entries)
    except (OSError, LogError):
        return 0


class FaultSteps:
    """Runs a fault's steps at their points of the crash run; says what each printed."""

    def __init__(self, fault: faults.Fault, stack: XenStack, say: Progress):
        self.fault, self.stack, self.say = fault, stack, say
        self.applied: list[str] = []
        self.last_step = 0.0        # when the last step finished (monotonic): the ledger's readings must be newer
        self._dom0_dut = ""
        self._done: set[faults.When] = set()

    def not_reached(self, when: faults.When) -> None:
        """The crash run ended before ``when`` (the workload stopped on its own): nothing is applied
        after it, and the iteration says so if the fault acts there."""
        if when in self._done:
            return
        self._done.add(when)
        if self.fault.at(when) or when == self.fault.outer_blkdebug_at:
            self.applied.append(f"fault not reached: the workload ended before its {when.value} point")
            self.say(f"fault {self.fault.name}: not reached (the workload ended before its {when.value} point)")

    def run(self, when: faults.When) -> None:
        """The steps of ``when``, once (a ``during`` step not run by the cut point runs before the cut)."""
        if when in self._done:
            return
        self._done.add(when)
        if when == self.fault.outer_blkdebug_at:
            node = self.stack.insert_blkdebug()
            self.applied.append(f"outer disk: blkdebug {node} inserted under the format node")
            self.last_step = time.monotonic()
            self.say(f"fault {self.fault.name} (outer disk, {when.value}): blkdebug {node} inserted")
        for step in self.fault.at(when):
            shell = self.stack.dom0 if step.where == faults.Where.DOM0 else self.stack.domu
            assert shell is not None and self.stack.dom0 is not None
            if "{dom0_dut}" in " ".join(step.argv) and not self._dom0_dut:
                self._dom0_dut = dom0_device(self.stack.dom0, "dut")
            out = shell.run(step.filled(self._dom0_dut), timeout=120).stdout.strip()
            self.applied.append(out)
            self.last_step = time.monotonic()
            self.say(f"fault {self.fault.name} ({step.where.value}, {when.value}): {out[-200:] or 'done'}")


def during_point(seed: int) -> float:
    """Where a ``during`` step runs: a seeded fraction of the way to the planned cut."""
    return random.Random(f"{seed}:fault-during").uniform(0.1, 0.9)


def prepare_domu(stack: XenStack, workload: Workload, steps: FaultSteps, seed: int, params: dict[str, Any]) -> None:
    """Program in, fault steps before mkfs, the filesystem, the workload's setup, steps before it."""
    assert stack.domu is not None
    install_program(stack.domu, workload)
    steps.run(faults.When.BEFORE_MKFS)
    if workload.needs_fs:
        stack.domu.run(["sh", "-c", workloads.setup_script()], timeout=300)
    if workload.setup:
        stack.domu.run(workload.argv("setup", seed, params), timeout=900)
    steps.run(faults.When.BEFORE_WORKLOAD)


class CrashRun:
    """One crash run in steps, for torture (``run_until_cut``) and by hand (``xdh up`` / ``xdh cut``):
    ``start`` (stack up, domU prepared, workload running), ``wait_for`` a cut plan, ``cut``,
    ``close`` (stack stopped, logs drained) -> ``CrashOutcome``. ``close`` runs on every way out."""

    def __init__(self, cfg: TortureConfig, seed: int, paths: CrashPaths, images: ImagePair, boot: BootSource,
                 store: ImageStore, say: Progress = quiet, user_qmp: Path | None = None,
                 machines: Machines | None = None):
        self.cfg, self.seed, self.paths, self.say, self.boot = cfg, seed, paths, say, boot
        self.workload, self.fault = workloads.get(cfg.workload), faults.get(cfg.fault)
        self.volatile = cfg.disk_cache == DiskCache.VOLATILE
        paths.boot.mkdir(parents=True, exist_ok=True)
        if self.volatile:
            paths.write_log.write_bytes(b"")
        boot.prepare_dut(paths.dut, cfg.stack.dut_size_mib)
        drive = dut_drive(paths.dut, self.log, self.fault, paths.boot)
        self.stack = XenStack(cfg.effective_stack(), paths.boot, images, drive, boot, store, quiet, user_qmp, machines)
        self.steps = FaultSteps(self.fault, self.stack, say)
        self.ledger = Recorder(self.stack, backends.get(cfg.stack.backend), enabled=cfg.ledger)
        self.taps: list[KernelLogTap] = []
        self.reader: AckReader | None = None
        self.seconds: dict[str, float] = {}
        self.start_entry = 0
        self.cut_t = 0.0
        self._t_start = 0.0
        self.ended: WorkloadEnd | None = None

    @property
    def log(self) -> Path | None:
        return self.paths.write_log if self.volatile else None

    def start(self, run_workload: bool = True) -> None:
        t0 = time.monotonic()
        self.stack.start()
        self.seconds["boot"] = round(time.monotonic() - t0, 1)
        assert self.stack.domu is not None and self.stack.dom0 is not None
        self.taps = [KernelLogTap(self.stack.domu, self.paths.kmsg_domu),
                     KernelLogTap(self.stack.dom0, self.paths.kmsg_dom0)]
        prepare_domu(self.stack, self.workload, self.steps, self.seed, self.cfg.params())
        if self.volatile:
            self.start_entry = log_entries(self.paths.write_log)
        self.ledger.at_start(lambda: len(self.reader.acks) if self.reader is not None else 0)
        if run_workload:
            argv = self.workload.argv("run", self.seed, self.cfg.params() | {"ops": 1 << 30})
            self.reader = AckReader(self.stack.domu.stream(argv), self.paths.acks, self.paths.output, self.log)
        self._t_start = time.monotonic()

    def wait_for(self, plan: CutPlan) -> None:
        """Until the cut point, or until the workload ended on its own (``self.ended``)."""
        assert self.reader is not None
        during = (during_point(self.seed), lambda: self.steps.run(faults.When.DURING)) \
            if self.fault.acts_during() else None
        self.ended = _wait_for_cut(self.reader, plan, self.cfg.ack_timeout, self._t_start, self.stack,
                                   self.paths.output, during)
        if self.ended is not None:
            self.say(f"{self.ended.line()}: the power is cut now, its acks are judged")

    def cut(self) -> None:
        """The power cut; with the volatile model it must not flush the disk (QemuMachine.cut_power).
        A fault's ``during`` steps that no cut plan reached (a cut by hand) run first; not after the
        workload ended on its own (the fault would act on nothing and be reported as applied)."""
        if self.ended is None:
            self.steps.run(faults.When.DURING)
        else:
            self.steps.not_reached(faults.When.DURING)
        self.ledger.at_cut(len(self.reader.acks) if self.reader is not None else 0, self.steps.last_step)
        self.cut_t = time.time()
        self.stack.cut("sigkill" if self.volatile else "kill")
        self.seconds["workload"] = round(time.monotonic() - self._t_start, 2)

    def close(self, plan: CutPlan) -> CrashOutcome:
        self.stack.stop()
        for tap in self.taps:
            tap.stop()
        self.ledger.stop()
        if self.reader is not None:
            self.reader.finish()
        acks = tuple(self.reader.acks) if self.reader is not None else ()
        ledger = self.ledger.ledger(self.paths.kmsg_domu, self.paths.kmsg_dom0, self.log, self.start_entry)
        return CrashOutcome(acks, self.cut_t, plan, self.paths.dut, self.log, self.start_entry,
                            "; ".join(a for a in self.steps.applied if a), self.seconds, self.boot.frozen_dut,
                            Reset.BOOT if self.boot.frozen_dut is None else Reset.SNAPSHOT, ledger, self.ended)


def run_until_cut(cfg: TortureConfig, seed: int, plan: CutPlan, paths: CrashPaths, images: ImagePair,
                  boot: BootSource, store: ImageStore, say: Progress = quiet,
                  machines: Machines | None = None) -> CrashOutcome:
    """Boot or restore the stack on ``paths.dut``, set up, inject the fault, run the workload and
    cut the power at ``plan``. The stack is stopped on every way out."""
    run = CrashRun(cfg, seed, paths, images, boot, store, say, machines=machines)
    try:
        run.start()
        run.wait_for(plan)
        run.cut()
    finally:
        outcome = run.close(plan)
    say(f"cut after {len(outcome.acks)} acks ({plan.describe()} planned)")
    return outcome


def _reached(plan: CutPlan, acks: int, seconds: float) -> bool:
    """Whether the planned cut point is reached after ``acks`` acks and ``seconds`` of workload."""
    if plan.mode == CutMode.ACKS:
        return acks >= (plan.after_acks or 0)
    return seconds >= (plan.after_seconds or 0)


def _ended_early(reader: AckReader, n: int, output: Path) -> WorkloadEnd:
    """The workload's output ended before the cut: a program that exited after acking is judged on
    its acks (WorkloadEnd); one that never acked, or a channel that died without an exit status, is
    not a run that can be judged (WorkloadError)."""
    status = reader.exit_status()
    out = output.read_text()[-2000:] if output.exists() else ""
    words = last_words(reader.stream.stderr_tail(), out)
    if status is None or n == 0:
        how = "its output stopped without an exit status" if status is None else f"exit {status}"
        raise WorkloadError(f"the workload ended before the cut after {n} acks ({how}): {words}")
    return WorkloadEnd(n, status, words)


def _wait_for_cut(reader: AckReader, plan: CutPlan, ack_timeout: float, t_start: float, stack: XenStack,
                  output: Path, during: tuple[float, Callable[[], None]] | None = None) -> WorkloadEnd | None:
    """Until the planned cut point (None), or the workload's own end after some acks; runs
    ``during`` (a fraction of the way there, an action) once."""
    last_n, last_change = 0, time.monotonic()
    while True:
        n = len(reader.acks)
        now = time.monotonic()
        if during is not None and (n >= during[0] * (plan.after_acks or 0) if plan.mode == CutMode.ACKS
                                   else now - t_start >= during[0] * (plan.after_seconds or 0)):
            during[1]()
            during = None
        if _reached(plan, n, now - t_start):
            return None
        if n != last_n:
            last_n, last_change = n, now
        if reader.ended.is_set() and reader.error is not None:
            raise reader.error
        if reader.ended.is_set():        # the last acks may have come in since n was read
            n = len(reader.acks)
            if _reached(plan, n, time.monotonic() - t_start):
                return None
            stack.alive()                # a stream that ended with the machine is the machine's death
            return _ended_early(reader, n, output)
        if now - last_change > ack_timeout:
            raise WorkloadError(f"no ack from the workload for {ack_timeout:.0f} s (after {n} acks)")
        stack.alive()
        time.sleep(0.02)
