"""What a campaign needs, known before it starts. Space: the pre-flight check, so that a
campaign that cannot fit is stopped in one line instead of pausing QEMU on ENOSPC halfway
(which the I/O watch then reports). Time: an estimate from the measured figures of
docs/performance.md, for ``xdh torture --dry-run``."""

from __future__ import annotations

from pathlib import Path

from ..catalog import backends
from ..config import CutMode, DiskCache, Reset, TortureConfig, VerifyPath
from ..crash.plan import PER_IMAGE_FLUSH_POINTS, CutPlan
from ..errors import DiskFull
from ..vm.watch import free_mib, mount_point

BASE_MIB = 256            # logs, the verifier's overlays, states.json, summaries
PER_ITERATION_MIB = 64    # a crash run's disk-under-test overlay (measured: 20-50 MiB for 30-200 acks)


def needed_mib(cfg: TortureConfig, iterations: int | None = None) -> int:
    """About what the run directory takes: every iteration's crash image where they are kept
    (--keep-images, or a fault, where iterations are expected to fail), else two per lane in
    flight; the write log doubles it with the volatile model."""
    per = PER_ITERATION_MIB * (2 if cfg.disk_cache == DiskCache.VOLATILE else 1)
    n = cfg.iterations if iterations is None else iterations      # this shard's
    kept = n if cfg.keep_images or cfg.fault != "none" else min(n, 2 * cfg.jobs)
    return BASE_MIB + per * (kept + (1 if cfg.canary else 0))


def check(cfg: TortureConfig, run_dir: Path, iterations: int | None = None) -> None:
    """Raise DiskFull if the run directory's file system has less room than the campaign (this
    shard: ``iterations``) needs."""
    n = cfg.iterations if iterations is None else iterations
    need, free = needed_mib(cfg, n), free_mib(run_dir)
    if free < need:
        raise DiskFull(f"not enough space for this campaign: the file system at {mount_point(run_dir)} has "
                       f"{free:.0f} MiB free, and {n} iterations need about {need} MiB",
                       hint="free space there, or pass --run-dir on a larger file system")


# --- time: docs/performance.md's figures (2-core TCG machine, built-in workloads) -------------
# Estimates to plan with, not promises: KVM is several times faster; your own workload has its own pace.
CRASH_RUN_S = {Reset.SNAPSHOT: 7.2, Reset.BOOT: 85.0}   # up (restore 4.6 s / boot 82.6 s) and teardown
VERIFY_S = {VerifyPath.FAST: 2.0, VerifyPath.REBOOT: 84.9}  # hot-plug into the verifier / a full reboot
WORKLOAD_S_PER_ACK = 3.6 / 110    # the workload until the cut: 3.6 s for a mean of 110 acks (20-200)
STATE_S = 0.13                    # one crash state in the batch (fast verifier, raw disk)
PER_IMAGE_STATE_S = 3.0           # one crash state built on the host and hot-plugged alone (qdisk-qcow2)
STATES_PER_ACK = 475 / 110        # the volatile model: 475 states for a mean of 110 acks (append, 3 subsets)
FLUSH_STATES_PER_ACK = 2          # each fsync: ext4's journal write, then its commit
TORN_FACTOR = 222 / 137           # --atomic-write 4096 on append: 85 torn states beside 137 others
ONCE_S = {"snapshot": 90.0, "verifier": 30.0}   # saved once per configuration / domU image, then cached


def states_batched(cfg: TortureConfig) -> bool:
    """Crash states verified in one batch in the fast verifier (else one image at a time)."""
    return cfg.verify_mode() in (VerifyPath.FAST, VerifyPath.BOTH) and backends.get(cfg.stack.backend).layout == "raw"


def flush_points(cfg: TortureConfig) -> int:
    """Flush states per iteration the volatile model verifies (-1: every one of the write log)."""
    return cfg.flush_points if states_batched(cfg) or cfg.flush_points >= 0 else PER_IMAGE_FLUSH_POINTS


def iteration_seconds(cfg: TortureConfig, cut: CutPlan) -> float:
    """About how long one iteration with this cut takes (the crash run, its verification and,
    with the volatile model, its crash states)."""
    acks = cut.after_acks if cut.mode == CutMode.ACKS and cut.after_acks is not None else 110
    workload = WORKLOAD_S_PER_ACK * acks if cut.mode == CutMode.ACKS else float(cut.after_seconds or 0)
    mode = cfg.verify_mode()
    paths = (VerifyPath.FAST, VerifyPath.REBOOT) if mode == VerifyPath.BOTH else (mode,)
    seconds = CRASH_RUN_S[cfg.reset] + workload + sum(VERIFY_S[p] for p in paths)
    if cfg.disk_cache == DiskCache.VOLATILE:
        states = STATES_PER_ACK * acks * (1 + cfg.crash_subsets) / 4 * (TORN_FACTOR if cfg.atomic_write else 1)
        points = flush_points(cfg)
        if 0 <= points < FLUSH_STATES_PER_ACK * acks:
            states *= (points + 1) / (FLUSH_STATES_PER_ACK * acks)
        if cfg.states_budget:
            states = min(states, cfg.states_budget)
        per = STATE_S if states_batched(cfg) else (VERIFY_S[paths[0]] if paths[0] == VerifyPath.REBOOT
                                                      else PER_IMAGE_STATE_S)
        seconds += states * per
    return seconds


def once_seconds(cfg: TortureConfig) -> float:
    """What a first campaign of this configuration adds, at most: the stack and the verifier
    saved once (nothing when both are cached)."""
    fast = cfg.verify_mode() in (VerifyPath.FAST, VerifyPath.BOTH)
    return (ONCE_S["snapshot"] if cfg.reset == Reset.SNAPSHOT else 0.0) + (ONCE_S["verifier"] if fast else 0.0)
