"""The volatile disk-cache model on the real stack: its negative control (no fault: every crash
state it builds passes) and its reason to exist (a disk that lies about flushes is invisible
to the plain power cut, and caught by the model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.campaign.campaign import run_campaign
from harness.config import StackConfig, TortureConfig
from harness.report import summary as report

pytestmark = pytest.mark.stack


def _campaign(tmp_path, name, **kw):
    cfg = TortureConfig(iterations=kw.pop("iterations", 1), seed=20261126, canary=False, cut_acks=(30, 80),
                        crash_subsets=2, flush_points=2, stack=StackConfig(), **kw)
    return run_campaign(cfg, tmp_path / name, lambda m: print(m, flush=True), versions={}).summary


def test_volatile_model_negative_control(images, tmp_path):
    s = _campaign(tmp_path, "neg", workload="append", fault="none", disk_cache="volatile", iterations=2)
    assert s["counts"] == {"pass": 2, "loss": 0, "guest-died": 0, "error": 0}, report.table(s)
    for it in s["iterations"]:
        names = [st["name"] for st in it["states"]]
        assert names[0] == "worst" and any(n.startswith("flush-") for n in names), names
        assert it["crash_states"] == 1 + len(names) >= 3
        states = json.loads(Path(s["run_dir"], "iterations", it["name"], "states", "states.json").read_text())
        assert states["log"]["flushes"] > 0 and states["log"]["workload_start_entry"] > 0


def test_a_lying_disk_is_caught_only_with_the_volatile_model(images, tmp_path):
    plain = _campaign(tmp_path, "plain", workload="append", fault="disk-lies", disk_cache="none")
    assert plain["counts"]["pass"] == 1, report.table(plain)      # the host kept every write: invisible
    model = _campaign(tmp_path, "model", workload="append", fault="disk-lies", disk_cache="volatile")
    assert model["counts"]["loss"] == 1, report.table(model)
    it = model["iterations"][0]
    worst = it["states"][0]
    assert worst["name"] == "worst" and not worst["ok"] and worst["lost_acked"] == it["acked"]
    assert Path(it["crash_image"]).exists()
    assert Path(s := model["run_dir"], "iterations", it["name"], "dut-writes.log").exists(), s
