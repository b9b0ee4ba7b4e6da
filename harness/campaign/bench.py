"""``xdh bench``: the baseline (full boot per crash run, full reboot per verification) and the
fast path (snapshot reset, fast verifier), side by side in one run, on the same workload,
fault and seed. Prints iterations per hour and verified crash states per hour for each and
the ratio; writes bench.json and bench.md into the run directory.

Two rates are given. *Steady state* is what a long campaign converges to: 3600 over the mean
seconds of one iteration (crash run + verification). *Including setup* divides the iterations
by the whole wall time, one-time costs (saving the snapshot, booting the verifier) included;
it depends on the number of iterations and is there so nobody has to trust the first alone.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Reset, StackConfig, TortureConfig, VerifyPath
from ..errors import ConfigError
from ..progress import Progress
from ..report.rundir import RunDir
from .campaign import run_campaign

MODES: dict[str, tuple[Reset, VerifyPath]] = {
    "baseline": (Reset.BOOT, VerifyPath.REBOOT),
    "fast": (Reset.SNAPSHOT, VerifyPath.FAST),
}


@dataclass(frozen=True)
class BenchConfig:
    workload: str = "append"
    fault: str = "none"
    iterations: int = 3
    seed: int = 1
    cut_acks: tuple[int, int] = (20, 200)
    modes: tuple[str, ...] = ("baseline", "fast")
    stack: StackConfig = field(default_factory=StackConfig)

    def validate(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"--iterations {self.iterations}: must be at least 1", hint="use --iterations N, N >= 1")
        if not self.modes:
            raise ConfigError("no bench mode given", hint="use --modes baseline,fast")
        for m in self.modes:
            if m not in MODES:
                raise ConfigError(f"unknown bench mode {m!r}", hint="use baseline and/or fast")
        for m in self.modes:
            self.torture(m).validate()

    def torture(self, mode: str) -> TortureConfig:
        reset, verify = MODES[mode]
        return TortureConfig(workload=self.workload, fault=self.fault, iterations=self.iterations, seed=self.seed,
                             cut_acks=self.cut_acks, canary=False, stack=self.stack, reset=reset, verify=verify)


def mode_figures(summary: dict[str, Any], wall: float) -> dict[str, Any]:
    """Rates of one mode from its campaign summary (pure: unit-tested)."""
    its = summary["iterations"]
    verified = [i for i in its if i["status"] in ("pass", "loss")]
    busy = sum(i["seconds"].get("total", 0.0) for i in its)
    mean = busy / len(its) if its else 0.0
    phases: dict[str, float] = {}
    for i in its:
        for k, v in i["seconds"].items():
            if k != "total":
                phases[k] = phases.get(k, 0.0) + v
    return {
        "iterations": len(its),
        "verified": len(verified),
        "statuses": [i["status"] for i in its],
        "wall_seconds": round(wall, 1),
        "setup_seconds": summary.get("setup_seconds", {}),
        "mean_iteration_seconds": round(mean, 1),
        "phase_mean_seconds": {k: round(v / len(its), 1) for k, v in phases.items()} if its else {},
        "iterations_per_hour": round(3600 / mean, 1) if mean else 0.0,
        "verified_states_per_hour": round(len(verified) * 3600 / busy, 1) if busy else 0.0,
        "iterations_per_hour_incl_setup": round(len(its) * 3600 / wall, 1) if wall else 0.0,
    }


def ratios(figs: dict) -> dict:
    b, f = figs.get("baseline"), figs.get("fast")
    if not b or not f or not b["iterations_per_hour"] or not b["iterations_per_hour_incl_setup"]:
        return {}
    return {"steady": round(f["iterations_per_hour"] / b["iterations_per_hour"], 1),
            "incl_setup": round(f["iterations_per_hour_incl_setup"] / b["iterations_per_hour_incl_setup"], 1)}


def table(result: dict) -> str:
    rows = [f"{'mode':9} {'iters':>5} {'wall s':>7} {'setup s':>8} {'s/iter':>7} {'iter/h':>7} "
            f"{'states/h':>9} {'iter/h incl. setup':>19}  verdicts"]
    for mode, f in result["modes"].items():
        setup = sum(f["setup_seconds"].values())
        rows.append(f"{mode:9} {f['iterations']:5d} {f['wall_seconds']:7.0f} {setup:8.0f} "
                    f"{f['mean_iteration_seconds']:7.1f} {f['iterations_per_hour']:7.0f} "
                    f"{f['verified_states_per_hour']:9.0f} {f['iterations_per_hour_incl_setup']:19.0f}  "
                    + " ".join(f["statuses"]))
    r = result.get("ratio")
    if r:
        rows.append(f"ratio fast/baseline: {r['steady']}x iterations per hour (steady state), "
                    f"{r['incl_setup']}x including one-time setup")
    if result.get("same_verdicts") is not None:
        rows.append(f"same verdict per seed in both modes: {'yes' if result['same_verdicts'] else 'NO'}")
    return "\n".join(rows)


def run_bench(cfg: BenchConfig, run_dir: Path, progress: Progress, versions: dict[str, Any]) -> dict[str, Any]:
    cfg.validate()
    run = RunDir(run_dir).create()
    figs: dict[str, Any] = {}
    summaries: dict[str, Any] = {}
    t_all = time.monotonic()
    for mode in cfg.modes:
        reset, verify = MODES[mode]
        progress(f"bench: {mode} (reset {reset}, verify {verify}), {cfg.iterations} iterations of "
                 f"{cfg.workload}/{cfg.fault}, seed {cfg.seed}")
        t0 = time.monotonic()
        summaries[mode] = run_campaign(cfg.torture(mode), run.mode(mode).path, progress, versions).summary
        figs[mode] = mode_figures(summaries[mode], time.monotonic() - t0)
        progress(f"bench: {mode}: {figs[mode]['mean_iteration_seconds']:.1f} s per iteration, "
                 f"{figs[mode]['iterations_per_hour']:.0f} iterations/hour")
    same = None
    if len(summaries) == 2:
        a, b = (summaries[m]["iterations"] for m in cfg.modes)
        same = [i["status"] for i in a] == [i["status"] for i in b]
    result = {"config": dataclasses.asdict(cfg), "modes": figs, "ratio": ratios(figs), "same_verdicts": same,
              "wall_seconds": round(time.monotonic() - t_all, 1), "versions": versions,
              "run_dir": str(run_dir)}
    run.write_bench(result, table(result))
    return result
