"""``xdh reproduce``: verify a kept crash image again (the same verdict is expected), or rerun
the iteration from scratch with its config and seed."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Reset, StackConfig, TortureConfig, VerifyPath
from ..crash import writelog
from ..crash.plan import CutPlan, IterationPlan
from ..crash.states import CrashState, build
from ..errors import ConfigError
from ..images import ImageStore
from ..progress import Progress
from ..report.records import IterationRecord
from ..report.rundir import IterationDir, RunDir
from ..stack import inputs
from ..verify.oracle import Verdict
from ..vm.disks import make_dut
from .checks import job_for, verify_image
from .iteration import run_iteration
from .kit import Kit


@dataclass(frozen=True)
class Reverified:
    name: str
    verdict: Verdict
    same: bool            # the same violations as recorded
    out_dir: Path


def load_plan(it: IterationDir) -> IterationPlan:
    meta = it.read_meta()
    cfg = TortureConfig.from_json(meta["config"])
    return IterationPlan(cfg, meta["index"], meta["seed"], meta.get("name") or it.path.name,
                         CutPlan.from_json(meta["cut"]))


def reverify(it: IterationDir, path: VerifyPath, progress: Progress, store: ImageStore | None = None,
             reset: Reset | None = None) -> Reverified:
    """Verify the iteration's kept crash image again by ``path`` into a new directory beside it. A
    reboot brings the stack up as the run did (its saved stack restored onto the crash image, saved
    once on a machine without it; or a cold boot), unless ``reset`` says."""
    plan = load_plan(it)
    image = it.crash_image()
    if image is None:
        raise ConfigError(f"no crash image in {it.path}",
                          hint="only failing iterations keep one; rerun with --keep-images, or use --rerun")
    out = it.path / f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    how = reset or plan.cfg.reset
    progress(f"re-verifying the crash image of {plan.name} ({_by(path, how)}; {out})")
    # the snapshot only for a reboot: the fast verifier needs none
    cfg = dataclasses.replace(plan.cfg, canary=False, verify=path,
                              reset=how if path == VerifyPath.REBOOT else Reset.BOOT)
    store = store or ImageStore()
    with Kit(cfg, out / "verifier", store, store.pair(cfg.stack.components()), progress) as kit:
        verdict = verify_image(kit.verifier(path, cfg.effective_stack()), image, job_for(plan), out,
                               it.read_acks(), it.read_cut().cut_t, it)
    old = it.read_verdict()
    same = len(old.violations) == len(verdict.violations) and \
        all(a.same_finding(b) for a, b in zip(old.violations, verdict.violations, strict=True))
    return Reverified(plan.name, verdict, same, out)


def _by(path: VerifyPath, reset: Reset) -> str:
    if path == VerifyPath.FAST:
        return "the fast verifier"
    return "the saved stack restored onto it" if reset == Reset.SNAPSHOT else "a cold-booted stack"


def reverify_state(it: IterationDir, name: str, paths: tuple[VerifyPath, ...], progress: Progress,
                   store: ImageStore | None = None, reset: Reset | None = None) -> list[Reverified]:
    """Rebuild one crash state of the volatile model from its recipe (the run's base disk and
    write log, ``states/states.json``) and verify it again by each of ``paths``; each verdict is
    compared with the recorded one."""
    plan = load_plan(it)
    meta, states = it.read_states()
    recorded = {s.name: s for s in states}
    if name not in recorded:
        near = ", ".join(sorted(n for n in recorded if not recorded[n].ok)[:5]) or "none failed"
        raise ConfigError(f"no crash state {name!r} in {it.states}", hint=f"failing states: {near}")
    if not it.write_log.exists():
        raise ConfigError(f"no write log in {it.path}", hint="only failing iterations keep it; use --keep-images")
    state = CrashState.from_recipe(recorded[name].recipe)
    out = it.path / f"reproduce-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    base = out / "base.img"
    if meta.get("base", "blank") == "blank":
        make_dut(base, plan.cfg.stack.dut_size_mib)
    else:
        base = Path(meta["base"])
        if not base.exists():
            raise ConfigError(f"the run's base disk {base} is gone", hint="it lives in the snapshot cache")
    image = build(writelog.parse(it.write_log), base, state, out / "crash.img")
    progress(f"rebuilt crash state {name} of {plan.name} ({len(state.positions)} log entries) in {image}")
    acks = it.read_acks()[:state.required]
    how = (reset or plan.cfg.reset) if VerifyPath.REBOOT in paths else Reset.BOOT
    cfg = dataclasses.replace(plan.cfg, canary=False, verify=VerifyPath.FAST, reset=how)
    store = store or ImageStore()
    results = []
    with Kit(cfg, out / "verifier", store, store.pair(cfg.stack.components()), progress) as kit:
        for path in paths:
            progress(f"verifying it by {_by(path, how)}")
            verdict = verify_image(kit.verifier(path, cfg.effective_stack()), image, job_for(plan),
                                   out / path.value, acks, it.read_cut().cut_t, it, issued=meta.get("issued"))
            # the same verdict: pass or loss, acked ops lost, kinds of violation (the text of a mount
            # error differs between a mount(2) in the batch and mount(8) here)
            rec = recorded[name]
            same = (verdict.ok, verdict.lost_acked) == (rec.ok, rec.lost_acked) and \
                all(not old.kind or old.kind == new.kind      # a schema-1 record kept text only
                    for old, new in zip(rec.violations, verdict.violations, strict=False))
            results.append(Reverified(f"{plan.name} {name} ({path.value})", verdict, same, out))
    return results


@dataclass(frozen=True)
class Rerun:
    """A rerun beside what was recorded: "did my fix fix it"."""

    recorded: IterationRecord | None    # the iteration's result.json (None if it never finished)
    recorded_stack: StackConfig
    record: IterationRecord
    stack: StackConfig


def describe(stack: StackConfig) -> str:
    """The components of a stack, for people: release, your .debs, your domU kernel file."""
    own = f" + domu kernel {stack.domu_kernel}" if stack.domu_kernel else ""
    return stack.components().describe() + own


def other_stack(recorded: StackConfig, release: str | None = None, dom0_debs: tuple[str, ...] = (),
                domu_debs: tuple[str, ...] = (), domu_kernel: str = "", domu_initrd: str = "",
                stock: bool = False) -> StackConfig:
    """The recorded stack with what is given replaced; ``stock`` first drops its own .debs and
    kernel file. Completed again for its release (qdisk-direct's device model)."""
    base = dataclasses.replace(recorded, dom0_debs=(), domu_debs=(), domu_kernel="", domu_initrd="") \
        if stock else recorded
    kernel_files = (domu_kernel, domu_initrd) if domu_kernel else (base.domu_kernel, base.domu_initrd)
    return inputs.completed(dataclasses.replace(
        base, release=release or base.release, dom0_debs=dom0_debs or base.dom0_debs,
        domu_debs=domu_debs or base.domu_debs, domu_kernel=kernel_files[0], domu_initrd=kernel_files[1]))


def rerun(it: IterationDir, progress: Progress, stack: StackConfig | None = None,
          store: ImageStore | None = None) -> Rerun:
    """Run the iteration again from scratch beside its campaign: the same config, seed and cut
    plan, on the recorded stack or on another (another release, your patched .debs or kernel)."""
    plan = load_plan(it)
    before = plan.cfg.stack
    stack = stack or before
    cfg = dataclasses.replace(plan.cfg, canary=False, stack=stack)
    inputs.check_torture(cfg)
    plan = dataclasses.replace(plan, cfg=cfg)
    recorded = it.read_result() if it.result.exists() else None
    out = it.path.parent.parent / f"rerun-{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress(f"rerunning {plan.name} (seed {plan.seed}, cut after {plan.cut.describe()}) on {describe(stack)} "
             f"into {out}")
    run = RunDir(out).create()
    store = store or ImageStore()
    with Kit(cfg, run.verifier, store, store.pair(stack.components()), progress) as kit:
        record = run_iteration(plan, kit, IterationDir(out), progress)
    return Rerun(recorded, before, record, stack)
