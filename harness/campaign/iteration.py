"""One crash iteration: crash run -> crash image(s) -> verification -> an ``IterationRecord``.

The stages hand values forward (``CrashOutcome``, ``Checked``); the record is built once, at
the end, whatever happened, and written to ``result.json``. The crash image is never written
after the cut: every verification runs on an overlay, so ``xdh reproduce`` can verify the
very same state again.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

from ..config import TortureConfig
from ..crash.plan import IterationPlan
from ..crash.run import CrashOutcome, latency_stats, run_until_cut
from ..errors import InfraError, XdhError
from ..progress import Progress
from ..report.records import CutRecord, IterationRecord
from ..report.rundir import IterationDir
from ..status import Status
from ..vm.disks import make_standalone
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


def run_iteration(plan: IterationPlan, kit: Kit, it: IterationDir, progress: Progress) -> IterationRecord:
    """Run one iteration into ``it``. Harness failures end it with a status (the campaign goes
    on); an interrupt is recorded and re-raised."""

    def say(msg: str) -> None:
        progress(f"  {plan.name}: {msg}")

    cfg = plan.cfg
    it.write_meta(plan.index, plan.seed, plan.name, plan.cut.to_json(), cfg.to_json())
    t0 = time.monotonic()
    outcome: CrashOutcome | None = None
    checked: Checked | None = None
    failure: Failure | None = None
    try:
        boot = kit.boot_source(plan.seed)
        outcome = run_until_cut(cfg, plan.seed, plan.cut, it.crash_paths(boot.dut_name), kit.images, boot,
                                kit.store, say)
        it.write_cut(CutRecord(outcome.cut_t, len(outcome.acks), plan.cut.to_json(), outcome.start_entry))
        checked = check_outcome(plan, kit, it, outcome, say)
    except Exception as exc:  # one broken iteration must not end the campaign
        LOG.debug("iteration failed", exc_info=True)
        failure = classify(exc)
        if failure.bug:
            (it.path / "traceback.txt").write_text(traceback.format_exc())
        say(f"{failure.status.value}: {failure.error}")
    except BaseException:   # KeyboardInterrupt, Interrupted: recorded, never swallowed
        failure = Failure(Status.ERROR, "interrupted")
        raise
    finally:
        record = build_record(plan, kit, it, outcome, checked, failure, time.monotonic() - t0)
        it.write_result(record)
    return record


def build_record(plan: IterationPlan, kit: Kit, it: IterationDir, outcome: CrashOutcome | None,
                 checked: Checked | None, failure: Failure | None, seconds: float) -> IterationRecord:
    """The record of an iteration from what its stages returned; keeps or drops its images."""
    cfg: TortureConfig = plan.cfg
    status = failure.status if failure else (checked.status if checked else Status.ERROR)
    secs = {**(outcome.seconds if outcome else {}), **(checked.seconds if checked else {}),
            "total": round(seconds, 1)}
    keep = status != Status.PASS or cfg.keep_images
    crash_image = None
    image = it.crash_image()
    if image is not None:
        if keep:
            make_standalone(image)
            crash_image = str(image)
        else:
            image.unlink()
    if it.write_log.exists() and not keep:
        it.write_log.unlink()
    for overlay in it.throwaway_overlays():
        overlay.unlink()   # the crash image itself is kept above
    acks = outcome.acks if outcome else ()
    return IterationRecord(
        index=plan.index, seed=plan.seed, name=plan.name, status=status, workload=cfg.workload, fault=cfg.fault,
        backend=cfg.stack.backend, cut=plan.cut.to_json(), acked=len(acks),
        lost_acked=checked.lost_acked if checked and not failure else 0,
        violations=checked.violations if checked and not failure else [],
        error=failure.error if failure else "", seconds=secs, crash_image=crash_image,
        fsync_latency_us=latency_stats(acks), fault_applied=outcome.fault_applied if outcome else "",
        reset=kit.reset.value, verify=cfg.verify_mode().value,
        verdicts=checked.verdicts if checked else {}, disk_cache=cfg.disk_cache.value,
        crash_states=checked.crash_states if checked else 1,
        states_generated=checked.states_generated if checked else 1, states=checked.states if checked else [])
