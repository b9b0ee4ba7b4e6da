"""Campaign results for people and CI: the summary (summary.json), its table, JUnit XML, and
merging several run directories (shards of a nightly matrix) into one."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import paths
from ..catalog import backends
from ..config import DiskCache
from ..errors import ConfigError
from ..jsonio import read_json, utc_stamp
from ..status import ExitCode, Expect, Status, expected
from . import page
from .records import CampaignSummary, IterationRecord, state_ms
from .rundir import IterationDir, RunDir, ensure_dir
from .shards import Shard, check

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")     # not allowed in XML 1.0


def summarize(run_dir: Path, config: dict[str, Any], seed: int | list[int] | None, canary: IterationRecord | None,
              iterations: Sequence[IterationRecord], seconds: float, **more: Any) -> CampaignSummary:
    return CampaignSummary.make(str(run_dir), config, seed, canary, list(iterations), seconds, **more)


def table(summary: CampaignSummary) -> str:
    rows = [f"{'iteration':11} {'seed':>17} {'cut':>10} {'acked':>6} {'lost':>5} {'verdict':10} {'secs':>6}  detail"]
    for it in summary.all:
        detail = it.error or ("; ".join(v.line() for v in it.violations[:2])
                              + (" ..." if len(it.violations) > 2 else ""))
        if it.flush is not None and not it.error:      # where the flush died (or the path that held)
            detail = f"{it.flush.text}; {detail}" if detail else it.flush.text
        if it.workload_error is not None and not it.error:
            detail = f"{it.workload_error.line()}; {detail}" if detail else it.workload_error.line()
        rows.append(f"{it.name:11} {it.seed:17d} {it.cut.describe():>10} {it.acked:6d} {it.lost_acked:5d} "
                    f"{it.status.upper():10} {it.total_seconds:6.0f}  {detail[:100]}")
    c = summary.counts()
    rate = summary.iterations_per_hour
    rows.append(f"{len(summary.iterations)} iterations: {c[Status.PASS]} pass, {c[Status.LOSS]} loss, "
                f"{c[Status.GUEST_DIED]} guest died, {c[Status.ERROR]} error; "
                f"{summary.acked_total} acked, {summary.lost_acked_total} acked writes lost; "
                f"{summary.wall_seconds:.0f} s wall, "
                + (f"{rate} iterations/hour" if rate else "no iterations ran"))
    ended = sum(1 for it in summary.iterations if it.workload_error is not None)
    rows += [f"the workload ended before the cut in {ended} of {len(summary.iterations)} iterations (their acks "
             "judged as usual; how it ended is in each detail)"] if ended else []
    rows += [f"stopped early: {summary.shortfall}"] if summary.shortfall else []
    rows += [f"bad shard: {p.line()}" for p in summary.merge_problems]
    states = summary.crash_states_total
    if states > len(summary.iterations):
        per_hour = round(states * 3600 / summary.wall_seconds) if summary.wall_seconds else 0
        rows.append(f"crash states verified: {states} distinct of {summary.states_generated_total} generated "
                    f"(the cuts, plus every flush state of the volatile disk-cache model); {per_hour} per hour of "
                    "wall time")
    rows += depth_lines(summary.iterations)
    if summary.disk_cache:
        rows.append(f"disk cache model: {summary.disk_cache}")
    if summary.canary:
        rows.append(f"canary (drop-flush on append): {canary_said(summary.canary)}")
    return "\n".join(rows)


def depth_lines(iterations: list[IterationRecord]) -> list[str]:
    """The volatile model's depth over the iterations that reached verdicts: coverage, torn and
    skipped states, the oracle's slack, and one state's time in the verifier by phase."""
    ds = [i.depth for i in iterations if i.depth is not None and i.status in (Status.PASS, Status.LOSS)]
    if not ds:
        return []
    cov = [d.coverage for d in ds]
    choice = sum(c.choice_epochs for c in cov)
    mean = sum(c.mean_fraction * c.choice_epochs for c in cov) / choice if choice else 1.0
    rows = [f"crash-state coverage: {sum(c.epochs for c in cov)} epochs, {choice} with writes to choose from, every "
            f"subset in {sum(c.exhaustive_epochs for c in cov)} (mean fraction of the subset space "
            f"{mean:.3f}, largest epoch {max(c.largest_epoch for c in cov)} writes); {sum(c.subsets for c in cov)} "
            f"subset states, {sum(c.torn for c in cov)} torn-write states"
            + (f"; {sum(c.skipped for c in cov)} distinct states skipped over --states-budget"
               if any(c.skipped for c in cov) else "")]
    slack = [d.slack for d in ds if d.slack.states]
    if slack:
        n = sum(x.states for x in slack)
        rows.append(f"oracle slack in {n} passing flush states: {sum(x.tight for x in slack)} tight; acks found but "
                    f"not required: median {max(x.acks_median for x in slack):g} (largest iteration median), max "
                    f"{max(x.acks_max for x in slack)}; in flushes: median {max(x.flushes_median for x in slack):g}, "
                    f"max {max(x.flushes_max for x in slack)}")
    ms = state_ms(iterations)
    if ms:
        rows.append(f"one crash state in the verifier: {sum(ms.values()):.0f} ms ("
                    + ", ".join(f"{k} {v:.0f}" for k, v in ms.items())
                    + f"; verify {', '.join(sorted({d.verify for d in ds}))})")
    return rows


def canary_said(canary: IterationRecord) -> str:
    """What the canary's verdict means, in one line; not caught: which layer kept the writes, and the fix."""
    if canary.status == Status.LOSS:
        return "caught"
    if canary.status != Status.PASS:
        return f"did not run to a verdict ({canary.status})"
    if canary.disk_cache == DiskCache.NONE and backends.get(canary.backend).writes_through:
        return (f"NOT CAUGHT: on {canary.backend} dom0 keeps no volatile cache, so every completed write was in the "
                "outer disk's file, which the power cut keeps; rerun with --disk-cache volatile (or auto)")
    return ("NOT CAUGHT: this configuration cannot see lost flushes (a layer below the domU kept every write); "
            "rerun with --disk-cache volatile")


def _expected(it: IterationRecord, expect: Expect | None) -> Status:
    """The status an iteration should end in: the canary must lose writes; with ``--expect`` (its
    run's, in a merge), the expectation; without, a pass."""
    return Status.LOSS if it.canary else expected(it.expect or expect)


def _iteration_dir(summary: CampaignSummary, it: IterationRecord) -> IterationDir:
    return RunDir(Path(it.run_dir or summary.run_dir)).iteration_named(it.name)


def _evidence(d: IterationDir, limit: int = 12) -> list[str]:
    """The kernel lines recorded beside the iteration's verdict (none if it has none)."""
    verdict = d.read_verdict_or_none()
    return verdict.kernel_evidence[:limit] if verdict else []


def _add_properties(parent: ET.Element, props: dict[str, Any]) -> None:
    el = ET.SubElement(parent, "properties")
    for key, value in props.items():
        if value not in (None, "", {}, []):
            ET.SubElement(el, "property", name=key, value=value if isinstance(value, str) else json.dumps(value))


def _case(suite: ET.Element, summary: CampaignSummary, it: IterationRecord) -> None:
    """One test case per (release, backend, fault, workload, iteration): stable across seeds."""
    release = it.release or summary.config.get("stack", {}).get("release", "")
    cache = "" if it.disk_cache == DiskCache.NONE else f".{it.disk_cache}"
    case = ET.SubElement(suite, "testcase",
                         classname=f"xdh.{release}.{it.backend}{cache}.{it.fault}.{it.workload}",
                         name=it.name, time=str(it.total_seconds))
    d = _iteration_dir(summary, it)
    want = _expected(it, summary.expect)
    _add_properties(case, {"seed": str(it.seed), "verdict": it.status.value, "acked": str(it.acked),
                           "lost_acked": str(it.lost_acked), "cut": it.cut.to_json(),
                           "disk_cache": it.disk_cache.value, "crash_states": str(it.crash_states),
                           "expected": want.value, "iteration_dir": str(d.path), "reproduce": f"xdh reproduce {d.path}",
                           "crash_image": it.crash_image})
    evidence = _evidence(d)
    lines = [v.line() for v in it.violations]
    if it.status in (Status.ERROR, Status.GUEST_DIED):
        ET.SubElement(case, "error", type=it.status.value, message=it.error)
    elif it.status != want:
        if it.status == Status.LOSS:
            msg = f"{it.lost_acked} acknowledged writes lost: {(lines or ['?'])[0]}"
        elif it.canary:
            msg = f"canary {canary_said(it)}"
        else:
            msg = f"expected a loss, and all {it.acked} acknowledged writes survived: the fault was not caught"
        if it.flush is not None and it.status == Status.LOSS:
            msg += f" ({it.flush.text})"
        fail = ET.SubElement(case, "failure", type=f"expected-{want}", message=msg)
        fail.text = "\n".join([*([f"where the flush died: {it.flush.text}"] if it.flush else []),
                               *([it.workload_error.line()] if it.workload_error else []), *lines,
                               *(["kernel evidence:"] + evidence if evidence else [])])
    out = [f"{it.name}: {it.status} ({it.acked} acked, {it.lost_acked} lost, {it.crash_states} crash states)"]
    out += [f"fault applied: {it.fault_applied}"] if it.fault_applied else []
    out += [f"flush ledger: {it.flush.text}"] if it.flush else []
    out += [it.workload_error.line()] if it.workload_error else []
    out += lines + ([it.error] if it.error else []) + evidence
    out += [f"logs: {p}" for p in sorted(str(x) for x in d.path.glob("*.log"))] if d.path.exists() else []
    ET.SubElement(case, "system-out").text = "\n".join(out)


def junit(summary: CampaignSummary) -> str:
    """JUnit XML: test names without seeds (a CI's history follows ``iter-0003`` across nights),
    seeds and versions as properties, the violation and its kernel lines in the failure, logs in
    system-out. With ``--expect loss`` a loss is the expected outcome, not a failure."""
    its = summary.all
    no_verdict = (Status.ERROR, Status.GUEST_DIED)
    bad = summary.merge_problems
    errors = sum(1 for i in its if i.status in no_verdict) + len(bad)
    failures = sum(1 for i in its if i.status not in no_verdict and i.status != _expected(i, summary.expect))
    tests = str(len(its) + len(bad))
    root = ET.Element("testsuites", name="xdh", tests=tests, failures=str(failures), errors=str(errors),
                      time=str(summary.wall_seconds))
    suite = ET.SubElement(root, "testsuite", name="xdh-torture", tests=tests, failures=str(failures),
                          errors=str(errors), time=str(summary.wall_seconds))
    _add_properties(suite, {"campaign_seed": summary.seed, "expect": summary.expect,
                            **{f"version.{k}": v for k, v in sorted(summary.versions.items())}})
    for problem in bad:       # a CI's test view shows the bad shard, not only the exit code
        case = ET.SubElement(suite, "testcase", classname="xdh.merge", name=problem.label, time="0")
        ET.SubElement(case, "error", type="bad-shard", message=problem.line())
    for it in its:
        _case(suite, summary, it)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + CONTROL.sub("?", text) + "\n"   # kernel lines may hold any byte


def write(summary: CampaignSummary, run_dir: Path) -> None:
    """summary.json, summary.txt, junit.xml and the page people open, index.html; and the index
    of runs in the parent directory, when it holds runs."""
    RunDir(run_dir).write_summary(summary, table(summary), junit(summary), page.run_page(summary, run_dir))
    parent = run_dir.parent
    index = parent / "index.html"
    # only where xdh keeps runs ($XDH_RUNS), or over an index of its own: never over your page
    if parent == paths.runs_dir() or (index.exists() and page.MARK in index.read_text(errors="replace")[:400]):
        with contextlib.suppress(OSError):   # a convenience: `xdh report index` writes it again
            index.write_text(page.runs_index(parent))


def _shard(d: Path) -> Shard:
    """A run directory given to a merge. One that started (config.json) but has no summary.json,
    or a summary of another run than its config.json (an older xdh left it in a reused
    directory), is a shard whose campaign never finished. Versions compare as config.json
    recorded them at the start, for every shard alike."""
    rd = RunDir(d)
    recorded = read_json(rd.config) if rd.config.exists() else {}
    unfinished = Shard(str(d), None, recorded.get("config") or {}, recorded.get("seed"), recorded.get("versions") or {})
    if not rd.summary.exists():
        return unfinished
    s = rd.read_summary()
    if recorded and (recorded.get("seed"), recorded.get("config")) != (s.seed, s.config):
        return unfinished
    return Shard(str(d), s, s.config, s.seed, recorded.get("versions") or s.versions)


def merge(run_dirs: list[Path], out_dir: Path, shards: int | None = None,
          allow_shortfall: bool = False, campaigns: int | None = None) -> CampaignSummary:
    """Join shards (or any runs, e.g. controls) into one summary; iterations keep their run
    directory. Bad shards (``report.shards``) are recorded, shown and make the exit code non-zero:
    a loss stays a loss, anything else becomes an infrastructure failure."""
    given = [_shard(d) for d in run_dirs]
    if not any(sh.started for sh in given):      # not one run directory among them: a wrong path
        raise ConfigError(f"{run_dirs[0]} has no summary.json", hint="pass run directories written by `xdh torture`")
    problems = check(given, shards, allow_shortfall, campaigns)
    its: list[IterationRecord] = []
    canaries: list[IterationRecord] = []
    configs, seeds, versions, starts = [], [], [], []
    seconds = 0.0
    for sh in given:
        s, d = sh.summary, sh.run_dir
        if s is None:
            continue
        configs.append(s.config)
        versions.append(s.versions)
        starts += [s.started_at] if s.started_at else []
        seeds.append(s.seed)
        seconds += s.wall_seconds
        for it in s.iterations:
            its.append(dataclasses.replace(it, run_dir=it.run_dir or d, expect=it.expect or s.expect,
                                           release=it.release or s.config.get("stack", {}).get("release", "")))
        if s.canary:
            canaries.append(dataclasses.replace(s.canary, run_dir=s.canary.run_dir or d))
    its.sort(key=lambda i: (i.backend, i.fault, i.workload, i.index))
    worst_canary = next((c for c in canaries if c.status != Status.LOSS), canaries[0] if canaries else None)
    expects = {c.get("expect") for c in configs}
    found = [json.dumps(v, sort_keys=True) for v in versions]
    seed = seeds[0] if len({json.dumps(x) for x in seeds}) == 1 else [x for x in seeds if isinstance(x, int)]
    merged = summarize(out_dir, {"merged_from": [str(d) for d in run_dirs], "configs": configs,
                                 "expect": expects.pop() if len(expects) == 1 else None,
                                 **({"shards": shards} if shards else {})},
                       seed, worst_canary, its, seconds, merged_at=utc_stamp(),
                       versions=versions[0] if versions and len(set(found)) == 1 else {},
                       merge_problems=problems, started_at=min(starts, default=""))
    if problems and merged.exit_code == ExitCode.CLEAN:
        merged = dataclasses.replace(merged, exit_code=ExitCode.INFRA)
    ensure_dir(out_dir, "output directory", option="-o")
    write(merged, out_dir)
    return merged
