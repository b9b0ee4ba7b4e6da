"""What to run: the stack and the campaign, as frozen, validated values.

Modes are enums, used by these configs and by the CLI's ``choices=``; combinations are checked
by the registry items themselves (``Fault.check``). Every random choice of a campaign derives
from its ``seed``, resolved before the campaign starts (``resolved``) and recorded in the run
directory.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from . import releases
from .catalog import backends, faults, manifest, workloads
from .components import Components
from .errors import ConfigError
from .status import Expect

__all__ = ["Accel", "CutMode", "DiskCache", "Expect", "Journal", "Reset", "StackConfig", "Sync", "TortureConfig",
           "VerifyPath", "choices"]


class Accel(StrEnum):
    AUTO = "auto"      # KVM only if a probe guest boots under it (vm/accel.py)
    KVM = "kvm"
    TCG = "tcg"


class CutMode(StrEnum):
    ACKS = "acks"      # after a seeded random number of acks
    TIME = "time"      # after a seeded random delay


class Reset(StrEnum):
    SNAPSHOT = "snapshot"  # restore a saved stack per crash run (seconds)
    BOOT = "boot"          # a full boot per crash run


class VerifyPath(StrEnum):
    AUTO = "auto"      # fast: it reads every backend's layout
    FAST = "fast"      # hot-plug into one verifier VM
    REBOOT = "reboot"  # the Xen stack on the crash image (restored, or booted)
    BOTH = "both"      # both, and they must agree


class DiskCache(StrEnum):
    AUTO = "auto"          # the backend mode's own: volatile where dom0 keeps no cache (Backend.disk_cache)
    NONE = "none"          # a completed write survives the cut (the host keeps it)
    VOLATILE = "volatile"  # unflushed writes may be lost: crash states from the write log


class Sync(StrEnum):
    FSYNC = "fsync"
    FDATASYNC = "fdatasync"


class Journal(StrEnum):
    WAL = "wal"
    DELETE = "delete"


def choices(enum: type[StrEnum]) -> list[str]:
    return [m.value for m in enum]


def _enum(enum: type[StrEnum], value: Any, option: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"unknown {option} {value!r}", hint="use one of: " + ", ".join(choices(enum))) from None


@dataclass(frozen=True)
class StackConfig:
    """What to boot. Validated before anything is launched."""

    backend: str = backends.DEFAULT_BACKEND
    release: str = releases.DEFAULT_RELEASE   # the Debian release of both guests (harness/releases.py)
    dom0_debs: tuple[str, ...] = ()   # your own .debs installed into dom0's image (absolute paths)
    domu_debs: tuple[str, ...] = ()   # ... and into the domU's
    domu_packages: tuple[str, ...] = ()   # Debian packages the workload needs in the domU (from its manifest)
    domu_kernel: str = ""   # a kernel image from a build tree, booted instead of the domU image's (images/kernel.py)
    domu_initrd: str = ""   # its initramfs ("" = none: what it needs must be built in)
    accel: Accel = Accel.AUTO
    memory_mib: int = 3072
    dom0_mem_mib: int = 1536
    domu_mem_mib: int = 512
    domu_vcpus: int = 1
    dut_size_mib: int = 1024
    boot_timeout: float = 300.0
    device_model: str = ""      # dom0 path of a wrapper run as the domU's device model (qdisk), "" = Xen's own

    def __post_init__(self) -> None:
        object.__setattr__(self, "accel", _enum(Accel, self.accel, "accelerator"))
        for key in ("dom0_debs", "domu_debs", "domu_packages"):
            object.__setattr__(self, key, tuple(getattr(self, key)))

    def components(self) -> Components:
        """The images this stack boots."""
        return Components(self.release, self.dom0_debs, self.domu_debs, self.domu_packages)

    def validate(self) -> None:
        """The values themselves (your own files are checked by ``stack.inputs.check``)."""
        backends.get(self.backend)
        releases.get(self.release)
        if self.domu_initrd and not self.domu_kernel:
            raise ConfigError("--domu-initrd needs --domu-kernel", hint="add --domu-kernel, or drop --domu-initrd")
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
            raise ConfigError("boot timeout must be positive", hint="use --boot-timeout S with S > 0")
        if self.device_model and not self.device_model.startswith("/"):
            raise ConfigError(f"device model {self.device_model!r} is not an absolute dom0 path")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


MAX_EXHAUSTIVE_K = 12      # 4094 subsets of one epoch


@dataclass(frozen=True)
class TortureConfig:
    """One campaign. Every random choice derives from ``seed``."""

    workload: str = "append"
    fault: str = "none"
    iterations: int = 3
    seed: int | None = None
    cut: CutMode = CutMode.ACKS
    cut_acks: tuple[int, int] = (20, 200)
    cut_seconds: tuple[float, float] = (1.0, 8.0)
    canary: bool = True
    shard: tuple[int, int] = (1, 1)
    keep_images: bool = False
    ledger: bool = True         # the flush ledger (crash/counters.py): off only to measure what it costs
    sync: Sync = Sync.FSYNC
    journal: Journal = Journal.WAL
    record_size: int = 512
    ack_timeout: float = 120.0
    reset: Reset = Reset.SNAPSHOT
    disk_cache: DiskCache = DiskCache.AUTO    # resolved at once: never AUTO after construction
    disk_cache_auto: bool = False   # the model was the backend's own (auto): chosen again for another backend
    crash_subsets: int = 3      # volatile: random subsets of each epoch's unflushed writes (crash.states)
    flush_points: int = -1      # volatile: flush states per iteration (-1: every flush of the workload)
    exhaustive_k: int = 4       # volatile: every subset of an epoch of at most K writes (crash.states)
    atomic_write: int = 0       # volatile: bytes a disk writes atomically; larger writes may tear (0: none tear)
    states_budget: int = 0      # volatile: distinct states verified per iteration, flush states first (0: all)
    resident_verify: bool = True    # a manifest's verify-many mode where it has one (off: a process per state)
    verify: VerifyPath = VerifyPath.AUTO
    jobs: int = 1               # lanes, each with its own stack and fast verifier (campaign.run_lanes)
    time_budget: float = 0.0    # seconds; no iteration starts that would not end in time (campaign.budget); 0: none
    expect: Expect | None = None  # a control: what every iteration must find (the exit code and JUnit follow)
    stack: StackConfig = field(default_factory=StackConfig)

    def __post_init__(self) -> None:
        for name, enum, option in (("cut", CutMode, "cut mode"), ("sync", Sync, "sync call"),
                                   ("journal", Journal, "journal mode"), ("reset", Reset, "reset mode"),
                                   ("disk_cache", DiskCache, "disk cache model"),
                                   ("verify", VerifyPath, "verify mode")):
            object.__setattr__(self, name, _enum(enum, getattr(self, name), option))
        if self.expect is not None:
            object.__setattr__(self, "expect", _enum(Expect, self.expect, "expectation"))
        if manifest.is_manifest(self.workload):
            # your own workload: recorded by absolute path; the domU image carries its packages
            w = workloads.get(self.workload)
            object.__setattr__(self, "workload", w.manifest)
            object.__setattr__(self, "stack", dataclasses.replace(self.stack, domu_packages=w.packages))
        if manifest.is_manifest(self.fault):
            object.__setattr__(self, "fault", faults.get(self.fault).manifest)
        if self.disk_cache == DiskCache.AUTO or self.disk_cache_auto:
            object.__setattr__(self, "disk_cache", DiskCache(backends.get(self.stack.backend).disk_cache))
            object.__setattr__(self, "disk_cache_auto", True)

    def disk_cache_reason(self) -> str:
        """Which disk-cache model runs and why, for the record, the summary and the page."""
        b = backends.get(self.stack.backend)
        if self.disk_cache_auto:
            return f"{self.disk_cache} (auto: {b.disk_cache_reason()})"
        return f"{self.disk_cache} (--disk-cache {self.disk_cache})"

    def blind_to_lost_flushes(self) -> str:
        """Why this configuration cannot see a lost flush ("" if it can): an explicit
        ``--disk-cache none`` on a mode whose dom0 keeps no volatile cache."""
        b = backends.get(self.stack.backend)
        if self.disk_cache == DiskCache.NONE and b.writes_through:
            return (f"with --disk-cache none on {b.name} every completed write reaches the outer disk, which the "
                    "power cut keeps: a lost flush cannot be seen (use --disk-cache volatile, or auto)")
        return ""

    def validate(self) -> None:
        w = workloads.get(self.workload)
        f = faults.get(self.fault)
        self.stack.validate()
        f.check(backends.get(self.stack.backend), w)
        if self.iterations < 1:
            raise ConfigError(f"--iterations {self.iterations}: must be at least 1", hint="use --iterations N, N >= 1")
        lo, hi = self.cut_acks
        if not 1 <= lo <= hi:
            raise ConfigError(f"bad --cut-acks range {lo}-{hi}", hint="use LO-HI with 1 <= LO <= HI")
        lo_s, hi_s = self.cut_seconds
        if not 0 < lo_s <= hi_s:
            raise ConfigError(f"bad --cut-seconds range {lo_s}-{hi_s}", hint="use LO-HI with 0 < LO <= HI")
        i, n = self.shard
        if not 1 <= i <= n:
            raise ConfigError(f"bad shard {i}/{n}", hint="use --shard I/N with 1 <= I <= N")
        if i > self.iterations:
            raise ConfigError(f"--shard {i}/{n} selects no iteration of {self.iterations}",
                              hint=f"use at least {n} iterations for {n} shards, or fewer shards")
        if self.crash_subsets < 0:
            raise ConfigError(f"--crash-subsets {self.crash_subsets}: must be 0 or more", hint="use K >= 0")
        if self.flush_points < -1:
            raise ConfigError(f"--flush-points {self.flush_points}: must be -1 (all) or more",
                              hint="use N >= 0, or -1 for every flush point")
        if not 0 <= self.exhaustive_k <= MAX_EXHAUSTIVE_K:
            raise ConfigError(f"--exhaustive-k {self.exhaustive_k}: must be 0..{MAX_EXHAUSTIVE_K}",
                              hint=f"an epoch of K writes has 2**K - 2 subsets; use K <= {MAX_EXHAUSTIVE_K}")
        a = self.atomic_write
        if a and (a < 512 or a & (a - 1) or a > 1 << 20):
            raise ConfigError(f"--atomic-write {a}: must be 0 or a power of two from 512 to 1048576",
                              hint="use the disk's atomic write unit, e.g. --atomic-write 4096")
        if self.states_budget < 0:
            raise ConfigError(f"--states-budget {self.states_budget}: must be 0 (all) or more", hint="use N >= 0")
        if not 1 <= self.jobs <= 64:
            raise ConfigError(f"--jobs {self.jobs}: must be 1..64", hint="use about one lane per two cores")
        if self.time_budget < 0:
            raise ConfigError(f"--time-budget {self.time_budget}: must not be negative", hint="e.g. --time-budget 2h")
        if self.record_size < 16 or self.ack_timeout <= 0:
            raise ConfigError("record size must be at least 16 and the ack timeout positive")

    def resolved(self) -> TortureConfig:
        """This config with its seed drawn (if none was given): what the campaign records and runs."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=random.SystemRandom().randrange(1, 2**48))

    def effective_stack(self) -> StackConfig:
        """The stack this campaign boots: a fault may replace dom0's device model."""
        dm = faults.get(self.fault).device_model
        return dataclasses.replace(self.stack, device_model=dm) if dm else self.stack

    def verify_mode(self) -> VerifyPath:
        """The verification path actually used: auto means fast (it reads every backend's layout)."""
        return VerifyPath.FAST if self.verify == VerifyPath.AUTO else self.verify

    def params(self) -> dict[str, Any]:
        """The workload program's parameters (record size, and sync or journal where it takes them)."""
        return workloads.get(self.workload).params(self.record_size, {"sync": self.sync.value,
                                                                     "journal": self.journal.value})

    def own_files(self) -> dict[str, list[str]]:
        """Your own workload's manifest and program, and fault's manifest: kept in the run directory."""
        w, f = workloads.get(self.workload), faults.get(self.fault)
        return {"workload": [p for p in (w.manifest, w.source) if p], "fault": [f.manifest] if f.manifest else []}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TortureConfig:
        d = dict(d)
        known_stack = {f.name for f in dataclasses.fields(StackConfig)}
        d["stack"] = StackConfig(**{k: v for k, v in d["stack"].items() if k in known_stack})
        for key in ("cut_acks", "cut_seconds", "shard"):
            if key in d:
                d[key] = tuple(d[key])
        d.setdefault("exhaustive_k", 0)     # recorded before --exhaustive-k: every epoch was sampled
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
