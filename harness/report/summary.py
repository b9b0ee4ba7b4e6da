"""Campaign results for people and CI: the summary (summary.json), its table, JUnit XML, and
merging several run directories (shards of a nightly matrix) into one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ..status import Status, campaign_exit
from .records import IterationRecord
from .rundir import RunDir, ensure_dir

Record = IterationRecord | dict[str, Any]


def _json(r: Record) -> dict[str, Any]:
    return r.to_json() if isinstance(r, IterationRecord) else r


def summarize(run_dir: Path, config: dict[str, Any], seed: Any, canary: Record | None, iterations: Sequence[Record],
              seconds: float) -> dict[str, Any]:
    its = [_json(i) for i in iterations]
    c = _json(canary) if canary is not None else None
    s: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": seed,
        "config": config,
        "canary": c,
        "iterations": its,
        "counts": {k.value: sum(1 for i in its if i["status"] == k.value) for k in Status},
        "acked_total": sum(i["acked"] for i in its),
        "lost_acked_total": sum(i["lost_acked"] for i in its),
        "crash_states_total": sum(i.get("crash_states", 1) for i in its
                                  if i["status"] in (Status.PASS.value, Status.LOSS.value)),
        "states_generated_total": sum(max(i.get("states_generated", 1), i.get("crash_states", 1)) for i in its
                                      if i["status"] in (Status.PASS.value, Status.LOSS.value)),
        "wall_seconds": round(seconds, 1),
        "iterations_per_hour": round(len(its) * 3600 / seconds, 1) if seconds > 0 and its else None,
    }
    s["exit_code"] = int(campaign_exit(c["status"] if c else None, (i["status"] for i in its)))
    return s


def table(summary: dict[str, Any]) -> str:
    rows = [f"{'iteration':11} {'seed':>17} {'cut':>10} {'acked':>6} {'lost':>5} {'verdict':10} {'secs':>6}  detail"]
    its = list(summary["iterations"])
    if summary.get("canary"):
        its = [summary["canary"], *its]
    for it in its:
        cut = it["cut"]
        cut_s = f"{cut['after_acks']} acks" if cut.get("mode") == "acks" else f"{cut.get('after_seconds')} s"
        detail = it["error"] or ("; ".join(it["violations"][:2]) + (" ..." if len(it["violations"]) > 2 else ""))
        rows.append(f"{it['name']:11} {it['seed']:17d} {cut_s:>10} {it['acked']:6d} {it['lost_acked']:5d} "
                    f"{it['status'].upper():10} {it['seconds'].get('total', 0):6.0f}  {detail[:100]}")
    c = summary["counts"]
    rate = summary.get("iterations_per_hour")
    rows.append(f"{len(summary['iterations'])} iterations: {c.get('pass', 0)} pass, {c.get('loss', 0)} loss, "
                f"{c.get('guest-died', 0)} guest died, {c.get('error', 0)} error; "
                f"{summary['acked_total']} acked, {summary['lost_acked_total']} acked writes lost; "
                f"{summary['wall_seconds']:.0f} s wall, "
                + (f"{rate} iterations/hour" if rate else "no iterations ran"))
    states = summary.get("crash_states_total", 0)
    if states > len(summary["iterations"]):
        generated = summary.get("states_generated_total", states)
        rate = round(states * 3600 / summary["wall_seconds"]) if summary.get("wall_seconds") else 0
        rows.append(f"crash states verified: {states} distinct of {generated} judged (the cuts, plus every flush "
                    f"state of the volatile disk-cache model); {rate} per hour of wall time")
    if summary.get("canary"):
        status = summary["canary"]["status"]
        said = {"loss": "caught", "pass": "NOT CAUGHT: this configuration cannot see lost flushes"}
        rows.append(f"canary (drop-flush on append): {said.get(status, f'did not run to a verdict ({status})')}")
    return "\n".join(rows)


def junit(summary: dict[str, Any]) -> str:
    its = list(summary["iterations"])
    if summary.get("canary"):
        its = [summary["canary"], *its]
    no_verdict = (Status.ERROR.value, Status.GUEST_DIED.value)
    failures = sum(1 for i in its if i["status"] == "loss" and not i["name"].startswith("canary"))
    errors = sum(1 for i in its if i["status"] in no_verdict)
    canary_missed = summary.get("canary") and summary["canary"]["status"] == "pass"
    failures += 1 if canary_missed else 0
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="xdh-torture" tests="{len(its)}" failures="{failures}" errors="{errors}" '
           f'time="{summary["wall_seconds"]}">']
    for it in its:
        cls = f"xdh.{it['backend']}.{it['fault']}.{it['workload']}"
        out.append(f'  <testcase classname={quoteattr(cls)} name={quoteattr(it["name"] + " seed=" + str(it["seed"]))} '
                   f'time="{it["seconds"].get("total", 0)}">')
        is_canary = it["name"].startswith("canary")
        if it["status"] in no_verdict:
            out.append(f'    <error type={quoteattr(it["status"])} message={quoteattr(it["error"])}/>')
        elif is_canary and it["status"] != "loss":
            out.append('    <failure message="canary not caught: this configuration cannot see lost flushes"/>')
        elif not is_canary and it["status"] == "loss":
            msg = f"{it['lost_acked']} acknowledged writes lost"
            out.append(f"    <failure message={quoteattr(msg)}>{escape(chr(10).join(it['violations']))}</failure>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def write(summary: dict[str, Any], run_dir: Path) -> None:
    RunDir(run_dir).write_summary(summary, table(summary), junit(summary))


def merge(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Join shards (or any runs) into one summary; iterations keep their run directory."""
    its, canaries, configs, seeds = [], [], [], []
    seconds = 0.0
    for d in run_dirs:
        s = RunDir(d).read_summary()
        configs.append(s["config"])
        seeds.append(s["seed"])
        seconds += s["wall_seconds"]
        for it in s["iterations"]:
            its.append(it | {"run_dir": str(d), "name": it["name"]})
        if s.get("canary"):
            canaries.append(s["canary"] | {"run_dir": str(d)})
    its.sort(key=lambda i: (i["backend"], i["fault"], i["workload"], i["index"]))
    worst_canary = next((c for c in canaries if c["status"] != "loss"), canaries[0] if canaries else None)
    merged = summarize(out_dir, {"merged_from": [str(d) for d in run_dirs], "configs": configs},
                       seeds[0] if len(set(seeds)) == 1 else seeds, worst_canary, its, seconds)
    merged["merged_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ensure_dir(out_dir, "output directory", option="-o")
    write(merged, out_dir)
    return merged
