"""Campaign results for people and CI: the summary (summary.json), its table, JUnit XML, and
merging several run directories (shards of a nightly matrix) into one."""

from __future__ import annotations

import contextlib
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import paths
from ..status import Status, campaign_exit, expected
from . import page
from .records import IterationRecord
from .rundir import RunDir, ensure_dir

Record = IterationRecord | dict[str, Any]
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")     # not allowed in XML 1.0


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
    s["expect"] = config.get("expect")
    s["exit_code"] = int(campaign_exit(c["status"] if c else None, [i["status"] for i in its],
                                       [i.get("expect", s["expect"]) for i in its]))
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


def _expected(it: dict[str, Any], expect: str | None) -> str:
    """The status an iteration should end in: the canary must lose writes; with ``--expect`` (its
    run's, in a merge), the expectation; without, a pass."""
    if it["name"].startswith("canary"):
        return Status.LOSS.value
    return expected(it.get("expect", expect)).value


def _evidence(run_dir: str, name: str, limit: int = 12) -> list[str]:
    """The kernel lines recorded beside the iteration's verdict (none if it has none)."""
    try:
        data = json.loads((Path(run_dir) / ("canary" if name == "canary" else f"iterations/{name}")
                           / "verdict.json").read_text())
    except (OSError, ValueError):
        return []
    return [str(x) for x in data.get("kernel_evidence", [])[:limit]]


def _add_properties(parent: ET.Element, props: dict[str, Any]) -> None:
    el = ET.SubElement(parent, "properties")
    for key, value in props.items():
        if value not in (None, "", {}, []):
            ET.SubElement(el, "property", name=key, value=value if isinstance(value, str) else json.dumps(value))


def _case(suite: ET.Element, summary: dict[str, Any], it: dict[str, Any]) -> None:
    """One test case per (release, backend, fault, workload, iteration): stable across seeds."""
    release = it.get("release") or summary["config"].get("stack", {}).get("release", "")
    cache = "" if it.get("disk_cache", "none") == "none" else f".{it['disk_cache']}"
    case = ET.SubElement(suite, "testcase",
                         classname=f"xdh.{release}.{it['backend']}{cache}.{it['fault']}.{it['workload']}",
                         name=it["name"], time=str(it["seconds"].get("total", 0)))
    run_dir = it.get("run_dir") or summary["run_dir"]
    path = Path(run_dir) / ("canary" if it["name"] == "canary" else f"iterations/{it['name']}")
    want = _expected(it, summary.get("expect"))
    _add_properties(case, {"seed": str(it["seed"]), "verdict": it["status"], "acked": str(it["acked"]),
                           "lost_acked": str(it["lost_acked"]), "cut": it["cut"], "disk_cache": it.get("disk_cache"),
                           "crash_states": str(it.get("crash_states", 1)), "expected": want,
                           "iteration_dir": str(path), "reproduce": f"xdh reproduce {path}",
                           "crash_image": it.get("crash_image")})
    evidence = _evidence(run_dir, it["name"])
    if it["status"] in (Status.ERROR.value, Status.GUEST_DIED.value):
        ET.SubElement(case, "error", type=it["status"], message=it["error"])
    elif it["status"] != want:
        if it["status"] == Status.LOSS.value:
            msg = f"{it['lost_acked']} acknowledged writes lost: {(it['violations'] or ['?'])[0]}"
        elif it["name"].startswith("canary"):
            msg = "canary not caught: this configuration cannot see lost flushes"
        else:
            msg = f"expected a loss, and all {it['acked']} acknowledged writes survived: the fault was not caught"
        fail = ET.SubElement(case, "failure", type=f"expected-{want}", message=msg)
        fail.text = "\n".join([*it["violations"], *(["kernel evidence:"] + evidence if evidence else [])])
    out = [f"{it['name']}: {it['status']} ({it['acked']} acked, {it['lost_acked']} lost, "
           f"{it.get('crash_states', 1)} crash states)"]
    out += [f"fault applied: {it['fault_applied']}"] if it.get("fault_applied") else []
    out += it["violations"] + ([it["error"]] if it["error"] else []) + evidence
    out += [f"logs: {p}" for p in sorted(str(x) for x in path.glob("*.log"))] if path.exists() else []
    ET.SubElement(case, "system-out").text = "\n".join(out)


def junit(summary: dict[str, Any]) -> str:
    """JUnit XML: test names without seeds (a CI's history follows ``iter-0003`` across nights),
    seeds and versions as properties, the violation and its kernel lines in the failure, logs in
    system-out. With ``--expect loss`` a loss is the expected outcome, not a failure."""
    its = list(summary["iterations"])
    if summary.get("canary"):
        its = [summary["canary"], *its]
    no_verdict = (Status.ERROR.value, Status.GUEST_DIED.value)
    errors = sum(1 for i in its if i["status"] in no_verdict)
    expect = summary.get("expect")
    failures = sum(1 for i in its if i["status"] not in no_verdict and i["status"] != _expected(i, expect))
    root = ET.Element("testsuites", name="xdh", tests=str(len(its)), failures=str(failures), errors=str(errors),
                      time=str(summary["wall_seconds"]))
    suite = ET.SubElement(root, "testsuite", name="xdh-torture", tests=str(len(its)), failures=str(failures),
                          errors=str(errors), time=str(summary["wall_seconds"]))
    _add_properties(suite, {"campaign_seed": summary["seed"], "expect": summary.get("expect"),
                            **{f"version.{k}": v for k, v in sorted(summary.get("versions", {}).items())}})
    for it in its:
        _case(suite, summary, it)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + CONTROL.sub("?", text) + "\n"   # kernel lines may hold any byte


def write(summary: dict[str, Any], run_dir: Path) -> None:
    """summary.json, summary.txt, junit.xml and the page people open, index.html; and the index
    of runs in the parent directory, when it holds runs."""
    RunDir(run_dir).write_summary(summary, table(summary), junit(summary), page.run_page(summary, run_dir))
    parent = run_dir.parent
    index = parent / "index.html"
    # only where xdh keeps runs ($XDH_RUNS), or over an index of its own: never over your page
    if parent == paths.runs_dir() or (index.exists() and page.MARK in index.read_text(errors="replace")[:400]):
        with contextlib.suppress(OSError):   # a convenience: `xdh report index` writes it again
            index.write_text(page.runs_index(parent))


def merge(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Join shards (or any runs) into one summary; iterations keep their run directory."""
    its, canaries, configs, seeds, versions = [], [], [], [], []
    seconds = 0.0
    for d in run_dirs:
        s = RunDir(d).read_summary()
        configs.append(s["config"])
        versions.append(s.get("versions", {}))
        seeds.append(s["seed"])
        seconds += s["wall_seconds"]
        for it in s["iterations"]:
            its.append(it | {"run_dir": str(d), "name": it["name"], "expect": s.get("expect"),
                             "release": it.get("release") or s["config"].get("stack", {}).get("release", "")})
        if s.get("canary"):
            canaries.append(s["canary"] | {"run_dir": str(d)})
    its.sort(key=lambda i: (i["backend"], i["fault"], i["workload"], i["index"]))
    worst_canary = next((c for c in canaries if c["status"] != "loss"), canaries[0] if canaries else None)
    expects = {c.get("expect") for c in configs}
    merged = summarize(out_dir, {"merged_from": [str(d) for d in run_dirs], "configs": configs,
                                 "expect": expects.pop() if len(expects) == 1 else None},
                       seeds[0] if len(set(seeds)) == 1 else seeds, worst_canary, its, seconds)
    merged["merged_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    found = [json.dumps(v, sort_keys=True) for v in versions]
    merged["versions"] = versions[0] if versions and len(set(found)) == 1 else {}
    ensure_dir(out_dir, "output directory", option="-o")
    write(merged, out_dir)
    return merged
