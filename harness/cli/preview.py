"""What a command would do, shown without booting anything: ``xdh check`` reads workload and
fault manifests as a campaign reads them; ``xdh torture --dry-run`` prints a campaign's plan,
made by the functions a real run uses (``IterationPlan.make``, ``canary_config``,
``shard_indices``), so its seeds and cut points are the run's."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..campaign import space
from ..campaign.campaign import canary_config
from ..catalog import faults, manifest, workloads
from ..catalog.faults import Fault
from ..catalog.workloads import Workload
from ..config import DiskCache, TortureConfig, VerifyPath
from ..crash.plan import IterationPlan, shard_indices
from ..errors import ConfigError, ImageError
from ..images import ImageStore
from ..report.rundir import dumps
from ..status import ExitCode
from ..vm.watch import free_text

# --- xdh check --------------------------------------------------------------------------------
WORKLOAD_ONLY = workloads.MANIFEST_KEYS - faults.MANIFEST_KEYS     # program, model, params, ...
FAULT_ONLY = faults.MANIFEST_KEYS - workloads.MANIFEST_KEYS        # step, outer, device_model


def manifest_kind(text: str) -> str:
    """``workload`` or ``fault``: a built-in's registry, else the keys of the manifest (a file
    that cannot be read is taken as a workload manifest: reading it again gives the error)."""
    if not manifest.is_manifest(text):
        return "fault" if text in faults.FAULTS and text not in workloads.WORKLOADS else "workload"
    try:
        keys = set(tomllib.loads(Path(text).expanduser().read_text()))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "workload"
    return "fault" if keys & FAULT_ONLY and not keys & WORKLOAD_ONLY else "workload"


def describe_workload(w: Workload) -> str:
    given = [f"--{k.replace('_', '-')} {v}" for k, v in (w.given or w.fixed)]
    params = " ".join(given + [f"--{o} (the campaign's)" for o in w.options]) or "-"
    where = "a filesystem at /mnt/dut" if w.needs_fs else "the raw /dev/xvdb"
    return (f"workload {w.name}: program {w.program}, model {w.model}, params {params}, packages "
            f"{', '.join(w.packages) or '-'}; on {where}{', with setup' if w.setup else ''}"
            f"{', verify-many' if w.verify_many else ''}"
            + (f' ("{w.summary}")' if w.summary else ""))


def describe_fault(f: Fault) -> str:
    steps = ", ".join(f"{s.where.value} {s.when.value}" for s in f.steps) or "-"
    outer = ", ".join(x for x, on in (("no_flush", f.outer_no_flush), ("blkdebug", f.outer_blkdebug)) if on) or "-"
    return (f"fault {f.name}: {len(f.steps)} step{'' if len(f.steps) == 1 else 's'} ({steps}), outer disk "
            f"{outer}, device model {f.device_model or '-'}" + (f' ("{f.summary}")' if f.summary else ""))


def cmd_check(args: argparse.Namespace) -> int:
    """One line per manifest, ``ok`` and what it holds or the error; exit 0 if all are ok, else 2."""
    bad = 0
    for text in args.manifests:
        try:
            line = (describe_fault(faults.get(text)) if manifest_kind(text) == "fault"
                    else describe_workload(workloads.get(text)))
            print(f"{text}: ok: {line}")
        except ConfigError as exc:
            bad += 1
            print(f"{text}: error: {exc.oneline()}")
    return ExitCode.USAGE if bad else ExitCode.CLEAN


# --- xdh torture --dry-run ---------------------------------------------------------------------
@dataclass(frozen=True)
class CampaignPlan:
    """What ``run_campaign`` would do with this config: the canary, this shard's iterations (each
    with its seed and cut point), the crash-state model, and the estimates."""

    cfg: TortureConfig
    seed_given: bool
    canary: IterationPlan | None
    iterations: list[IterationPlan]
    canary_seconds: float     # space.iteration_seconds of the canary ...
    seconds: float            # ... and of this shard's iterations
    once_seconds: float       # the saved stack and verifier, if not cached yet
    space_mib: int
    images: str               # "ready", or why not

    def states(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.disk_cache == DiskCache.NONE:
            return {"disk_cache": "none", "states": "the crash image at the cut (the host keeps every completed write)"}
        points = space.flush_points(cfg)
        return {"disk_cache": "volatile", "flush_points": "every flush of the write log" if points < 0
                else f"{points} sampled flush states (and the last)", "crash_subsets": cfg.crash_subsets,
                "exhaustive_k": cfg.exhaustive_k, "atomic_write": cfg.atomic_write or None,
                "states_budget": cfg.states_budget or None,
                "verified": "in one batch in the fast verifier" if space.states_batched(cfg)
                else "one image at a time", "states": "the crash image at the cut, then the disk at each flush "
                "point with the acks it must hold, and seeded subsets of each epoch's unflushed writes"}

    def to_json(self) -> dict[str, Any]:
        def it(p: IterationPlan) -> dict[str, Any]:
            return {"index": p.index, "name": p.name, "seed": p.seed, "cut": p.cut.to_json()}
        return {"dry_run": True, "seed": self.cfg.seed, "seed_given": self.seed_given,
                "shard": list(self.cfg.shard), "canary": it(self.canary) if self.canary else None,
                "iterations": [it(p) for p in self.iterations], "states": self.states(),
                "estimate": {"seconds": round(self.canary_seconds + self.seconds),
                             "canary_seconds": round(self.canary_seconds), "once_seconds": round(self.once_seconds),
                             "space_mib": self.space_mib, "basis": ESTIMATE_BASIS},
                "images": self.images, "config": self.cfg.to_json()}


ESTIMATE_BASIS = ("an estimate from the per-iteration figures measured on a 2-core TCG machine with the "
                  "built-in workloads (docs/performance.md), not a promise")


def plan_campaign(cfg: TortureConfig, seed_given: bool) -> CampaignPlan:
    """The plan of a resolved config (its seed drawn), as ``run_campaign`` makes it."""
    assert cfg.seed is not None
    indices = shard_indices(cfg.iterations, cfg.shard)
    iterations = [IterationPlan.make(cfg, i) for i in indices]
    canary = IterationPlan.make(canary_config(cfg), -1, "canary") if cfg.canary else None
    seconds = sum(space.iteration_seconds(p.cfg, p.cut) for p in iterations)
    try:
        ImageStore().pair(cfg.stack.components())
        images = "ready"
    except ImageError as exc:
        images = exc.oneline()
    return CampaignPlan(cfg, seed_given, canary, iterations,
                        space.iteration_seconds(canary.cfg, canary.cut) if canary else 0.0, seconds,
                        space.once_seconds(cfg),
                        space.needed_mib(cfg, len(indices)), images)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _verified(cfg: TortureConfig) -> str:
    mode = cfg.verify_mode()
    return "fast and by a reboot" if mode == VerifyPath.BOTH else mode.value


def render(plan: CampaignPlan, run_dir: Path) -> str:
    cfg, n = plan.cfg, len(plan.iterations)
    w, f = workloads.get(cfg.workload), faults.get(cfg.fault)
    seed = (f"campaign seed {cfg.seed}" if plan.seed_given
            else f"campaign seed {cfg.seed} (drawn now: pass --seed {cfg.seed} to run exactly this plan)")
    out = ["xdh torture --dry-run: the plan; nothing is booted", f"  {seed}",
           f"  workload {w.name}, fault {f.name}, backend {cfg.stack.backend} on {cfg.stack.release}; reset "
           f"{cfg.reset}, verify {_verified(cfg)}, {cfg.jobs} lane{'s' if cfg.jobs > 1 else ''}",
           f"  shard {cfg.shard[0]}/{cfg.shard[1]}: {n} of {cfg.iterations} iterations"]
    if plan.canary is not None:
        c = plan.canary
        out.append(f"  {c.name:9} seed {c.seed:<17} cut after {c.cut.describe():9} drop-flush on append, "
                   f"must be caught; verified {_verified(c.cfg)}")
    out += [f"  {p.name:9} seed {p.seed:<17} cut after {p.cut.describe()}" for p in plan.iterations]
    st = plan.states()
    depth = (f"every subset of epochs of up to {cfg.exhaustive_k} writes, " if cfg.exhaustive_k else "") + \
        (f"torn writes at {cfg.atomic_write} bytes, " if cfg.atomic_write else "") + \
        (f"at most {cfg.states_budget} distinct states per iteration, " if cfg.states_budget else "")
    model = (f"volatile: {st['states']}; {st['flush_points']}, {st['crash_subsets']} subsets per epoch, {depth}"
             f"verified {st['verified']}" if cfg.disk_cache == DiskCache.VOLATILE else f"none: {st['states']}")
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    out += [f"  disk cache {model}",
            f"  estimated time: about {_minutes(plan.canary_seconds + plan.seconds)}"
            + (f" (the canary {_minutes(plan.canary_seconds)}" if plan.canary else " (")
            + (f"{', ' if plan.canary else ''}{_minutes(plan.seconds / n)} per iteration)" if n else ")")
            + f", plus up to {_minutes(plan.once_seconds)} once if the saved stack or verifier is not cached yet; "
            + ESTIMATE_BASIS,
            f"  estimated space: about {plan.space_mib} MiB in {run_dir} ({free_text(probe)} there)",
            f"  images: {plan.images}"]
    return "\n".join(out)


def print_plan(cfg: TortureConfig, seed_given: bool, run_dir: Path, as_json: bool) -> int:
    plan = plan_campaign(cfg, seed_given)
    print(dumps(plan.to_json()) if as_json else render(plan, run_dir))
    return ExitCode.CLEAN
