"""Short real torture runs: the negative and positive controls, and reproduce.

Full campaigns (10+ iterations per cell) belong in docs/, not CI; these keep 1-2
iterations each so every oracle is proven on the real stack in every CI run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.campaign.campaign import run_campaign
from harness.campaign.reproduce import reverify
from harness.config import StackConfig, TortureConfig, VerifyPath
from harness.report import summary as report
from harness.report.records import CampaignSummary
from harness.report.rundir import IterationDir
from harness.status import ExitCode

pytestmark = pytest.mark.stack
GIVES_UP = Path(__file__).resolve().parent / "workloads" / "gives-up" / "workload.toml"


def _campaign(tmp_path, name, **kw):
    cfg = TortureConfig(iterations=kw.pop("iterations", 2), seed=kw.pop("seed", 20261125), canary=False,
                        cut_acks=(15, 40), stack=StackConfig(), **kw)
    s = run_campaign(cfg, tmp_path / name, lambda m: print(m, flush=True), versions={}).summary
    return s.to_json()      # as summary.json holds it


def _table(s: dict) -> str:
    return report.table(CampaignSummary.from_json(s))


@pytest.fixture(scope="module")
def positive(gitlab_nightly):
    """drop-flush on append, on the fast path, 2 iterations (cut after 15-40 acks, no canary): every
    iteration must lose acknowledged writes. Run as a night runs it: the GitLab template's positive
    control in 2 shards under gitlab-ci-local, merged by its merge job (``gitlab_nightly``)."""
    return gitlab_nightly.merged


def test_negative_control_reports_nothing_and_both_verifiers_agree(images, tmp_path):
    """A fast path crash run; its crash image verified by the fast verifier and by the Xen stack
    brought up on it (the saved stack restored onto the crash image; a cold boot is
    test_baseline_path_catches_the_positive_control's). One iteration: a second only
    repeated the reboot (the verifier's reuse across crash images is proven by the positive
    control's two iterations and test_volatile's)."""
    s = _campaign(tmp_path, "neg", workload="append", fault="none", verify="both", iterations=1)
    assert s["counts"] == {"pass": 1, "loss": 0, "guest-died": 0, "error": 0}, _table(s)
    assert s["exit_code"] == ExitCode.CLEAN
    for it in s["iterations"]:
        assert it["acked"] >= 15 and it["lost_acked"] == 0 and it["crash_image"] is None
        assert it["reset"] == "snapshot" and set(it["verdicts"]) == {"fast", "reboot"}
        assert all(v["ok"] for v in it["verdicts"].values())
        it_dir = IterationDir(Path(s["run_dir"], "iterations", it["name"]))
        assert json.loads((it_dir.verify_dir("reboot") / "stack.json").read_text())["snapshot"]    # restored
        # the flush ledger names no layer, and every layer passed flushes on, none failed
        assert it["flush"]["kind"] == "none", it["flush"]
        ledger = IterationDir(Path(s["run_dir"], "iterations", it["name"])).read_ledger()
        assert ledger is not None and ledger.ring == "fdatasync"
        assert all((r.count or 0) > 0 and not r.failed for r in ledger.rows()), ledger.rows()


def test_positive_control_is_caught(positive, gitlab_nightly):
    s = positive
    assert s["counts"]["loss"] == 2, _table(s)
    assert s["exit_code"] == ExitCode.CLEAN     # losses, as --expect loss asks: the night is green
    for it in s["iterations"]:
        assert it["lost_acked"] > 0 and it["crash_image"]
        assert (it["reset"], it["verify"]) == ("snapshot", "fast")
        # attributed by the counters: no flush request left the domU's block layer
        assert (it["flush"]["kind"], it["flush"]["layer"]) == ("drop", "domU block layer"), it["flush"]
        # the fast path (restored, not booted: reset above); its time is measured, not asserted (a busy host)
        assert it["seconds"]["boot"] > 0, it["seconds"]
        assert it["expect"] == "loss"
    for shard in gitlab_nightly.shards:     # the time to a first loss, per shard (a merge has none)
        assert shard["first_loss_seconds"]["iteration"] > 0
    junit = gitlab_nightly.merged_junit     # an expected loss is a passing test case (unexpected: a failure)
    assert junit.count("<testcase") == 2 and junit.count("<failure") == 0


@pytest.mark.parametrize("path", ["reboot", "fast"])
def test_reproduce_gives_the_same_verdict(positive, tmp_path, path):
    """The kept crash image is standalone (no backing file) and gives the recorded verdict on a
    fresh stack brought up as the run did (the saved stack restored onto it; a cold boot is
    ``--reset boot``, the boot test_baseline_path_catches_the_positive_control runs) and in a
    fresh fast verifier."""
    first = next(it for it in positive["iterations"] if it["name"] == "iter-0000")    # shard 1's
    it_dir = Path(first["crash_image"]).parent
    crash = Path(first["crash_image"])
    info = subprocess.run(["qemu-img", "info", "--output=json", str(crash)], capture_output=True, text=True, check=True)
    assert "backing-filename" not in json.loads(info.stdout)
    recorded = json.loads((it_dir / "verdict.json").read_text())
    r = reverify(IterationDir(it_dir), VerifyPath(path), lambda m: print(m, flush=True))
    if path == "reboot":
        assert json.loads((r.out_dir / "stack.json").read_text()).get("snapshot")     # restored, as the run was
    again = r.verdict
    assert r.same and not list(r.out_dir.rglob("*.qcow2"))
    assert [(v.kind, v.what, v.found) for v in again.violations] == \
        [(v["kind"], v["what"], v["found"]) for v in recorded["violations"]]
    assert again.lost_acked == recorded["lost_acked"] > 0


def test_baseline_path_catches_the_positive_control(images, tmp_path):
    """The path without a saved stack (a cold boot per crash run) stays available and correct. Its
    crash image is verified by the fast verifier: the reboot verifier's verdict is compared with the
    fast one's in the negative control, and a cold boot on a crash image (``reproduce --reset boot``,
    ``--verify reboot`` with ``--reset boot``) is this boot with another disk under test.

    The workload is a manifest workload that gives up before the cut (acks 12 fsynced records,
    then exits 1 as after a failed fsync): the workload-error contract on the real stack. Its acks
    are judged (the dropped flushes lose them: a LOSS, not a harness error) and how it ended is
    recorded and shown (docs/workloads.md)."""
    s = _campaign(tmp_path, "base", workload=str(GIVES_UP), fault="drop-flush", iterations=1, reset="boot",
                  verify="fast")
    assert s["counts"]["loss"] == 1, _table(s)
    it = s["iterations"][0]
    assert (it["reset"], it["verify"]) == ("boot", "fast") and it["lost_acked"] > 0
    assert (it["acked"], it["error"]) == (12, ""), it
    assert it["workload_error"] == {"after_acks": 12, "exit_status": 1, "message":
                                    "gives-up: fsync of record 12: [Errno 5] Input/output error (as told)"}
    said = "the workload ended before the cut (exit 1 after 12 acks): gives-up: fsync of record 12"
    assert said in (tmp_path / "base" / "summary.txt").read_text()
    assert said in (tmp_path / "base" / "junit.xml").read_text()       # the failure text of the loss
