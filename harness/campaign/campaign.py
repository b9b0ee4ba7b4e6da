"""A torture campaign: the canary (a positive control that must be caught), then this shard's
iterations, all on one kit; the summary is written on every way out, an interrupt included."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import faults, workloads
from ..config import CutMode, Sync, TortureConfig, VerifyPath
from ..crash.plan import IterationPlan, shard_indices
from ..errors import DiskFull, Interrupted, XdhError
from ..images import ImagePair, ImageStore
from ..jsonio import utc_stamp
from ..progress import Progress, Step
from ..report import summary as summary_mod
from ..report.records import CampaignSummary, IterationRecord
from ..report.rundir import RunDir
from ..stack import inputs
from ..status import ExitCode, Status, error_exit
from ..verify.fast import FastVerifier
from ..vm.watch import enospc
from . import space
from .budget import Budget
from .iteration import Failure, Finished, check_phase, crash_phase, iterate, run_iteration
from .kit import Kit


@dataclass(frozen=True)
class CampaignResult:
    """What a campaign returns: its records, the summary written to summary.json, the exit code."""

    canary: IterationRecord | None
    iterations: list[IterationRecord]
    summary: CampaignSummary

    @property
    def exit_code(self) -> ExitCode:
        return self.summary.exit_code


def canary_config(cfg: TortureConfig) -> TortureConfig:
    """The positive control: drop-flush on append, same stack, a short run. Verified by a full
    reboot (and, on the fast path, by the fast verifier too, which must agree)."""
    both = cfg.verify_mode() == VerifyPath.FAST
    return dataclasses.replace(cfg, workload="append", fault="drop-flush", cut=CutMode.ACKS, cut_acks=(60, 120),
                               sync=Sync.FSYNC, keep_images=False,
                               verify=VerifyPath.BOTH if both else VerifyPath.REBOOT, stack=cfg.effective_stack())


def run_canary(cfg: TortureConfig, kit: Kit, run: RunDir, progress: Progress) -> IterationRecord:
    """The canary's record (a full disk is raised, its record written)."""
    progress("canary: drop-flush on append must be caught, else this configuration proves nothing")
    c = run_iteration(IterationPlan.make(canary_config(cfg), -1, "canary"), kit, run.canary, progress)
    both = ", fast and reboot verifiers agree" if c.verdicts else ""
    progress(f"canary: {c.status.upper()} ({c.acked} acked, {c.lost_acked} lost{both}, "
             f"{c.seconds.get('total', 0):.0f} s)" + (f": {c.error}" if c.error else ""))
    return c


def pipeline(cfg: TortureConfig, kit: Kit, run: RunDir, indices: list[int], progress: Progress,
             finished: Callable[[IterationRecord], None], budget: Budget | None = None) -> None:
    """One lane: the crash run of iteration i+1 beside the verification of iteration i (the
    stack and the fast verifier are two VMs, about a core each). On an interrupt the verifiers
    stop at once (the check under way ends with them) and the interrupt goes on up. A reboot
    verification is a second whole stack: it runs in turn, not beside (measured: two stacks
    at once under TCG on 2 cores take longer than one after the other)."""
    budget = budget or Budget(0)
    if cfg.verify_mode() != VerifyPath.FAST:
        for idx in indices:
            if not budget.allows(idx):
                continue
            done = iterate(IterationPlan.make(cfg, idx), kit, run.iteration(idx), progress)
            finished(done.record)
            if done.full is not None:
                raise done.full
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="check")
    pending: Future[Finished] | None = None

    def collect() -> None:
        nonlocal pending
        if pending is not None:
            done = pending.result()     # an interrupt while waiting leaves it pending: handled below
            pending = None
            finished(done.record)
            if done.full is not None:
                raise done.full
    try:
        for idx in indices:
            if not budget.allows(idx):
                continue
            crashed = crash_phase(IterationPlan.make(cfg, idx), kit, run.iteration(idx), progress)
            try:
                collect()
            except DiskFull as full:        # the last check hit a full disk: this crash run stops with it
                crashed.full = crashed.full or full
                crashed.failure = crashed.failure or Failure(Status.GUEST_DIED, full.oneline())
            if crashed.full is not None:     # recorded by its check phase, then the campaign stops
                finished(check_phase(crashed, kit, progress).record)
                raise crashed.full
            pending = pool.submit(check_phase, crashed, kit, progress)
        collect()
    except BaseException:
        # SIGKILL only: a QMP quit from this thread would race the checker's QMP on the verifier
        kit.machines.kill_all()
        if pending is not None:     # the check under way ends with its verifier: recorded as interrupted
            r = pending.result().record
            if r.status not in (Status.PASS, Status.LOSS) and not r.error.startswith("disk full"):
                r = dataclasses.replace(r, status=Status.ERROR, error="interrupted")
                run.iteration(r.index).write_result(r)
            finished(r)
        kit.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_lanes(cfg: TortureConfig, kit: Kit, run: RunDir, indices: list[int], progress: Progress,
              finished: Callable[[IterationRecord], None], budget: Budget | None = None) -> None:
    """``--jobs N``: N pipelines, each on its own stack and fast verifier, iterations dealt
    round-robin. An interrupt kills every machine of every lane (``Machines.kill_all``)."""
    if cfg.jobs <= 1 or len(indices) <= 1:
        pipeline(cfg, kit, run, indices, progress, finished, budget)
        return
    lanes = [kit.lane(n) for n in range(min(cfg.jobs, len(indices)))]

    def lane(n: int) -> None:
        with lanes[n]:
            pipeline(cfg, lanes[n], run, indices[n::len(lanes)], progress, finished, budget)

    pool = ThreadPoolExecutor(len(lanes), thread_name_prefix="lane")
    try:
        for f in [pool.submit(lane, n) for n in range(len(lanes))]:
            f.result()
    except BaseException:
        kit.machines.kill_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for k in lanes:
            k.stop()


def _prepared(cfg: TortureConfig, run_dir: Path, versions: dict[str, Any]) -> RunDir:
    """The run directory, checked for room, with the config, the versions and your own files."""
    run = RunDir(run_dir).create()
    space.check(cfg, run_dir, len(shard_indices(cfg.iterations, cfg.shard)))
    run.write_config(cfg.to_json(), cfg.seed, versions | {"workload": workloads.get(cfg.workload).describe()})
    run.keep_own_files(cfg.own_files())
    return run


def _announce(cfg: TortureConfig, n: int, run_dir: Path, progress: Progress) -> None:
    """The campaign in one line; a configuration that cannot see a lost flush said before
    anything boots (the canary then proves it: exit 3)."""
    w, f = workloads.get(cfg.workload), faults.get(cfg.fault)
    progress(f"campaign seed {cfg.seed}: {n} iterations of {w.name} with fault {f.name} on "
             f"{cfg.stack.backend} (shard {cfg.shard[0]}/{cfg.shard[1]}; reset {cfg.reset}, verify "
             f"{cfg.verify_mode()}); disk cache {cfg.disk_cache_reason()}; run directory {run_dir}")
    blind = cfg.blind_to_lost_flushes()
    if blind:
        progress(f"warning: {blind}")


def _step(r: IterationRecord, done: int, total: int, elapsed: float) -> Step:
    """The progress line of a finished iteration, with the campaign's ETA."""
    eta = elapsed / done * (total - done)
    detail = r.detail()
    states = f", {r.crash_states} states" if r.crash_states > 1 else ""
    return Step(done, total, f"{r.name} seed={r.seed} {r.status.upper()} acked={r.acked} lost={r.lost_acked}"
                             f"{states} ({r.total_seconds:.0f} s, ETA {eta / 60:.0f} min)"
                + (f": {detail[:120]}" if detail else ""))


def run_campaign(cfg: TortureConfig, run_dir: Path, progress: Progress, versions: dict[str, Any],
                 verifier: FastVerifier | None = None, images: ImagePair | None = None,
                 store: ImageStore | None = None) -> CampaignResult:
    """The main job: canary, then this shard's iterations; writes everything to ``run_dir``.
    ``verifier``: a running fast verifier to use instead of starting one (it is left running).
    ``images``: the images to pin (default: the current ones). ``store``: the image cache (the
    command's; default: the environment's)."""
    inputs.check_torture(cfg)
    cfg = cfg.resolved()
    assert cfg.seed is not None
    run = _prepared(cfg, run_dir, versions)
    indices = shard_indices(cfg.iterations, cfg.shard)
    store = store or ImageStore()
    # every boot of the campaign uses these images, even if a rebuild happens meanwhile
    images = images or store.pair(cfg.stack.components())
    _announce(cfg, len(indices), run_dir, progress)
    t0, started = time.monotonic(), utc_stamp()
    canary: IterationRecord | None = None
    records: list[IterationRecord] = []
    first_loss: dict[str, float] = {}
    kit = Kit(cfg, run.verifier, store, images, progress, verifier)
    budget = Budget(cfg.time_budget)
    lock = threading.Lock()
    try:
        with kit:
            if cfg.canary:
                canary = run_canary(cfg, kit, run, progress)
                budget.took(canary.total_seconds)
                if canary.status == Status.LOSS:
                    first_loss["canary"] = round(time.monotonic() - t0, 1)
            done = 0

            def finished(r: IterationRecord) -> None:
                nonlocal done
                budget.took(r.total_seconds, r.index)
                with lock:
                    records.append(r)
                    done += 1
                    if r.status == Status.LOSS and "iteration" not in first_loss:
                        first_loss["iteration"] = round(time.monotonic() - t0, 1)
                    progress(_step(r, done, len(indices), time.monotonic() - t0))

            if canary is None or canary.status == Status.LOSS:
                run_lanes(cfg, kit, run, indices, progress, finished, budget)
                if budget.skipped:
                    progress(f"stopped in time: {budget.shortfall(len(indices))}")
            records.sort(key=lambda r: r.index)
    finally:  # also on Ctrl-C or SIGTERM: what ran so far is summarized
        summary = summary_mod.summarize(run_dir, cfg.to_json(), cfg.seed, canary, records, time.monotonic() - t0,
                                        first_loss_seconds=first_loss, setup_seconds=kit.setup_seconds,
                                        versions=versions, snapshot=kit.snapshot.key if kit.snapshot else "",
                                        disk_cache=cfg.disk_cache_reason(), shortfall=budget.shortfall(len(indices)),
                                        started_at=started)
        summary = ended_by(summary, sys.exc_info()[1])
        _write_summary(summary, run_dir, progress)
    return CampaignResult(canary, records, summary)


def ended_by(summary: CampaignSummary, exc: BaseException | None) -> CampaignSummary:
    """The summary of a campaign that ``exc`` ended early: its exit code is then the CLI's, not a
    clean 0 computed from the iterations that ran."""
    if exc is None:
        return summary
    if isinstance(exc, XdhError):
        text = exc.oneline()
    elif isinstance(exc, KeyboardInterrupt | Interrupted):
        text = str(exc) or "interrupted"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return summary.ended(text, error_exit(exc))


def _write_summary(summary: CampaignSummary, run_dir: Path, progress: Progress) -> None:
    try:
        summary_mod.write(summary, run_dir)
    except OSError as exc:     # a full disk: the error under way (DiskFull) is the one to report
        if enospc(exc, run_dir) is None:
            raise
        progress(f"the summary did not fit in {run_dir}: {exc}")
