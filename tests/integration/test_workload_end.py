"""The workload-error contract on the real stack: a workload whose ``run`` exits before the cut
(as after a failed fsync) is judged on its acks, not reported as a harness error; how it ended is
in result.json, summary.txt and the JUnit case (docs/workloads.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
GIVES_UP = ROOT / "tests" / "integration" / "workloads" / "gives-up" / "workload.toml"


def test_a_workload_that_exits_early_is_judged_not_errored(images, warm_campaign, tmp_path):
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "harness.cli", "torture", "--workload", str(GIVES_UP),
                          "--no-canary", "--iterations", "1", "--seed", "11", "--cut-acks", "500-500",
                          "--run-dir", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]           # a verdict (PASS), not a harness error (6)
    rec = json.loads((run / "iterations" / "iter-0000" / "result.json").read_text())
    assert (rec["status"], rec["acked"], rec["lost_acked"], rec["error"]) == ("pass", 12, 0, ""), rec
    assert rec["workload_error"] == {"after_acks": 12, "exit_status": 1, "message":
                                     "gives-up: fsync of record 12: [Errno 5] Input/output error (as told)"}
    said = "the workload ended before the cut (exit 1 after 12 acks): gives-up: fsync of record 12"
    assert said in (run / "summary.txt").read_text()
    assert said in (run / "junit.xml").read_text() and 'errors="0"' in (run / "junit.xml").read_text()
    assert "the power is cut now, its acks are judged" in out
