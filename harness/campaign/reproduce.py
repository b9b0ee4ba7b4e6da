"""``xdh reproduce``: verify a kept crash image again (the same verdict is expected), or rerun
the iteration from scratch with its config and seed."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Reset, StackConfig, TortureConfig, VerifyPath
from ..crash.plan import CutPlan, IterationPlan
from ..errors import ConfigError
from ..images import ImageStore
from ..progress import Progress
from ..report.records import IterationRecord
from ..report.rundir import IterationDir, RunDir
from ..verify.oracle import Verdict
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


def reverify(it: IterationDir, path: VerifyPath, progress: Progress) -> Reverified:
    """Verify the iteration's kept crash image again by ``path`` into a new directory beside it."""
    plan = load_plan(it)
    image = it.crash_image()
    if image is None:
        raise ConfigError(f"no crash image in {it.path}",
                          hint="only failing iterations keep one; rerun with --keep-images, or use --rerun")
    out = it.path / f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    progress(f"re-verifying the crash image of {plan.name} "
             f"({'fresh stack' if path == VerifyPath.REBOOT else 'fast verifier'}; {out})")
    # a kit without a snapshot: re-verification boots nothing but its verifier
    cfg = dataclasses.replace(plan.cfg, canary=False, verify=path, reset=Reset.BOOT)
    store = ImageStore()
    with Kit(cfg, out / "verifier", store, store.pair(cfg.stack.components()), progress) as kit:
        verdict = verify_image(kit.verifier(path, cfg.effective_stack()), image, job_for(plan), out,
                               it.read_acks(), it.read_cut().cut_t, it)
    old = it.read_verdict()
    same = [v["kind"] + v["what"] + v["found"] for v in old["violations"]] == \
           [v.kind + v.what + v.found for v in verdict.violations]
    return Reverified(plan.name, verdict, same, out)


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
    return dataclasses.replace(base, release=release or base.release, dom0_debs=dom0_debs or base.dom0_debs,
                               domu_debs=domu_debs or base.domu_debs, domu_kernel=kernel_files[0],
                               domu_initrd=kernel_files[1]).completed()


def rerun(it: IterationDir, progress: Progress, stack: StackConfig | None = None) -> Rerun:
    """Run the iteration again from scratch beside its campaign: the same config, seed and cut
    plan, on the recorded stack or on another (another release, your patched .debs or kernel)."""
    plan = load_plan(it)
    before = plan.cfg.stack
    stack = stack or before
    cfg = dataclasses.replace(plan.cfg, canary=False, stack=stack)
    cfg.validate()
    plan = dataclasses.replace(plan, cfg=cfg)
    recorded = it.read_result() if it.result.exists() else None
    out = it.path.parent.parent / f"rerun-{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    progress(f"rerunning {plan.name} (seed {plan.seed}, cut after {plan.cut.describe()}) on {describe(stack)} "
             f"into {out}")
    run = RunDir(out).create()
    store = ImageStore()
    with Kit(cfg, run.verifier, store, store.pair(stack.components()), progress) as kit:
        record = run_iteration(plan, kit, IterationDir(out), progress)
    return Rerun(recorded, before, record, stack)
