"""The crash run: a running stack, a fresh filesystem, the fault, the workload, and the power
cut at the planned point. Returns what happened (``CrashOutcome``); writes only raw logs (acks,
workload output, kernel logs, the write log) into the paths it is given."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import faults, workloads
from ..catalog.workloads import Ack
from ..config import CutMode, DiskCache, TortureConfig
from ..errors import LogError, WorkloadError
from ..images import ImagePair, ImageStore
from ..progress import Progress, quiet
from ..stack.boot import BootSource
from ..stack.xen import XenStack, dut_drive
from ..vm.kernlog import KernelLogTap
from ..vm.ssh import Stream
from . import writelog
from .plan import CutPlan


@dataclass(frozen=True)
class CrashPaths:
    """Where the crash run's raw logs go (handed out by the run directory)."""

    boot: Path            # the stack's own directory (serial.log, qemu.log, stack.json, ...)
    dut: Path             # the disk under test: the crash image after the cut
    acks: Path            # acks.jsonl, one line per ack as it arrived
    output: Path          # the workload's other output
    kmsg_domu: Path
    kmsg_dom0: Path
    write_log: Path       # volatile model: the outer disk's writes and flushes


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


class AckReader:
    """Reads the workload's stdout in a thread; every ack is kept with its arrival time."""

    def __init__(self, stream: Stream, acks_path: Path, other_path: Path, write_log: Path | None = None):
        self.stream = stream
        self.write_log = write_log
        self.acks: list[Ack] = []
        self.ended = threading.Event()
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
                self._acks_file.write(json.dumps({"id": ack.ident, "t": t, "latency_us": ack.latency_us,
                                                  "log_bytes": ack.log_bytes}) + "\n")
        except Exception as exc:  # noqa: BLE001 - the channel dies with the cut
            self._other.write(f"# stream ended: {exc}\n")
        finally:
            self.ended.set()

    def finish(self, timeout: float = 15.0) -> None:
        """Drain what the SSH channel still holds after the cut, then close the files."""
        self._thread.join(timeout)
        self._acks_file.close()
        self._other.close()


def load_acks(path: Path) -> list[Ack]:
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out.append(Ack(d["id"], d["t"], d.get("latency_us", 0), d.get("log_bytes", -1)))
    return out


def latency_stats(acks: tuple[Ack, ...] | list[Ack]) -> dict[str, Any]:
    lat = sorted(a.latency_us for a in acks)
    if not lat:
        return {}

    def pick(q: float) -> int:
        return lat[min(len(lat) - 1, int(q * len(lat)))]
    span = acks[-1].t - acks[0].t if len(acks) > 1 else 0
    return {"p50": pick(0.5), "p99": pick(0.99), "ops_per_s": round((len(acks) - 1) / span, 1) if span else None}


def log_entries(path: Path) -> int:
    """Entries in a write log so far (read live from the host)."""
    try:
        return len(writelog.parse(path).entries)
    except (OSError, LogError):
        return 0


def run_until_cut(cfg: TortureConfig, seed: int, plan: CutPlan, paths: CrashPaths, images: ImagePair,
                  boot: BootSource, store: ImageStore, say: Progress = quiet) -> CrashOutcome:
    """Boot or restore the stack on ``paths.dut``, set up, inject the fault, run the workload and
    cut the power at ``plan``. The stack is stopped on every way out."""
    workload, fault = workloads.get(cfg.workload), faults.get(cfg.fault)
    paths.boot.mkdir(parents=True, exist_ok=True)
    volatile = cfg.disk_cache == DiskCache.VOLATILE
    if volatile:
        paths.write_log.write_bytes(b"")
    boot.prepare_dut(paths.dut, cfg.stack.dut_size_mib)
    drive = fault.outer_drive(dut_drive(paths.dut, paths.write_log if volatile else None), paths.boot)
    stack = XenStack(cfg.effective_stack(), paths.boot, images, drive, boot, store, quiet)
    seconds: dict[str, float] = {}
    taps: list[KernelLogTap] = []
    reader: AckReader | None = None
    start_entry, applied = 0, ""
    t0 = time.monotonic()
    try:
        stack.start()
        seconds["boot"] = round(time.monotonic() - t0, 1)
        assert stack.domu is not None and stack.dom0 is not None
        taps = [KernelLogTap(stack.domu, paths.kmsg_domu), KernelLogTap(stack.dom0, paths.kmsg_dom0)]
        if workload.needs_fs:
            stack.domu.run(["sh", "-c", workloads.setup_script()], timeout=300)
        if fault.domu_script:
            applied = stack.domu.run(["sh", "-c", fault.domu_script], timeout=60).stdout.strip()
            say(f"fault {fault.name} injected: {applied}")
        if volatile:
            start_entry = log_entries(paths.write_log)
        argv = workload.argv("run", seed, cfg.params() | {"ops": 1 << 30})
        reader = AckReader(stack.domu.stream(argv), paths.acks, paths.output, paths.write_log if volatile else None)
        t_start = time.monotonic()
        _wait_for_cut(reader, plan, cfg.ack_timeout, t_start, stack, paths.output)
        cut_t = time.time()
        # with the volatile model the cut must not flush the disk under test (see QemuMachine.cut_power)
        stack.cut("sigkill" if volatile else "kill")
        seconds["workload"] = round(time.monotonic() - t_start, 2)
    finally:
        stack.stop()
        for tap in taps:
            tap.stop()
        if reader is not None:
            reader.finish()
    acks = tuple(reader.acks) if reader is not None else ()
    say(f"cut after {len(acks)} acks ({plan.describe()} planned)")
    return CrashOutcome(acks, cut_t, plan, paths.dut, paths.write_log if volatile else None, start_entry, applied,
                        seconds)


def _wait_for_cut(reader: AckReader, plan: CutPlan, ack_timeout: float, t_start: float, stack: XenStack,
                  output: Path) -> None:
    last_n, last_change = 0, time.monotonic()
    while True:
        n = len(reader.acks)
        now = time.monotonic()
        if plan.mode == CutMode.ACKS and n >= (plan.after_acks or 0):
            return
        if plan.mode == CutMode.TIME and now - t_start >= (plan.after_seconds or 0):
            return
        if n != last_n:
            last_n, last_change = n, now
        if reader.ended.is_set():
            out = output.read_text()[-300:] if output.exists() else ""
            raise WorkloadError(f"the workload ended before the cut after {n} acks: {out.strip()}")
        if now - last_change > ack_timeout:
            raise WorkloadError(f"no ack from the workload for {ack_timeout:.0f} s (after {n} acks)")
        stack.alive()
        time.sleep(0.02)
