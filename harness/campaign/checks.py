"""Verifying a crash run's outcome: the crash image by each path (they must agree), and with
the volatile model every crash state the write log allows. Returns a ``Checked`` value."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import backends, workloads
from ..catalog.workloads import Ack
from ..config import DiskCache, VerifyPath
from ..crash import writelog
from ..crash.plan import IterationPlan
from ..crash.run import CrashOutcome
from ..crash.states import INVARIANT_KINDS, build, plan_states
from ..errors import VerifyError
from ..progress import Progress
from ..report.records import StateRecord
from ..report.rundir import IterationDir
from ..status import Status
from ..verify.guest import Verifier, VerifyJob
from ..verify.oracle import Verdict, judge
from ..vm.kernlog import evidence
from .kit import Kit


@dataclass(frozen=True)
class Checked:
    """Every verification of one crash run, judged."""

    status: Status
    lost_acked: int
    violations: list[str]
    verdicts: dict[str, Any] = field(default_factory=dict)   # per path, when more than one ran
    states: list[dict[str, Any]] = field(default_factory=list)
    crash_states: int = 1
    seconds: dict[str, float] = field(default_factory=dict)


def job_for(plan: IterationPlan) -> VerifyJob:
    cfg = plan.cfg
    return VerifyJob(workloads.get(cfg.workload), plan.seed, cfg.params(), backends.get(cfg.stack.backend).layout)


def verify_image(verifier: Verifier, image: Path, job: VerifyJob, out_dir: Path, acks: Sequence[Ack],
                 cut_t: float, it: IterationDir, own: bool = False, invariants: bool = False) -> Verdict:
    """Verify one crash image, judge it, write its verify.json and verdict.json."""
    report = verifier.verify(image, job, out_dir)
    logs = [*it.kernel_logs(), *report.kernel_logs]
    verdict = judge(job.workload.name, list(acks), report.data, cut_t=cut_t, seed=job.seed,
                    kernel_lines=evidence(logs))
    if invariants:   # no ack applies to an earlier flush point: only integrity counts
        verdict.violations = [v for v in verdict.violations if v.kind in INVARIANT_KINDS]
    it.write_verification(out_dir, report.data, verdict.to_json(), own=own)
    return verdict


def check_outcome(plan: IterationPlan, kit: Kit, it: IterationDir, outcome: CrashOutcome, say: Progress) -> Checked:
    cfg = plan.cfg
    mode = cfg.verify_mode()
    paths = (VerifyPath.FAST, VerifyPath.REBOOT) if mode == VerifyPath.BOTH else (mode,)
    job = job_for(plan)
    seconds: dict[str, float] = {}
    verdicts: dict[str, Verdict] = {}
    for n, path in enumerate(paths):
        t1 = time.monotonic()
        verifier = kit.verifier(path, cfg.effective_stack())
        v = verdicts[path.value] = verify_image(verifier, outcome.dut, job, it.verify_dir(path.value), outcome.acks,
                                                outcome.cut_t, it, own=n == 0)
        seconds[f"verify_{path.value}"] = round(time.monotonic() - t1, 1)
        if len(paths) > 1:
            say(f"{path.value} verification: {'PASS' if v.ok else 'LOSS'} ({v.lost_acked} of {len(outcome.acks)} "
                "acked lost)" + ("; confirming with a full reboot" if n == 0 else ""))
    first = verdicts[paths[0].value]
    by_path: dict[str, Any] = {}
    if len(verdicts) > 1:
        by_path = {p: {"ok": v.ok, "lost_acked": v.lost_acked, "violations": len(v.violations)}
                   for p, v in verdicts.items()}
        if len({(v["ok"], v["lost_acked"], v["violations"]) for v in by_path.values()}) > 1:
            raise VerifyError(f"the fast and reboot verifiers disagree: {by_path}")
    lost, violations = first.lost_acked, [v.line() for v in first.violations]
    states: list[StateRecord] = []
    if cfg.disk_cache == DiskCache.VOLATILE:
        t1 = time.monotonic()
        states = check_states(plan, kit, it, outcome, job, paths[0])
        seconds["verify_states"] = round(time.monotonic() - t1, 1)
        failed = [st for st in states if not st.ok]
        lost = max([lost, *(st.lost_acked for st in failed)])
        violations += [f"[{st.name}] {x}" for st in failed for x in st.violations]
    ok = first.ok and all(st.ok for st in states)
    return Checked(Status.PASS if ok else Status.LOSS, lost, violations, by_path,
                   [s.to_json() for s in states], 1 + len(states), seconds)


def check_states(plan: IterationPlan, kit: Kit, it: IterationDir, outcome: CrashOutcome, job: VerifyJob,
                 path: VerifyPath) -> list[StateRecord]:
    """Build the crash states the write log allows (worst case, subsets, flush points) and verify
    each like a reboot; any violation in any state is a loss."""
    cfg = plan.cfg
    assert outcome.write_log is not None
    log = writelog.parse(outcome.write_log)
    chosen = plan_states(log, plan.seed, cfg.crash_subsets, cfg.flush_points, outcome.start_entry)
    it.states.mkdir(parents=True, exist_ok=True)
    base = kit.boot_source(plan.seed).base_dut(it.states, cfg.stack.dut_size_mib)
    verifier = kit.verifier(path, cfg.effective_stack())
    out: list[StateRecord] = []
    for st in chosen:
        sdir = it.state(st.name)
        sdir.mkdir(parents=True, exist_ok=True)
        img = build(log, base, st, sdir / "crash.img")
        v = verify_image(verifier, img, job, sdir, outcome.acks if st.kind == "acked" else [], outcome.cut_t, it,
                         invariants=st.kind == "invariants")
        if v.ok and not cfg.keep_images:
            img.unlink()
        out.append(StateRecord(st.name, st.kind, st.note, v.ok, v.lost_acked, [x.line() for x in v.violations]))
    summary = {"log_entries": len(log.entries), "flushes": len(log.flushes()),
               "workload_start_entry": outcome.start_entry, "tail_writes": len(log.tail_writes())}
    it.write_states(summary, [s.to_json() for s in out])
    if base.parent == it.states:
        base.unlink()
    return out
