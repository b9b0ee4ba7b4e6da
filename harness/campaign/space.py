"""The pre-flight check of free space: a campaign that cannot fit is stopped before it starts,
in one line, instead of pausing QEMU on ENOSPC halfway (which the I/O watch then reports)."""

from __future__ import annotations

from pathlib import Path

from ..config import DiskCache, TortureConfig
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
