"""Campaign results: the summary table, summary.json, JUnit XML, exit codes, and merging
several run directories (shards of a nightly matrix) into one."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .errors import ConfigError

EXIT_CLEAN = 0
EXIT_LOSS = 1
EXIT_HARNESS = 2
EXIT_CANARY = 3


def exit_code(summary: dict) -> int:
    """Canary not caught beats everything (the run proves nothing); a loss beats an error."""
    canary = summary.get("canary")
    if canary and canary.get("status") != "loss":
        return EXIT_CANARY
    statuses = [it["status"] for it in summary["iterations"]]
    if "loss" in statuses:
        return EXIT_LOSS
    if "error" in statuses or (canary and canary.get("status") == "error"):
        return EXIT_HARNESS
    return EXIT_CLEAN


def summarize(run_dir: Path, config: dict, seed: int, canary, iterations, seconds: float) -> dict:
    its = [asdict(i) if not isinstance(i, dict) else i for i in iterations]
    s = {
        "run_dir": str(run_dir),
        "seed": seed,
        "config": config,
        "canary": (asdict(canary) if canary is not None and not isinstance(canary, dict) else canary),
        "iterations": its,
        "counts": {k: sum(1 for i in its if i["status"] == k) for k in ("pass", "loss", "error")},
        "acked_total": sum(i["acked"] for i in its),
        "lost_acked_total": sum(i["lost_acked"] for i in its),
        "crash_states_total": sum(i.get("crash_states", 1) for i in its if i["status"] != "error"),
        "wall_seconds": round(seconds, 1),
        "iterations_per_hour": round(len(its) * 3600 / seconds, 1) if seconds > 0 and its else None,
    }
    s["exit_code"] = exit_code(s)
    return s


def table(summary: dict) -> str:
    rows = [f"{'iteration':11} {'seed':>17} {'cut':>10} {'acked':>6} {'lost':>5} {'verdict':7} {'secs':>6}  detail"]
    its = list(summary["iterations"])
    if summary.get("canary"):
        its = [summary["canary"]] + its
    for it in its:
        cut = it["cut"]
        cut_s = f"{cut['after_acks']} acks" if cut.get("mode") == "acks" else f"{cut.get('after_seconds')} s"
        detail = it["error"] or ("; ".join(it["violations"][:2]) + (" ..." if len(it["violations"]) > 2 else ""))
        rows.append(f"{it['name']:11} {it['seed']:17d} {cut_s:>10} {it['acked']:6d} {it['lost_acked']:5d} "
                    f"{it['status'].upper():7} {it['seconds'].get('total', 0):6.0f}  {detail[:100]}")
    c = summary["counts"]
    rows.append(f"{len(summary['iterations'])} iterations: {c['pass']} pass, {c['loss']} loss, {c['error']} error; "
                f"{summary['acked_total']} acked, {summary['lost_acked_total']} acked writes lost; "
                f"{summary['wall_seconds']:.0f} s wall, {summary['iterations_per_hour']} iterations/hour")
    states = summary.get("crash_states_total", 0)
    if states > len(summary["iterations"]):
        rows.append(f"crash states verified: {states} (the cut, plus the volatile disk-cache model's states)")
    if summary.get("canary"):
        caught = summary["canary"]["status"] == "loss"
        rows.append(f"canary (drop-flush on append): {'caught' if caught else 'NOT CAUGHT: this configuration cannot see lost flushes'}")
    return "\n".join(rows)


def junit(summary: dict) -> str:
    its = list(summary["iterations"])
    if summary.get("canary"):
        its = [summary["canary"]] + its
    failures = sum(1 for i in its if i["status"] == "loss" and not i["name"].startswith("canary"))
    errors = sum(1 for i in its if i["status"] == "error")
    canary_missed = summary.get("canary") and summary["canary"]["status"] != "loss"
    failures += 1 if canary_missed else 0
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="xdh-torture" tests="{len(its)}" failures="{failures}" errors="{errors}" '
           f'time="{summary["wall_seconds"]}">']
    for it in its:
        cls = f"xdh.{it['backend']}.{it['fault']}.{it['workload']}"
        out.append(f'  <testcase classname={quoteattr(cls)} name={quoteattr(it["name"] + " seed=" + str(it["seed"]))} '
                   f'time="{it["seconds"].get("total", 0)}">')
        is_canary = it["name"].startswith("canary")
        if it["status"] == "error":
            out.append(f'    <error message={quoteattr(it["error"])}/>')
        elif is_canary and it["status"] != "loss":
            out.append('    <failure message="canary not caught: this configuration cannot see lost flushes"/>')
        elif not is_canary and it["status"] == "loss":
            msg = f"{it['lost_acked']} acknowledged writes lost"
            out.append(f"    <failure message={quoteattr(msg)}>{escape(chr(10).join(it['violations']))}</failure>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def write(summary: dict, run_dir: Path) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run_dir / "junit.xml").write_text(junit(summary))
    (run_dir / "summary.txt").write_text(table(summary) + "\n")


def merge(run_dirs: list[Path], out_dir: Path) -> dict:
    """Join shards (or any runs) into one summary; iterations keep their run directory."""
    its, canaries, seconds, configs, seeds = [], [], 0.0, [], []
    for d in run_dirs:
        p = d / "summary.json"
        if not p.exists():
            raise ConfigError(f"{d} has no summary.json", hint="pass run directories written by `xdh torture`")
        s = json.loads(p.read_text())
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
    out_dir.mkdir(parents=True, exist_ok=True)
    write(merged, out_dir)
    return merged
