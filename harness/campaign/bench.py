"""``xdh bench``: three ways to run the same workload, fault and seed, side by side in one run:

  - ``baseline``: a full boot per crash run, a full reboot per verification (one state each);
  - ``fast``: snapshot reset and the fast verifier (one state each: the crash image);
  - ``states``: the fast path with the volatile disk-cache model: every flush of the write log
    a crash state, plus subsets of each epoch, deduplicated, verified in one batch per run;
  - ``states-process`` (not a default): ``states`` with a manifest workload's verify started
    once per crash state, even where it has a resident verify-many mode.

Prints, per mode, iterations per hour and distinct verified crash states per hour, where a
crash state's time goes in the verifier (apply, snapshot, mount, verify, umount), and the
ratios (fast over baseline, states over fast, states over states-process); writes bench.json
and bench.md.

Rates are over the campaign's wall time minus its one-time setup (saving a snapshot,
starting the verifier): a campaign overlaps the crash run of one iteration with the
verification of the previous one, so per-iteration seconds do not add up to the wall time.
*Including setup* divides by the whole wall time and depends on the number of iterations.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DiskCache, Reset, StackConfig, TortureConfig, VerifyPath
from ..errors import ConfigError
from ..images import ImageStore
from ..progress import Progress
from ..report.records import CampaignSummary, state_ms
from ..report.rundir import RunDir
from ..status import Status
from .campaign import run_campaign

MODES: dict[str, tuple[Reset, VerifyPath, DiskCache]] = {
    "baseline": (Reset.BOOT, VerifyPath.REBOOT, DiskCache.NONE),
    "fast": (Reset.SNAPSHOT, VerifyPath.FAST, DiskCache.NONE),
    "states": (Reset.SNAPSHOT, VerifyPath.FAST, DiskCache.VOLATILE),
    "states-process": (Reset.SNAPSHOT, VerifyPath.FAST, DiskCache.VOLATILE),
}
PROCESS_PER_STATE = {"states-process"}       # modes without the resident verify


@dataclass(frozen=True)
class BenchConfig:
    workload: str = "append"
    fault: str = "none"
    iterations: int = 3
    seed: int = 1
    cut_acks: tuple[int, int] = (20, 200)
    modes: tuple[str, ...] = ("baseline", "fast", "states")
    jobs: int = 1
    stack: StackConfig = field(default_factory=StackConfig)

    def validate(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"--iterations {self.iterations}: must be at least 1", hint="use --iterations N, N >= 1")
        if not self.modes:
            raise ConfigError("no bench mode given", hint="use --modes baseline,fast,states")
        for m in self.modes:
            if m not in MODES:
                raise ConfigError(f"unknown bench mode {m!r}", hint="use " + ", ".join(MODES))
        for m in self.modes:
            self.torture(m).validate()

    def torture(self, mode: str) -> TortureConfig:
        reset, verify, cache = MODES[mode]
        return TortureConfig(workload=self.workload, fault=self.fault, iterations=self.iterations, seed=self.seed,
                             cut_acks=self.cut_acks, canary=False, stack=self.stack, reset=reset, verify=verify,
                             disk_cache=cache, jobs=self.jobs, resident_verify=mode not in PROCESS_PER_STATE)


def mode_figures(summary: CampaignSummary, wall: float) -> dict[str, Any]:
    """Rates of one mode from its campaign summary (pure: unit-tested)."""
    its = summary.iterations
    verified = [i for i in its if i.status in (Status.PASS, Status.LOSS)]
    setup = sum(summary.setup_seconds.values())
    steady = max(wall - setup, 1e-9)
    states = sum(i.crash_states for i in verified)
    phases: dict[str, float] = {}
    for i in its:
        for k, v in i.seconds.items():
            if k != "total":
                phases[k] = phases.get(k, 0.0) + v
    return {
        "iterations": len(its),
        "verified": len(verified),
        "statuses": [i.status.value for i in its],
        "wall_seconds": round(wall, 1),
        "setup_seconds": summary.setup_seconds,
        "states_generated": sum(i.states_generated for i in verified),
        "states_verified": states,
        "seconds_per_iteration": round(steady / len(its), 1) if its else 0.0,
        "phase_mean_seconds": {k: round(v / len(its), 1) for k, v in phases.items()} if its else {},
        "iterations_per_hour": round(len(its) * 3600 / steady, 1) if its else 0.0,
        "verified_states_per_hour": round(states * 3600 / steady, 1),
        "state_ms": state_ms(its),
        "verify": sorted({i.depth.verify for i in verified if i.depth}),
        "iterations_per_hour_incl_setup": round(len(its) * 3600 / wall, 1) if wall else 0.0,
        "verified_states_per_hour_incl_setup": round(states * 3600 / wall, 1) if wall else 0.0,
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b else None


def ratios(figs: dict[str, Any]) -> dict[str, Any]:
    """fast over baseline (iterations per hour), states over fast (verified states per hour)."""
    out: dict[str, Any] = {}
    b, f, s, sp = figs.get("baseline"), figs.get("fast"), figs.get("states"), figs.get("states-process")
    if b and f:
        out["fast/baseline"] = {"steady": _ratio(f["iterations_per_hour"], b["iterations_per_hour"]),
                                "incl_setup": _ratio(f["iterations_per_hour_incl_setup"],
                                                     b["iterations_per_hour_incl_setup"])}
    if f and s:
        out["states/fast"] = {"steady": _ratio(s["verified_states_per_hour"], f["verified_states_per_hour"]),
                              "incl_setup": _ratio(s["verified_states_per_hour_incl_setup"],
                                                   f["verified_states_per_hour_incl_setup"])}
    if s and sp:
        ms = sum(s["state_ms"].values())
        out["states/states-process"] = {"steady": _ratio(s["verified_states_per_hour"], sp["verified_states_per_hour"]),
                                        "incl_setup": _ratio(s["verified_states_per_hour_incl_setup"],
                                                             sp["verified_states_per_hour_incl_setup"]),
                                        "per_state": _ratio(sum(sp["state_ms"].values()), ms) if ms else None}
    return out


def table(result: dict[str, Any]) -> str:
    rows = [f"{'mode':14} {'iters':>5} {'wall s':>7} {'setup s':>8} {'s/iter':>7} {'iter/h':>7} {'states':>7} "
            f"{'states/h':>9} {'states/h incl. setup':>21}  verdicts"]
    for mode, f in result["modes"].items():
        setup = sum(f["setup_seconds"].values())
        rows.append(f"{mode:14} {f['iterations']:5d} {f['wall_seconds']:7.0f} {setup:8.0f} "
                    f"{f['seconds_per_iteration']:7.1f} {f['iterations_per_hour']:7.0f} {f['states_verified']:7d} "
                    f"{f['verified_states_per_hour']:9.0f} {f['verified_states_per_hour_incl_setup']:21.0f}  "
                    + " ".join(f["statuses"]))
    for mode, f in result["modes"].items():
        if f.get("state_ms"):
            ms = f["state_ms"]
            rows.append(f"{mode}: one crash state in the verifier {sum(ms.values()):.0f} ms = "
                        + " + ".join(f"{k} {v:.0f}" for k, v in ms.items())
                        + f" (verify: {', '.join(f['verify'])})")
    what = {"fast/baseline": "iterations per hour", "states/fast": "distinct verified crash states per hour",
            "states/states-process": "distinct verified crash states per hour (resident verify over a process "
                                     "per state)"}
    for name, r in result.get("ratio", {}).items():
        rows.append(f"ratio {name}: {r['steady']}x {what[name]} (steady state), {r['incl_setup']}x including "
                    "one-time setup" + (f"; {r['per_state']}x per state in the verifier" if r.get("per_state") else ""))
    if result.get("same_verdicts") is not None:
        rows.append(f"same verdict per seed in every mode: {'yes' if result['same_verdicts'] else 'NO'}")
    return "\n".join(rows)


def run_bench(cfg: BenchConfig, run_dir: Path, progress: Progress, versions: dict[str, Any],
              store: ImageStore | None = None) -> dict[str, Any]:
    cfg.validate()
    run = RunDir(run_dir).create()
    figs: dict[str, Any] = {}
    summaries: dict[str, CampaignSummary] = {}
    t_all = time.monotonic()
    for mode in cfg.modes:
        reset, verify, cache = MODES[mode]
        progress(f"bench: {mode} (reset {reset}, verify {verify}, disk cache {cache}), {cfg.iterations} iterations of "
                 f"{cfg.workload}/{cfg.fault}, seed {cfg.seed}")
        t0 = time.monotonic()
        summaries[mode] = run_campaign(cfg.torture(mode), run.mode(mode).path, progress, versions,
                                       store=store).summary
        figs[mode] = mode_figures(summaries[mode], time.monotonic() - t0)
        progress(f"bench: {mode}: {figs[mode]['seconds_per_iteration']:.1f} s per iteration, "
                 f"{figs[mode]['iterations_per_hour']:.0f} iterations/hour, "
                 f"{figs[mode]['verified_states_per_hour']:.0f} verified crash states/hour")
    same = None
    if len(summaries) >= 2:
        same = len({tuple(i.status for i in summaries[m].iterations) for m in cfg.modes}) == 1
    result = {"config": dataclasses.asdict(cfg), "modes": figs, "ratio": ratios(figs), "same_verdicts": same,
              "wall_seconds": round(time.monotonic() - t_all, 1), "versions": versions,
              "run_dir": str(run_dir)}
    run.write_bench(result, table(result))
    return result
