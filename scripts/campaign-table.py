#!/usr/bin/env python3
"""Print a markdown table of torture campaign run directories (for docs/): one row per run."""
import json
import statistics
import sys
from pathlib import Path

print("| run | iterations | loss | pass | error | acked | acked lost | s/iteration (mean) | iterations/hour "
      "| sync p50 / p99 ms (median of iterations) | canary |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for d in sys.argv[1:]:
    s = json.loads((Path(d) / "summary.json").read_text())
    its = s["iterations"]
    secs = [i["seconds"].get("total", 0) for i in its]
    mean = statistics.mean(secs) if secs else 0
    p50 = [i["fsync_latency_us"].get("p50") for i in its if i.get("fsync_latency_us")]
    p99 = [i["fsync_latency_us"].get("p99") for i in its if i.get("fsync_latency_us")]
    lat = f"{statistics.median(p50) / 1000:.2f} / {statistics.median(p99) / 1000:.2f}" if p50 else "-"
    c = s.get("canary")
    canary = "-" if not c else ("caught" if c["status"] == "loss" else f"NOT caught ({c['status']})")
    k = s["counts"]
    print(f"| {Path(d).name} | {len(its)} | {k['loss']} | {k['pass']} | {k['error']} | {s['acked_total']} | "
          f"{s['lost_acked_total']} | {mean:.1f} | {3600 / mean if mean else 0:.0f} | {lat} | {canary} |")
