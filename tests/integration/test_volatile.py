"""The volatile disk-cache model on the real stack, every flush a crash state, verified in one
batch by the guest kernel: its negative control (no fault: every state passes, each judged with
the acks its flush covers), its positive controls (a disk that lies about flushes, invisible to
the plain power cut; a state with the workload's writes taken out must fail at a flush point,
not only at the end), and one failing state reproduced alone by both verifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.campaign import reproduce
from harness.campaign.campaign import run_campaign
from harness.catalog import workloads
from harness.config import StackConfig, TortureConfig, VerifyPath
from harness.crash import writelog
from harness.crash.files import load_acks
from harness.crash.states import plan_states
from harness.report import summary as report
from harness.report.records import CampaignSummary
from harness.report.rundir import IterationDir
from harness.verify.batch import LogView, StateJob, verify_states
from harness.verify.fast import FastVerifier
from harness.verify.guest import VerifyJob
from harness.verify.oracle import judge
from harness.vm.disks import make_dut

pytestmark = pytest.mark.stack


def _campaign(tmp_path, name, **kw):
    cfg = TortureConfig(iterations=kw.pop("iterations", 1), seed=20261126, canary=False,
                        cut_acks=kw.pop("cut_acks", (15, 40)), stack=StackConfig(), **kw)
    s = run_campaign(cfg, tmp_path / name, lambda m: print(m, flush=True), versions={}).summary
    return s.to_json()      # as summary.json holds it


def _table(s: dict) -> str:
    return report.table(CampaignSummary.from_json(s))


def _states(summary, it) -> dict:
    return json.loads(Path(summary["run_dir"], "iterations", it["name"], "states", "states.json").read_text())


TORN = Path(__file__).resolve().parent / "workloads" / "torn-record" / "workload.toml"
KV = Path(__file__).resolve().parents[2] / "examples" / "kvstore" / "workload.toml"


@pytest.fixture(scope="module")
def clean(images, tmp_path_factory):
    """A clean iteration, every flush point checked, every subset of the small epochs, torn writes
    at 4 KiB; the images kept for the tamper test (the verifier's reuse across iterations is
    test_torture's positive control's)."""
    return _campaign(tmp_path_factory.mktemp("volatile"), "neg", workload="append", fault="none",
                     disk_cache="volatile", keep_images=True, atomic_write=4096)


def test_every_flush_is_a_state_and_a_clean_stack_passes_them_all(clean):
    s = clean
    assert s["counts"] == {"pass": 1, "loss": 0, "guest-died": 0, "error": 0}, _table(s)
    for it in s["iterations"]:
        st = _states(s, it)
        log = st["log"]
        flush_states = [x for x in st["states"] if "+" not in x["name"] and "~" not in x["name"]]
        # one state per flush of the workload (each fsync flushes at least once), plus the one before it
        assert len(flush_states) > it["acked"] and flush_states[0]["name"].startswith("flush-")
        assert log["generated"] == len(st["states"]) and log["distinct"] <= log["generated"]
        assert it["crash_states"] == 1 + log["distinct"] and it["states_generated"] == 1 + log["generated"]
        assert all(x["ok"] for x in st["states"])
        required = [x["recipe"]["required"] for x in flush_states]
        assert required == sorted(required) and required[0] == 0 and required[-1] == it["acked"]
        assert any(0 < r < it["acked"] for r in required)      # earlier flushes require earlier acks
        depth = it["depth"]
        cov, slack = depth["coverage"], depth["slack"]
        print(f"{it['name']}: coverage {cov}; slack {slack}; phases {depth['phase_seconds']}")
        assert cov["torn"] == sum("~" in x["name"] for x in st["states"]) > 0     # torn at 4 KiB: all passed
        assert cov["exhaustive_epochs"] > 0 and cov["subsets"] == sum("+" in x["name"] for x in st["states"])
        assert slack["states"] == len(flush_states) and slack["acks_max"] >= slack["acks_median"] >= 0
        assert {"apply", "snapshot", "mount", "verify", "umount"} <= set(depth["phase_seconds"])
        assert depth["verify"] == "in-process"


def test_the_ledger_agrees_with_independent_counts(clean):
    """The flush ledger against counts it does not use: the outer QEMU's flush_operations for the
    disk under test against the flush entries blklogwrites wrote to the write log (the same
    flushes, counted by QEMU's block layer and logged one node below it; the log may hold a few
    more: its count starts a moment before the first sample), and the domU's flush requests
    against the workload's acks (every fsync of append flushes at least once)."""
    for it in clean["iterations"]:
        g = IterationDir(Path(clean["run_dir"], "iterations", it["name"])).read_ledger()
        assert g is not None and g.evidence.log_flushes is not None, it["name"]
        outer, logged = g.delta("outer_flushes"), g.evidence.log_flushes
        print(f"{it['name']}: outer QEMU {outer} flushes, write log {logged}; domU {g.delta('domu_flushes')} "
              f"flush requests for {g.delta('acks')} acks; sampling {g.sampled_seconds} s")
        assert outer is not None and 0 <= logged - outer <= 3, (outer, logged)
        assert (g.delta("domu_flushes") or 0) >= (g.delta("acks") or 0) > 0
        assert g.end.outer_no_flush is False and g.end.outer_failed == 0


@pytest.mark.parametrize("workload", ["sqlite", "direct"])
def test_other_workloads_batch_every_flush_state_and_pass_clean(workload, images, tmp_path):
    """sqlite's verify opens a database (closed before the unmount, in the same process); direct
    verifies the raw snapshot device: both in the batch, every state judged."""
    s = _campaign(tmp_path, workload, workload=workload, fault="none", disk_cache="volatile", cut_acks=(10, 25))
    assert s["counts"]["pass"] == 1, _table(s)
    it = s["iterations"][0]
    st = _states(s, it)
    assert it["crash_states"] == 1 + st["log"]["distinct"] > it["acked"] and all(x["ok"] for x in st["states"])


def test_a_torn_write_is_caught_only_by_a_torn_state(images, tmp_path):
    """Positive control of --atomic-write: an 8 KiB record overwritten in place (checksummed) on a
    disk that writes 4 KiB atomically. Every whole-write state of the run passes (the model without
    torn writes cannot see it); a state with one unit of the overwrite must lose the acked version.
    Its verify is resident (verify-many on the raw device: one request line per state)."""
    s = _campaign(tmp_path, "torn", workload=str(TORN), fault="none", disk_cache="volatile", atomic_write=4096,
                  cut_acks=(10, 20))
    assert s["counts"]["loss"] == 1, _table(s)
    st = _states(s, s["iterations"][0])
    assert s["iterations"][0]["depth"]["verify"] == "resident"
    failing = [x for x in st["states"] if not x["ok"]]
    assert failing and all("~" in x["name"] for x in failing), [x["name"] for x in failing]
    assert all(x["ok"] for x in st["states"] if "~" not in x["name"])
    assert {v["kind"] for x in failing for v in x["violations"]} <= {"corrupt", "missing"}


def test_your_workload_s_resident_verify_within_a_states_budget(images, tmp_path):
    """The key-value example's verify-many mode: started once for the batch, one state per line.
    With --states-budget 40: every flush state first, the rest counted as skipped; a clean stack
    passes every state verified."""
    s = _campaign(tmp_path, "kv", workload=str(KV), fault="none", disk_cache="volatile", cut_acks=(10, 25),
                  atomic_write=4096, states_budget=40)
    assert s["counts"]["pass"] == 1, _table(s)
    it = s["iterations"][0]
    st = _states(s, it)
    assert it["depth"]["verify"] == "resident" and it["crash_states"] == 1 + 40
    assert st["log"]["distinct"] == 40 and it["depth"]["coverage"]["skipped"] > 0
    names = {x["name"] for x in st["states"]}
    flush = [n for n in names if "+" not in n and "~" not in n]
    assert len(flush) > it["acked"] and all(x["ok"] for x in st["states"])


def test_a_state_missing_the_workload_writes_fails_at_its_flush(clean, images, tmp_path):
    """Positive control of the batch verifier and of the per-flush oracle: take the workload's
    writes out of the log up to a middle flush; that state must lose its required acks, and
    the same state untouched must pass."""
    it_rec = clean["iterations"][0]
    it = IterationDir(Path(clean["run_dir"], "iterations", it_rec["name"]))
    log = writelog.parse(it.write_log)
    acks = load_acks(it.acks)
    start = json.loads((it.path / "cut.json").read_text())["workload_start_entry"]
    plan = plan_states(log, acks, 1, 0, -1, start)
    mid = next(st for st in plan.states if st.required >= len(acks) // 2)
    entries = log.rows()
    gutted = [[s, n, writelog.MARK, 0, 0] if start <= i <= mid.flush and log.entries[i].is_write else [s, n, f, o, d]
              for i, (s, n, f, o, d) in enumerate(entries)]
    meta = it.read_meta()
    job = VerifyJob(workloads.get("append"), meta["seed"], {"record_size": 512, "sync": "fsync"})
    recorded_base = _states(clean, it_rec)["log"]["base"]
    base = tmp_path / "base.img"
    if recorded_base == "blank":
        make_dut(base, StackConfig().dut_size_mib)
    else:
        base = Path(recorded_base)
    with FastVerifier(tmp_path / "verifier", images.pair().domu, images) as fv:
        reports = {}
        for name, view in (("intact", entries), ("gutted", gutted)):
            res = list(verify_states(fv, base, LogView(log.path, log.sectorsize, view), [StateJob(mid.flush)], job,
                                     tmp_path / name))
            reports[name] = judge("append", acks[:mid.required], res[0].report, issued=len(acks) + 1)
    assert reports["intact"].ok, reports["intact"].violations
    assert not reports["gutted"].ok and reports["gutted"].lost_acked == mid.required


def test_a_state_verified_in_a_batch_reads_as_it_does_alone(clean, images, tmp_path):
    """No state leaks into the next: the batch empties one snapshot per state (a new table, its
    cached pages dropped) instead of making a device per state. States of every kind (flush,
    subset, torn) verified one after another in one batch report exactly what each reports alone."""
    it_rec = clean["iterations"][0]
    it = IterationDir(Path(clean["run_dir"], "iterations", it_rec["name"]))
    log = writelog.parse(it.write_log)
    start = json.loads((it.path / "cut.json").read_text())["workload_start_entry"]
    plan = plan_states(log, load_acks(it.acks), 1, 3, -1, start, 4, 4096)
    picked = [plan.distinct[0], next(s for s in plan.distinct if "~" in s.name),
              next(s for s in reversed(plan.distinct) if "+" in s.name), plan.distinct[-1]]
    picked.sort(key=lambda s: s.flush)
    job = VerifyJob(workloads.get("append"), it.read_meta()["seed"], {"record_size": 512, "sync": "fsync"})
    base = tmp_path / "base.img"
    recorded_base = _states(clean, it_rec)["log"]["base"]
    if recorded_base == "blank":
        make_dut(base, StackConfig().dut_size_mib)
    else:
        base = Path(recorded_base)
    view = LogView(log.path, log.sectorsize, log.rows())
    jobs = [StateJob(s.flush, s.extra, s.torn) for s in picked]
    with FastVerifier(tmp_path / "verifier", images.pair().domu, images) as fv:
        together = [r.report for r in verify_states(fv, base, view, jobs, job, tmp_path / "batch")]
        alone = [next(iter(verify_states(fv, base, view, [j], job, tmp_path / f"alone{n}"))).report
                 for n, j in enumerate(jobs)]
    assert together == alone, [s.name for s in picked]
    assert len({json.dumps(r, sort_keys=True) for r in alone}) > 1      # different states, different reports


def test_a_lying_disk_is_caught_only_with_the_volatile_model_and_its_state_reproduces(images, tmp_path):
    plain = _campaign(tmp_path, "plain", workload="append", fault="disk-lies", disk_cache="none")
    assert plain["counts"]["pass"] == 1, _table(plain)      # the host kept every write: invisible
    # ... to the verdict, not to the flush ledger: flushes reached the outer disk, which ignored them
    assert (plain["iterations"][0]["flush"]["kind"], plain["iterations"][0]["flush"]["layer"]) == \
        ("lie", "outer disk"), plain["iterations"][0]["flush"]
    model = _campaign(tmp_path, "model", workload="append", fault="disk-lies", disk_cache="volatile")
    assert model["counts"]["loss"] == 1, _table(model)
    it = model["iterations"][0]
    assert (it["flush"]["kind"], it["flush"]["layer"]) == ("lie", "outer disk"), it["flush"]
    failing = it["states"][0]          # no flush ever reached the disk: the state before the workload
    assert failing["name"] == "no-flush" and not failing["ok"] and failing["lost_acked"] == it["acked"]
    assert Path(it["crash_image"]).exists()
    assert Path(s := model["run_dir"], "iterations", it["name"], "dut-writes.log").exists(), s
    # that one state, rebuilt from its recipe and verified alone (by the fast verifier: a full
    # reboot on a kept image is test_torture's test_reproduce_gives_the_same_verdict[reboot],
    # the same verifier call reverify_state makes per path)
    itdir = IterationDir(Path(model["run_dir"], "iterations", it["name"]))
    again = reproduce.reverify_state(itdir, "no-flush", (VerifyPath.FAST,), print)
    assert [(r.verdict.ok, r.verdict.lost_acked, r.same) for r in again] == [(False, it["acked"], True)]
