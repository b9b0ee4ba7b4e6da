"""One crash iteration: crash run -> crash image(s) -> verification -> an ``IterationRecord``.

The stages hand values forward (``CrashOutcome``, ``Checked``); the record is built once, at
the end, whatever happened, and written to ``result.json``. The crash image is never written
after the cut: every verification runs on an overlay, so ``xdh reproduce`` can verify the
very same state again.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from dataclasses import dataclass

from ..catalog import faults, workloads
from ..config import TortureConfig
from ..crash.ledger import attribute
from ..crash.plan import IterationPlan
from ..crash.run import CrashOutcome, latency_stats, run_until_cut
from ..errors import DiskFull, InfraError, XdhError
from ..progress import Progress
from ..report.records import CutRecord, IterationRecord
from ..report.rundir import IterationDir
from ..status import Status
from ..vm.disks import make_standalone
from ..vm.watch import enospc
from .checks import Checked, check_outcome
from .kit import Kit

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    status: Status
    error: str
    bug: bool = False      # not an XdhError: a bug in xdh (its traceback is kept)


def classify(exc: BaseException) -> Failure:
    """What an exception inside an iteration means for its status (interrupts never get here)."""
    if isinstance(exc, InfraError):
        return Failure(Status.GUEST_DIED, exc.oneline())
    if isinstance(exc, XdhError):
        return Failure(Status.ERROR, exc.oneline())
    return Failure(Status.ERROR, f"{type(exc).__name__}: {exc}".splitlines()[0] + " (a bug in xdh)", bug=True)


@dataclass
class Crashed:
    """An iteration after its crash run: what the check phase needs (or how it already failed)."""

    plan: IterationPlan
    it: IterationDir
    t0: float
    outcome: CrashOutcome | None = None
    failure: Failure | None = None
    full: DiskFull | None = None      # a full disk ended it: the campaign stops after recording it


@dataclass(frozen=True)
class Finished:
    """An iteration's record, and the full disk that ended it (the campaign records the
    iteration, then stops with it)."""

    record: IterationRecord
    full: DiskFull | None = None


def _full(exc: BaseException, kit: Kit, it: IterationDir) -> DiskFull | None:
    """The full disk behind ``exc``, if any: a machine of the kit stopped on one, the harness's
    own write failed with ENOSPC, or a machine said so itself."""
    return exc if isinstance(exc, DiskFull) else kit.machines.disk_full() or enospc(exc, it.path)


def _say(plan: IterationPlan, progress: Progress) -> Progress:
    return lambda msg: progress(f"  {plan.name}: {msg}")


def _failed(exc: Exception, it: IterationDir, say: Progress) -> Failure:
    LOG.debug("iteration failed", exc_info=True)
    failure = classify(exc)
    if failure.bug:
        (it.path / "traceback.txt").write_text(traceback.format_exc())
    say(f"{failure.status.value}: {failure.error}")
    return failure


def crash_phase(plan: IterationPlan, kit: Kit, it: IterationDir, progress: Progress) -> Crashed:
    """The crash run of one iteration (the stack's part). A harness failure (a full disk too) is
    kept in the value for the check phase to record; an interrupt is recorded and re-raised."""
    say = _say(plan, progress)
    it.write_meta(plan.index, plan.seed, plan.name, plan.cut.to_json(), plan.cfg.to_json())
    crashed = Crashed(plan, it, time.monotonic())
    try:
        boot = kit.boot_source(plan.seed)
        crashed.outcome = run_until_cut(plan.cfg, plan.seed, plan.cut, it.crash_paths(boot.dut_name), kit.images,
                                        boot, kit.store, say, kit.machines)
        it.write_cut(CutRecord(crashed.outcome.cut_t, len(crashed.outcome.acks), plan.cut,
                               crashed.outcome.start_entry))
        if crashed.outcome.ledger is not None:
            it.write_ledger(crashed.outcome.ledger)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the iteration's status
        crashed.full = _full(exc, kit, it)
        if crashed.full is not None:    # every later iteration would fail the same way
            crashed.failure = Failure(Status.GUEST_DIED, crashed.full.oneline())
            say(f"{Status.GUEST_DIED.value}: {crashed.full.oneline()}")
        else:
            crashed.failure = _failed(exc, it, say)
    except BaseException:   # KeyboardInterrupt, Interrupted: recorded, never swallowed
        it.write_result(build_record(plan, it, None, None, Failure(Status.ERROR, "interrupted"),
                                     time.monotonic() - crashed.t0))
        raise
    return crashed


def check_phase(crashed: Crashed, kit: Kit, progress: Progress) -> Finished:
    """Verify the crash image and its states (the verifier's part); writes result.json on every
    way out. Runs beside the next iteration's crash phase in a campaign."""
    plan, it = crashed.plan, crashed.it
    say = _say(plan, progress)
    checked: Checked | None = None
    failure, full = crashed.failure, crashed.full
    try:
        if failure is None and crashed.outcome is not None:
            checked = check_outcome(plan, kit, it, crashed.outcome, say)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the iteration's status
        full = _full(exc, kit, it)
        failure = Failure(Status.GUEST_DIED, full.oneline()) if full is not None else _failed(exc, it, say)
    except BaseException:
        failure = Failure(Status.ERROR, "interrupted")
        raise
    finally:
        record = build_record(plan, it, crashed.outcome, checked, failure, time.monotonic() - crashed.t0,
                              tidy=full is None)
        with contextlib.suppress(OSError) if full is not None else contextlib.nullcontext():   # what fits is kept
            it.write_result(record)
    return Finished(record, full)


def iterate(plan: IterationPlan, kit: Kit, it: IterationDir, progress: Progress) -> Finished:
    """Run one iteration into ``it``, both phases in turn. Harness failures end it with a
    status (the campaign goes on); an interrupt is recorded and re-raised."""
    return check_phase(crash_phase(plan, kit, it, progress), kit, progress)


def run_iteration(plan: IterationPlan, kit: Kit, it: IterationDir, progress: Progress) -> IterationRecord:
    """``iterate``, for a single iteration: a full disk is raised (its record is written)."""
    done = iterate(plan, kit, it, progress)
    if done.full is not None:
        raise done.full
    return done.record


def build_record(plan: IterationPlan, it: IterationDir, outcome: CrashOutcome | None,
                 checked: Checked | None, failure: Failure | None, seconds: float,
                 tidy: bool = True) -> IterationRecord:
    """The record of an iteration from what its stages returned; keeps or drops its images
    (``tidy=False``: leaves the files as they are, on a full disk)."""
    cfg: TortureConfig = plan.cfg
    status = failure.status if failure else (checked.status if checked else Status.ERROR)
    secs = {**(outcome.seconds if outcome else {}), **(checked.seconds if checked else {}),
            "total": round(seconds, 1)}
    keep = status != Status.PASS or cfg.keep_images
    crash_image = None
    image = it.crash_image() if tidy else None
    if image is not None:
        if keep:
            make_standalone(image)
            crash_image = str(image)
        else:
            image.unlink()
    if it.write_log.exists() and not keep and tidy:
        it.write_log.unlink()
    for overlay in it.throwaway_overlays() if tidy else []:
        overlay.unlink()   # the crash image itself is kept above
    acks = outcome.acks if outcome else ()
    return IterationRecord(
        index=plan.index, seed=plan.seed, name=plan.name, status=status,
        workload=workloads.get(cfg.workload).name, fault=faults.get(cfg.fault).name,
        backend=cfg.stack.backend, cut=plan.cut, acked=len(acks),
        lost_acked=checked.lost_acked if checked and not failure else 0,
        violations=checked.violations if checked and not failure else [],
        error=failure.error if failure else "", seconds=secs, crash_image=crash_image,
        fsync_latency_us=latency_stats(acks), fault_applied=outcome.fault_applied if outcome else "",
        reset=outcome.reset if outcome else cfg.reset, verify=cfg.verify_mode(),
        verdicts=checked.verdicts if checked else {}, disk_cache=cfg.disk_cache,
        crash_states=checked.crash_states if checked else 1,
        states_generated=checked.states_generated if checked else 1, states=checked.states if checked else [],
        release=cfg.stack.release, flush=attribute(outcome.ledger) if outcome and outcome.ledger else None,
        flush_per_op=outcome.ledger.per_op() if outcome and outcome.ledger else {},
        workload_error=outcome.ended if outcome else None, depth=checked.depth if checked else None)
