"""Torture: crash iterations. Each one boots the stack on a fresh disk under test, runs a
workload, cuts the power at a seeded random point, boots a fresh stack on the crash image
and applies the oracle.

The crash image (``dut.img``) is never written after the cut: the verifying boot runs on a
qcow2 overlay over it, so ``xdh reproduce`` can verify the very same state again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import backends
from . import crashstate
from . import faults as faults_mod
from . import workloads as workloads_mod
from .errors import ConfigError, Interrupted, XdhError
from .kernlog import KernelLogTap, evidence
from .oracle import Ack, Verdict, judge
from .images import ImageStore
from .snapshot import Snapshot, ensure_snapshot
from .stack import StackConfig, XenStack, machine_identity, make_dut, make_overlay
from .verify import FastVerifier, verify_on

LOG = logging.getLogger(__name__)

CUT_MODES = ("acks", "time")
RESET_MODES = ("snapshot", "boot")
DISK_CACHES = ("none", "volatile")
VERIFY_CHOICES = ("auto", "fast", "reboot", "both")
# what an earlier flush point must satisfy without any ack: it mounts, holds no corrupt data, no holes
INVARIANT_KINDS = ("unmountable", "corrupt", "hole", "integrity")


@dataclass
class TortureConfig:
    """One campaign. Every random choice derives from ``seed``."""

    workload: str = "append"
    fault: str = "none"
    iterations: int = 3
    seed: int | None = None
    cut: str = "acks"
    cut_acks: tuple[int, int] = (20, 200)
    cut_seconds: tuple[float, float] = (1.0, 8.0)
    canary: bool = True
    shard: tuple[int, int] = (1, 1)
    keep_images: bool = False
    sync: str = "fsync"
    journal: str = "wal"
    record_size: int = 512
    ack_timeout: float = 120.0
    reset: str = "snapshot"     # snapshot: restore a saved stack per iteration; boot: full boot
    disk_cache: str = "none"    # none: completed writes are durable; volatile: unflushed writes are lost
    crash_subsets: int = 3      # volatile: random subsets of the unflushed writes, per iteration
    flush_points: int = 2       # volatile: earlier flush points checked for integrity (-1: all)
    verify: str = "auto"        # fast (hot-plug verifier VM), reboot (full Xen boot), both, auto
    stack: StackConfig = field(default_factory=StackConfig)

    def validate(self) -> None:
        w = workloads_mod.get(self.workload)
        f = faults_mod.get(self.fault)
        self.stack.validate()
        if f.needs_fs and not w.needs_fs:
            raise ConfigError(f"fault {f.name} needs a filesystem workload, and {w.name} writes the raw disk",
                              hint="use --workload append, replace or sqlite")
        if f.outer_blkdebug and self.stack.backend == "qdisk-qcow2":
            raise ConfigError("fault flush-eio fails dom0's own filesystem flushes in mode qdisk-qcow2",
                              hint="use --backend qdisk, qdisk-direct or phy")
        if self.iterations < 1:
            raise ConfigError("--iterations must be at least 1")
        if self.cut not in CUT_MODES:
            raise ConfigError(f"unknown cut mode {self.cut!r}", hint="use acks or time")
        lo, hi = self.cut_acks
        if not 1 <= lo <= hi:
            raise ConfigError(f"bad --cut-acks range {lo}-{hi}", hint="use LO-HI with 1 <= LO <= HI")
        lo_s, hi_s = self.cut_seconds
        if not 0 < lo_s <= hi_s:
            raise ConfigError(f"bad --cut-seconds range {lo_s}-{hi_s}", hint="use LO-HI with 0 < LO <= HI")
        i, n = self.shard
        if not 1 <= i <= n:
            raise ConfigError(f"bad shard {i}/{n}", hint="use --shard I/N with 1 <= I <= N")
        if self.sync not in ("fsync", "fdatasync") or self.journal not in ("wal", "delete"):
            raise ConfigError("bad --sync or --journal value")
        if self.reset not in RESET_MODES:
            raise ConfigError(f"unknown reset mode {self.reset!r}", hint="use snapshot or boot")
        if self.verify not in VERIFY_CHOICES:
            raise ConfigError(f"unknown verify mode {self.verify!r}", hint="use " + ", ".join(VERIFY_CHOICES))
        f = faults_mod.get(self.fault)
        if self.disk_cache not in DISK_CACHES:
            raise ConfigError(f"unknown disk cache model {self.disk_cache!r}", hint="use none or volatile")
        if f.device_model and backends.get(self.stack.backend).backendtype != "qdisk":
            raise ConfigError(f"fault {f.name} needs a qdisk backend (it replaces dom0's device model)",
                              hint="use --backend qdisk or qdisk-qcow2")
        if self.crash_subsets < 0:
            raise ConfigError("--crash-subsets must be 0 or more")

    def effective_stack(self) -> StackConfig:
        """The stack this campaign boots: a fault may replace dom0's device model."""
        dm = faults_mod.get(self.fault).device_model
        return dataclasses.replace(self.stack, device_model=dm) if dm else self.stack

    def verify_mode(self) -> str:
        """The verification path actually used: auto means fast (it reads every backend's layout)."""
        return "fast" if self.verify == "auto" else self.verify

    def params(self) -> dict:
        return {"record_size": self.record_size, "sync": self.sync if self.workload == "append" else None,
                "journal": self.journal if self.workload == "sqlite" else None,
                "block_size": 4096 if self.workload == "direct" else None,
                "blocks": 64 if self.workload == "direct" else None}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TortureConfig":
        d = dict(d)
        d["stack"] = StackConfig(**d["stack"])
        d["cut_acks"] = tuple(d["cut_acks"])
        d["cut_seconds"] = tuple(d["cut_seconds"])
        d["shard"] = tuple(d["shard"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def iteration_seed(campaign_seed: int, index: int) -> int:
    """Deterministic per-iteration seed, the same on every shard."""
    h = hashlib.sha256(f"xdh:{campaign_seed}:{index}".encode()).digest()
    return int.from_bytes(h[:7], "little")


def shard_indices(iterations: int, shard: tuple[int, int]) -> list[int]:
    i, n = shard
    return [k for k in range(iterations) if k % n == i - 1]


@dataclass
class CutPlan:
    mode: str
    after_acks: int | None = None
    after_seconds: float | None = None

    @classmethod
    def draw(cls, cfg: TortureConfig, seed: int) -> "CutPlan":
        rng = random.Random(seed)
        if cfg.cut == "acks":
            return cls("acks", after_acks=rng.randint(*cfg.cut_acks))
        return cls("time", after_seconds=round(rng.uniform(*cfg.cut_seconds), 3))

    def describe(self) -> str:
        return f"{self.after_acks} acks" if self.mode == "acks" else f"{self.after_seconds:.2f} s"


@dataclass
class IterationResult:
    index: int
    seed: int
    name: str
    status: str                 # pass, loss, error
    workload: str
    fault: str
    backend: str
    cut: dict
    acked: int = 0
    lost_acked: int = 0
    violations: list[str] = field(default_factory=list)
    error: str = ""
    seconds: dict = field(default_factory=dict)
    crash_image: str | None = None
    fsync_latency_us: dict = field(default_factory=dict)
    fault_applied: str = ""     # what the domU said after the fault was injected
    reset: str = "boot"
    verify: str = "reboot"
    verdicts: dict = field(default_factory=dict)   # per verification path, when more than one ran
    disk_cache: str = "none"
    crash_states: int = 1       # crash states verified (the cut, plus the volatile model's)
    states: list = field(default_factory=list)     # volatile: one summary per crash state from the log


class AckReader:
    """Reads the workload's stdout in a thread; every ack is kept with its arrival time."""

    def __init__(self, stream, acks_path: Path, other_path: Path):
        self.stream = stream
        self.acks: list[Ack] = []
        self.ended = threading.Event()
        self._acks_file = open(acks_path, "w", buffering=1)
        self._other = open(other_path, "w", buffering=1)
        self._thread = threading.Thread(target=self._pump, name="acks", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for t, line in self.stream.lines():
                ack = Ack.parse(line, t)
                if ack is None:
                    self._other.write(line + "\n")
                    continue
                self.acks.append(ack)
                self._acks_file.write(json.dumps({"id": ack.ident, "t": t, "latency_us": ack.latency_us}) + "\n")
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
        out.append(Ack(d["id"], d["t"], d.get("latency_us", 0)))
    return out


def latency_stats(acks: list[Ack]) -> dict:
    lat = sorted(a.latency_us for a in acks)
    if not lat:
        return {}
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    span = acks[-1].t - acks[0].t if len(acks) > 1 else 0
    return {"p50": pick(0.5), "p99": pick(0.99), "ops_per_s": round((len(acks) - 1) / span, 1) if span else None}


class Iteration:
    """One crash iteration in its own directory."""

    def __init__(self, cfg: TortureConfig, index: int, seed: int, it_dir: Path, progress, name: str | None = None,
                 images=None, snapshot: Snapshot | None = None, verifier: FastVerifier | None = None):
        self.cfg = cfg
        self.images = images      # (dom0, domU) BuiltImage pinned for the campaign
        self.snapshot = snapshot  # reset == snapshot: the saved stack every crash run starts from
        self.verifier = verifier  # verify fast/both: the campaign's verifier VM
        self.index = index
        self.seed = seed
        self.dir = it_dir
        self.progress = progress
        self.name = name or f"iter-{index:04d}"
        self.workload = workloads_mod.get(cfg.workload)
        self.fault = faults_mod.get(cfg.fault)
        self.plan = CutPlan.draw(cfg, seed)
        self.dut = self._find_dut(it_dir, snapshot is not None)
        self.write_log = it_dir / "dut-writes.log"   # volatile model: the outer disk's writes and flushes

    @staticmethod
    def _find_dut(it_dir: Path, restored: bool) -> Path:
        """The crash image: a qcow2 overlay over the snapshot's disk, or a raw disk of its own."""
        for name in ("dut.qcow2", "dut.img"):
            if (it_dir / name).exists():
                return it_dir / name
        return it_dir / ("dut.qcow2" if restored else "dut.img")

    def _say(self, msg: str) -> None:
        self.progress(f"  {self.name}: {msg}")

    def run(self) -> IterationResult:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "iteration.json").write_text(json.dumps({
            "index": self.index, "seed": self.seed, "name": self.name, "cut": asdict(self.plan),
            "config": self.cfg.to_json()}, indent=2) + "\n")
        res = IterationResult(self.index, self.seed, self.name, "error", self.cfg.workload, self.cfg.fault,
                              self.cfg.stack.backend, asdict(self.plan),
                              reset="snapshot" if self.snapshot else "boot", verify=self.cfg.verify_mode(),
                              disk_cache=self.cfg.disk_cache)
        t0 = time.monotonic()
        try:
            acks, cut_t = self._crash_run(res)
            res.acked = len(acks)
            res.fsync_latency_us = latency_stats(acks)
            verdicts = {}
            paths = ("fast", "reboot") if res.verify == "both" else (res.verify,)
            for n, path in enumerate(paths):
                t1 = time.monotonic()
                verdicts[path] = v = self.verify(path, acks, cut_t, record=n == 0)
                res.seconds[f"verify_{path}"] = round(time.monotonic() - t1, 1)
                if len(paths) > 1:
                    self._say(f"{path} verification: {'PASS' if v.ok else 'LOSS'} ({v.lost_acked} of {len(acks)} "
                              f"acked lost)" + ("; confirming with a full reboot" if n == 0 else ""))
            verdict = next(iter(verdicts.values()))
            res.status = "pass" if verdict.ok else "loss"
            res.lost_acked = verdict.lost_acked
            res.violations = [v.line() for v in verdict.violations]
            if len(verdicts) > 1:
                res.verdicts = {p: {"ok": v.ok, "lost_acked": v.lost_acked, "violations": len(v.violations)}
                                for p, v in verdicts.items()}
                if len({(v["ok"], v["lost_acked"], v["violations"]) for v in res.verdicts.values()}) > 1:
                    raise XdhError(f"the fast and reboot verifiers disagree: {res.verdicts}")
            if self.cfg.disk_cache == "volatile":
                t1 = time.monotonic()
                self._verify_states(res, acks, cut_t, "fast" if res.verify == "both" else res.verify)
                res.seconds["verify_states"] = round(time.monotonic() - t1, 1)
        except Interrupted:
            res.status = "error"
            res.error = "interrupted"
            raise             # never swallowed: the campaign stops through its one cleanup path
        except XdhError as exc:
            res.status = "error"
            res.error = exc.oneline()
            self._say(f"harness error: {res.error}")
        except Exception as exc:  # noqa: BLE001 - one broken iteration must not end the campaign
            LOG.debug("iteration failed", exc_info=True)
            res.status = "error"
            res.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self._say(f"harness error: {res.error}")
        finally:
            res.seconds["total"] = round(time.monotonic() - t0, 1)
            if self.dut.exists():
                if res.status == "pass" and not self.cfg.keep_images:
                    self.dut.unlink()
                else:
                    self._make_standalone()
                    res.crash_image = str(self.dut)
            if self.write_log.exists() and res.status == "pass" and not self.cfg.keep_images:
                self.write_log.unlink()
            for overlay in self.dir.glob("boot-*/*.qcow2"):
                overlay.unlink()   # throwaway overlays (the crash image itself is kept above)
            (self.dir / "result.json").write_text(json.dumps(asdict(res), indent=2) + "\n")
        return res

    # --- the crash run ---------------------------------------------------------------
    def _crash_run(self, res: IterationResult) -> tuple[list[Ack], float]:
        boot = self.dir / "boot-a"
        boot.mkdir(parents=True, exist_ok=True)
        blkdebug = None
        if self.fault.outer_blkdebug:
            blkdebug = boot / "blkdebug.conf"
            blkdebug.write_text(self.fault.outer_blkdebug)
        t0 = time.monotonic()
        log = None
        if self.cfg.disk_cache == "volatile":
            log = self.write_log
            log.write_bytes(b"")
        stack = XenStack(self.cfg.effective_stack(), boot, dut=self.dut, progress=lambda m: None,
                         dut_blkdebug=blkdebug, images=self.images, snapshot=self.snapshot, guest_seed=self.seed,
                         dut_write_log=log, dut_no_flush=self.fault.outer_no_flush)
        taps: list[KernelLogTap] = []
        reader = None
        start_entry = 0
        try:
            stack.start()
            res.seconds["boot"] = round(time.monotonic() - t0, 1)
            assert stack.domu is not None and stack.dom0 is not None and stack.machine is not None
            taps = [KernelLogTap(stack.domu, self.dir / "kmsg-domu-a.log"),
                    KernelLogTap(stack.dom0, self.dir / "kmsg-dom0-a.log")]
            if self.workload.needs_fs:
                stack.domu.run(["sh", "-c", workloads_mod.setup_script()], timeout=300)
            if self.fault.domu_script:
                out = stack.domu.run(["sh", "-c", self.fault.domu_script], timeout=60).stdout.strip()
                res.fault_applied = out
                self._say(f"fault {self.fault.name} injected: {out}")
            if log is not None:
                start_entry = self._log_entries()
            params = self.cfg.params() | {"ops": 1 << 30}
            argv = self.workload.argv("run", self.seed, params)
            stream = stack.domu.stream(argv)
            reader = AckReader(stream, self.dir / "acks.jsonl", self.dir / "workload-output.log")
            t_start = time.monotonic()
            self._wait_for_cut(reader, t_start, stack)
            cut_t = time.time()
            # with the volatile model the cut must not flush the disk under test (see cut_power)
            stack.machine.cut_power("sigkill" if log is not None else "kill")
            res.seconds["workload"] = round(time.monotonic() - t_start, 2)
        finally:
            stack.stop()
            for tap in taps:
                tap.stop()
            if reader is not None:
                reader.finish()
        acks = load_acks(self.dir / "acks.jsonl")
        (self.dir / "cut.json").write_text(json.dumps({"cut_t": cut_t, "acks_at_cut": len(acks),
                                                       "plan": asdict(self.plan),
                                                       "workload_start_entry": start_entry}) + "\n")
        self._say(f"cut after {len(acks)} acks ({self.plan.describe()} planned)")
        return acks, cut_t

    def _wait_for_cut(self, reader: AckReader, t_start: float, stack: XenStack) -> None:
        last_n, last_change = 0, time.monotonic()
        while True:
            n = len(reader.acks)
            now = time.monotonic()
            if self.plan.mode == "acks" and n >= (self.plan.after_acks or 0):
                return
            if self.plan.mode == "time" and now - t_start >= (self.plan.after_seconds or 0):
                return
            if n != last_n:
                last_n, last_change = n, now
            if reader.ended.is_set():
                out = (self.dir / "workload-output.log").read_text()[-300:]
                raise XdhError(f"the workload ended before the cut after {n} acks: {out.strip()}")
            if now - last_change > self.cfg.ack_timeout:
                raise XdhError(f"no ack from the workload for {self.cfg.ack_timeout:.0f} s (after {n} acks)")
            assert stack.machine is not None
            stack.machine.check_alive()
            time.sleep(0.02)

    # --- verification ----------------------------------------------------------------
    def _make_standalone(self) -> None:
        """A kept crash image must not depend on the snapshot cache: pull the backing data in."""
        if self.dut.suffix != ".qcow2":
            return
        proc = subprocess.run(["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", "", str(self.dut)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            LOG.warning("could not make %s standalone: %s", self.dut, proc.stderr.strip())

    def verify(self, path: str, acks: list[Ack], cut_t: float, out_dir: Path | None = None,
               record: bool = False, image: Path | None = None, invariants: bool = False) -> Verdict:
        """Verify the crash image by one path (fast or reboot), write its report and verdict
        (``record``: also as the iteration's own verify.json and verdict.json)."""
        if path == "fast":
            if self.verifier is None:
                raise XdhError("no fast verifier is running for this iteration")
            out_dir = out_dir or self.dir / "verify-fast"
            report = self.verifier.verify(image or self.dut, self.workload, self.seed, self.cfg.params(), out_dir,
                                          layout=backends.get(self.cfg.stack.backend).layout)
            logs = [out_dir / "kmsg-verifier.log"]
        else:
            out_dir = out_dir or self.dir / "boot-b"
            report = self._verify_boot(out_dir, image)
            logs = [out_dir / "kmsg-domu.log", out_dir / "kmsg-dom0.log"]
        (out_dir / "verify.json").write_text(json.dumps(report, indent=1) + "\n")
        if record:
            (self.dir / "verify.json").write_text(json.dumps(report, indent=1) + "\n")
        logs = [self.dir / "kmsg-domu-a.log", self.dir / "kmsg-dom0-a.log", *logs]
        verdict = judge(self.cfg.workload, acks, report, cut_t=cut_t, seed=self.seed, kernel_lines=evidence(logs))
        if invariants:   # no ack applies to an earlier flush point: only integrity counts
            verdict.violations = [v for v in verdict.violations if v.kind in INVARIANT_KINDS]
        (out_dir / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=2) + "\n")
        if record:
            (self.dir / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=2) + "\n")
        return verdict

    def _verify_boot(self, boot: Path, image: Path | None = None) -> dict:
        """Boot a fresh stack on an overlay of the crash image and run the workload's verify."""
        boot.mkdir(parents=True, exist_ok=True)
        overlay = boot / "dut-verify.qcow2"
        make_overlay(image or self.dut, overlay)
        stack = XenStack(self.cfg.effective_stack(), boot, dut=overlay, progress=lambda m: None, images=self.images)
        taps: list[KernelLogTap] = []
        try:
            stack.start()
            assert stack.domu is not None and stack.dom0 is not None
            taps = [KernelLogTap(stack.domu, boot / "kmsg-domu.log"), KernelLogTap(stack.dom0, boot / "kmsg-dom0.log")]
            return verify_on(stack.domu, workloads_mod.DEVICE, self.workload, self.seed, self.cfg.params())
        finally:
            for tap in taps:
                tap.stop()
            stack.stop()
            overlay.unlink(missing_ok=True)

    # --- the volatile disk-cache model ------------------------------------------------
    def _log_entries(self) -> int:
        """Entries in the write log so far (read live from the host)."""
        try:
            return len(crashstate.parse(self.write_log).entries)
        except (OSError, crashstate.LogError):
            return 0

    def _replay_base(self) -> Path:
        """The disk under test as it was when the crash run started."""
        if self.snapshot is not None:
            return self.snapshot.disk("dut.img")
        base = self.dir / "states" / "base.img"
        base.parent.mkdir(parents=True, exist_ok=True)
        make_dut(base, self.cfg.stack.dut_size_mib)
        return base

    def _verify_states(self, res: IterationResult, acks: list[Ack], cut_t: float, path: str) -> None:
        """Build the crash states the write log allows (worst case, subsets, flush points) and
        verify each like a reboot; any violation in any state is a loss."""
        log = crashstate.parse(self.write_log)
        start = json.loads((self.dir / "cut.json").read_text()).get("workload_start_entry", 0)
        plan = crashstate.plan_states(log, self.seed, self.cfg.crash_subsets, self.cfg.flush_points, start)
        base = self._replay_base()
        summary = {"log_entries": len(log.entries), "flushes": len(log.flushes()), "workload_start_entry": start,
                   "tail_writes": len(log.tail_writes())}
        for st in plan:
            sdir = self.dir / "states" / st.name
            sdir.mkdir(parents=True, exist_ok=True)
            img = crashstate.build(log, base, st, sdir / "crash.img")
            v = self.verify(path, acks if st.kind == "acked" else [], cut_t, out_dir=sdir, image=img,
                            invariants=st.kind == "invariants")
            if v.ok and not self.cfg.keep_images:
                img.unlink()
            res.states.append({"name": st.name, "kind": st.kind, "note": st.note, "ok": v.ok,
                               "lost_acked": v.lost_acked, "violations": [x.line() for x in v.violations[:5]]})
            if not v.ok:
                res.status = "loss"
                res.lost_acked = max(res.lost_acked, v.lost_acked)
                res.violations += [f"[{st.name}] {x.line()}" for x in v.violations]
        res.crash_states = 1 + len(plan)
        (self.dir / "states" / "states.json").write_text(json.dumps({"log": summary, "states": res.states},
                                                                    indent=2) + "\n")
        if base.parent == self.dir / "states":
            base.unlink()

    def reverify(self, out_dir: Path, path: str = "reboot") -> Verdict:
        """Verify the saved crash image again (``xdh reproduce``), by a full reboot or the fast verifier."""
        if not self.dut.exists():
            raise XdhError(f"no crash image in {self.dir}",
                           hint="only failing iterations keep one; rerun with --keep-images, or use --rerun")
        acks = load_acks(self.dir / "acks.jsonl")
        cut_t = json.loads((self.dir / "cut.json").read_text())["cut_t"]
        return self.verify(path, acks, cut_t, out_dir=out_dir)


def load_iteration(it_dir: Path, progress) -> Iteration:
    try:
        meta = json.loads((it_dir / "iteration.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{it_dir} is not an iteration directory (no iteration.json)",
                          hint="pass RUN/iterations/iter-NNNN") from None
    cfg = TortureConfig.from_json(meta["config"])
    return Iteration(cfg, meta["index"], meta["seed"], it_dir, progress, name=meta.get("name"))


def canary_config(cfg: TortureConfig) -> TortureConfig:
    """The positive control: drop-flush on append, same stack, a short run. Verified by a full
    reboot (and, on the fast path, by the fast verifier too, which must agree)."""
    both = cfg.verify_mode() == "fast"
    return dataclasses.replace(cfg, workload="append", fault="drop-flush", cut="acks", cut_acks=(60, 120),
                               sync="fsync", keep_images=False, verify="both" if both else "reboot",
                               stack=cfg.effective_stack())


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


class Fastpath:
    """What a campaign sets up once for the fast path: the saved stack and the verifier VM."""

    def __init__(self, cfg: TortureConfig, run_dir: Path, store: ImageStore, images, progress,
                 verifier: FastVerifier | None = None):
        self.snapshot: Snapshot | None = None
        self.verifier: FastVerifier | None = verifier     # a running one may be shared (xdh compare)
        self._own_verifier = verifier is None
        self.setup_seconds: dict = {}
        t0 = time.monotonic()
        if cfg.reset == "snapshot":
            stack = cfg.effective_stack()
            self.snapshot = ensure_snapshot(stack, images, store, progress, machine_identity(stack, store, images[0]))
            self.setup_seconds["snapshot"] = round(time.monotonic() - t0, 1)
        if cfg.verify_mode() in ("fast", "both") and self.verifier is None:
            t1 = time.monotonic()
            self.verifier = FastVerifier(run_dir / "verifier", images[1], store, accel=cfg.stack.accel,
                                         progress=progress, boot_timeout=cfg.stack.boot_timeout)
            self.verifier.start()
            self.setup_seconds["verifier"] = round(time.monotonic() - t1, 1)

    def stop(self) -> None:
        if self.verifier is not None and self._own_verifier:
            self.verifier.stop()
            for f in self.verifier.run_dir.glob("*.qcow2"):
                f.unlink()


def run_campaign(cfg: TortureConfig, run_dir: Path, progress, versions: dict,
                 verifier: FastVerifier | None = None) -> dict:
    """The main job: canary, then this shard's iterations; writes everything to ``run_dir``.
    ``verifier``: a running fast verifier to use instead of starting one (it is left running)."""
    from . import report

    cfg.validate()
    if cfg.seed is None:
        cfg.seed = random.SystemRandom().randrange(1, 2**48)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_json(), "seed": cfg.seed,
                                                     "versions": versions}, indent=2) + "\n")
    indices = shard_indices(cfg.iterations, cfg.shard)
    # every boot of the campaign uses the images it started with, even if a rebuild happens meanwhile
    store = ImageStore()
    images = (store.require("dom0"), store.require("domu"))
    progress(f"campaign seed {cfg.seed}: {len(indices)} iterations of {cfg.workload} with fault {cfg.fault} on "
             f"{cfg.stack.backend} (shard {cfg.shard[0]}/{cfg.shard[1]}; reset {cfg.reset}, verify "
             f"{cfg.verify_mode()}); run directory {run_dir}")
    t0 = time.monotonic()
    canary = None
    results: list[IterationResult] = []
    fast = None
    first_loss: dict = {}
    try:
        fast = Fastpath(cfg, run_dir, store, images, progress, verifier=verifier)
        kit = {"images": images, "snapshot": fast.snapshot, "verifier": fast.verifier}
        if cfg.canary:
            progress("canary: drop-flush on append must be caught, else this configuration proves nothing")
            it = Iteration(canary_config(cfg), -1, iteration_seed(cfg.seed, -1), run_dir / "canary", progress,
                           name="canary", **kit)
            canary = it.run()
            if canary.status == "loss":
                first_loss["canary"] = round(time.monotonic() - t0, 1)
            both = ", fast and reboot verifiers agree" if canary.verdicts else ""
            progress(f"canary: {canary.status.upper()} ({canary.acked} acked, {canary.lost_acked} lost{both}, "
                     f"{canary.seconds.get('total', 0):.0f} s)" + (f": {canary.error}" if canary.error else ""))
        for n, idx in enumerate(indices if canary is None or canary.status == "loss" else []):
            seed = iteration_seed(cfg.seed, idx)
            it = Iteration(cfg, idx, seed, run_dir / "iterations" / f"iter-{idx:04d}", progress, **kit)
            r = it.run()
            results.append(r)
            if r.status == "loss" and "iteration" not in first_loss:
                first_loss["iteration"] = round(time.monotonic() - t0, 1)
            elapsed = time.monotonic() - t0
            eta = elapsed / (n + 1) * (len(indices) - n - 1)
            detail = r.error or (r.violations[0] if r.violations else "")
            progress(f"{progress_bar(n + 1, len(indices))} {r.name} seed={seed} {r.status.upper()} "
                     f"acked={r.acked} lost={r.lost_acked} ({r.seconds.get('total', 0):.0f} s, ETA {eta / 60:.0f} min)"
                     + (f": {detail[:120]}" if detail else ""))
    finally:  # also on Ctrl-C: what ran so far is summarized
        if fast is not None:
            fast.stop()
        summary = report.summarize(run_dir, cfg.to_json(), cfg.seed, canary, results, time.monotonic() - t0)
        summary["first_loss_seconds"] = first_loss   # since the campaign started (setup included)
        if fast is not None:
            summary["setup_seconds"] = fast.setup_seconds
            if fast.snapshot is not None:
                summary["snapshot"] = fast.snapshot.key
        report.write(summary, run_dir)
    return summary
