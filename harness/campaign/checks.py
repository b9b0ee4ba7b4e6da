"""Verifying a crash run's outcome: the crash image by each path (they must agree), and with
the volatile model every crash state the write log allows. Returns a ``Checked`` value."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import backends, workloads
from ..catalog.workloads import Ack
from ..config import DiskCache, VerifyPath
from ..crash import writelog
from ..crash.plan import PER_IMAGE_FLUSH_POINTS, IterationPlan
from ..crash.run import CrashOutcome
from ..crash.states import CrashState, StatePlan, ack_bounds, build, plan_states, within_budget
from ..errors import VerifyError
from ..progress import Progress
from ..report.records import StateRecord, StatesDepth
from ..report.rundir import IterationDir
from ..status import Status
from ..verify.batch import LogView, StateJob, verify_kind, verify_states
from ..verify.fast import FastVerifier
from ..verify.guest import Verifier, VerifyJob
from ..verify.oracle import Verdict, Violation, judge
from ..verify.tightness import Slack, flush_lag, found_prefix
from ..vm.disks import is_blank, make_dut
from ..vm.kernlog import evidence
from .kit import Kit


@dataclass(frozen=True)
class Checked:
    """Every verification of one crash run, judged."""

    status: Status
    lost_acked: int
    violations: list[Violation]
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)   # per path, when more than one ran
    states: list[StateRecord] = field(default_factory=list)     # the failing ones (all: states.json)
    crash_states: int = 1          # distinct states verified, the cut included
    seconds: dict[str, float] = field(default_factory=dict)
    states_generated: int = 1
    depth: StatesDepth | None = None     # volatile: coverage, slack, the batch's time by phase


def job_for(plan: IterationPlan) -> VerifyJob:
    cfg = plan.cfg
    return VerifyJob(workloads.get(cfg.workload), plan.seed, cfg.params(), backends.get(cfg.stack.backend).layout)


MAX_STATE_LINES = 20      # failing states named in the record (all of them: states/states.json)


def verify_image(verifier: Verifier, image: Path, job: VerifyJob, out_dir: Path, acks: Sequence[Ack],
                 cut_t: float, it: IterationDir, own: bool = False, issued: int | None = None) -> Verdict:
    """Verify one crash image, judge it, write its verify.json and verdict.json."""
    report = verifier.verify(image, job, out_dir)
    logs = [*it.kernel_logs(), *report.kernel_logs]
    verdict = judge(job.workload, list(acks), report.data, cut_t=cut_t, seed=job.seed,
                    kernel_lines=evidence(logs), issued=issued)
    it.write_verification(out_dir, report.data, verdict, own=own)
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
        elif not v.ok:      # the first violation, as soon as it is known
            say(f"crash image after the cut: LOSS: {v.violations[0].line()[:160]}")
    first = verdicts[paths[0].value]
    by_path: dict[str, dict[str, Any]] = {}
    if len(verdicts) > 1:
        by_path = {p: {"ok": v.ok, "lost_acked": v.lost_acked, "violations": len(v.violations)}
                   for p, v in verdicts.items()}
        if len({(v["ok"], v["lost_acked"], v["violations"]) for v in by_path.values()}) > 1:
            raise VerifyError(f"the fast and reboot verifiers disagree: {by_path}")
    lost, violations = first.lost_acked, list(first.violations)
    states: list[StateRecord] = []
    counts: dict[str, Any] = {"generated": 0, "distinct": 0}
    depth = None
    if cfg.disk_cache == DiskCache.VOLATILE:
        t1 = time.monotonic()
        states, counts, depth = check_states(plan, kit, it, outcome, job, paths[0], say)
        seconds["verify_states"] = round(time.monotonic() - t1, 1)
        failed = [st for st in states if not st.ok]
        lost = max([lost, *(st.lost_acked for st in failed)])
        violations += [dataclasses.replace(x, state=st.name) for st in failed[:MAX_STATE_LINES]
                       for x in st.violations[:2]]
        if failed:
            say(f"crash states: {len(failed)} of {counts['generated']} fail ({counts['distinct']} distinct verified)")
    ok = first.ok and all(st.ok for st in states)
    return Checked(Status.PASS if ok else Status.LOSS, lost, violations, by_path,
                   [s for s in states if not s.ok][:MAX_STATE_LINES], 1 + counts["distinct"], seconds,
                   1 + counts["generated"], depth)


STATES_PROGRESS_SECONDS = 30.0   # a line about a long batch at most this often


@dataclass
class _StateJudge:
    """Judges crash states of one crash run, each with its own acks; says the first loss at once."""

    job: VerifyJob
    outcome: CrashOutcome
    first_of: dict[str, str]        # content key -> the state verified for it
    say: Progress
    failed_once: bool = False

    @property
    def issued(self) -> int:
        return len(self.outcome.acks) + 1

    def holds(self, acks: int, report: dict[str, Any]) -> Verdict:
        return judge(self.job.workload, list(self.outcome.acks[:acks]), report, cut_t=self.outcome.cut_t,
                     seed=self.job.seed, issued=self.issued)

    def __call__(self, st: CrashState, report: dict[str, Any]) -> StateRecord:
        v = self.holds(st.required, report)
        if v.violations and not self.failed_once:
            self.failed_once = True
            self.say(f"crash state {st.name}: LOSS: {v.violations[0].line()[:160]}")
        return StateRecord(st.name, st.recipe(), v.ok, v.lost_acked, v.violations,
                           "" if self.first_of[st.key] == st.name else self.first_of[st.key])

    def slack(self, st: CrashState, report: dict[str, Any], flushes: list[int], bounds: list[int]) -> tuple[int, int]:
        """Acks found in a passing flush state beyond the required ones, and the flushes from the
        state's to the one the oracle waits for the last of them (``verify.tightness``)."""
        found = found_prefix(lambda k: self.holds(k, report).ok, st.required, len(self.outcome.acks))
        return found - st.required, flush_lag(flushes, st.flush, bounds[found - 1]) if found > st.required else 0


def _batch(fast: FastVerifier, base: Path, log: writelog.WriteLog, sp: StatePlan, job: VerifyJob, it: IterationDir,
           resident: bool, judged: _StateJudge, say: Progress) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """The distinct states verified in one batch in the fast verifier, each judged as it comes
    (a loss is said at once); their reports by content key and the guest's seconds by phase."""
    reports: dict[str, dict[str, Any]] = {}
    phases: dict[str, float] = {}
    jobs = [StateJob(st.flush, st.extra, st.torn) for st in sp.distinct]
    skipped = f", {sp.coverage.skipped} over --states-budget skipped" if sp.coverage.skipped else ""
    say(f"crash states: {sp.summary()['generated']} from {len(log.flushes())} flushes, {len(jobs)} distinct"
        f"{skipped}, verifying")
    last_said = time.monotonic()
    for res in verify_states(fast, base, LogView(log.path, log.sectorsize, log.rows()), jobs, job, it.states,
                             resident=resident):
        st = sp.distinct[res.index]
        reports[st.key] = res.report
        for k, v in res.phases.items():
            phases[k] = phases.get(k, 0.0) + v
        judged(st, res.report)
        if time.monotonic() - last_said > STATES_PROGRESS_SECONDS:
            last_said = time.monotonic()
            say(f"crash states: {res.index + 1} of {len(jobs)} verified")
    return reports, phases


def check_states(plan: IterationPlan, kit: Kit, it: IterationDir, outcome: CrashOutcome, job: VerifyJob,
                 path: VerifyPath, say: Progress) -> tuple[list[StateRecord], dict[str, Any], StatesDepth]:
    """Every crash state the write log allows (``crash.states``), each distinct one verified once
    (batched in the fast verifier; else one image at a time) and every one judged with its own
    acks; any violation in any state is a loss. Returns the records, the counts and the depth
    (coverage, the oracle's slack in the flush states, the batch's time by phase)."""
    cfg = plan.cfg
    assert outcome.write_log is not None
    log = writelog.parse(outcome.write_log)
    batched = path == VerifyPath.FAST and job.layout == "raw"
    points = cfg.flush_points if batched or cfg.flush_points >= 0 else PER_IMAGE_FLUSH_POINTS
    sp = within_budget(plan_states(log, outcome.acks, plan.seed, cfg.crash_subsets, points, outcome.start_entry,
                                   cfg.exhaustive_k, cfg.atomic_write), cfg.states_budget, plan.seed)
    it.states.mkdir(parents=True, exist_ok=True)
    base = outcome.base_dut or make_dut(it.states / "base.img", cfg.stack.dut_size_mib)   # a boot: blank
    judged = _StateJudge(job, outcome, {st.key: st.name for st in sp.distinct}, say)
    phases: dict[str, float] = {}
    if batched:
        fast = kit.verifier(path, cfg.effective_stack())
        assert isinstance(fast, FastVerifier)
        reports, phases = _batch(fast, base, log, sp, job, it, cfg.resident_verify, judged, say)
    else:
        reports = {}
        verifier = kit.verifier(path, cfg.effective_stack())
        for st in sp.distinct:
            sdir = it.state(st.name)
            sdir.mkdir(parents=True, exist_ok=True)
            img = build(log, base, st, sdir / "crash.img")
            reports[st.key] = verifier.verify(img, job, sdir).data
            img.unlink()
    out = [judged(st, reports[st.key]) for st in sp.states]
    flushes, bounds = log.flushes(), ack_bounds(log, outcome.acks)
    slack = [judged.slack(st, reports[st.key], flushes, bounds) for st, rec in zip(sp.states, out, strict=True)
             if rec.ok and st.is_flush_state]
    depth = StatesDepth(sp.coverage, Slack.of(slack), {k: round(v, 2) for k, v in phases.items()},
                        verify_kind(job, cfg.resident_verify) if batched else "an image per state")
    failing = [r for r in out if not r.ok]
    counts: dict[str, Any] = {**sp.summary(), "log_entries": len(log.entries), "flushes": len(flushes),
              "workload_start_entry": outcome.start_entry, "failing": len(failing),
              "base": "blank" if is_blank(base) else str(base), "issued": judged.issued}
    it.write_states(counts | {"depth": depth.to_json()}, out, evidence(it.kernel_logs()) if failing else [])
    if base.parent == it.states:
        base.unlink()
    return out, counts, depth
