"""Short real torture runs: the negative and positive controls, and reproduce.

Full campaigns (10+ iterations per cell) belong in docs/, not CI; these keep 2
iterations each so every oracle is proven on the real stack in every CI run.
"""

from __future__ import annotations

import json

import pytest

from harness import report
from harness.stack import StackConfig
from harness.torture import TortureConfig, load_iteration, run_campaign

pytestmark = pytest.mark.stack


def _campaign(tmp_path, name, **kw):
    cfg = TortureConfig(iterations=2, seed=kw.pop("seed", 20261125), canary=False, cut_acks=(30, 80),
                        stack=StackConfig(), **kw)
    return run_campaign(cfg, tmp_path / name, lambda m: print(m, flush=True), versions={})


@pytest.fixture(scope="module")
def positive(images, tmp_path_factory):
    """drop-flush on append: every iteration must lose acknowledged writes."""
    return _campaign(tmp_path_factory.mktemp("pos"), "run", workload="append", fault="drop-flush")


def test_negative_control_reports_nothing(images, tmp_path):
    s = _campaign(tmp_path, "neg", workload="append", fault="none")
    assert s["counts"] == {"pass": 2, "loss": 0, "error": 0}, report.table(s)
    assert s["exit_code"] == report.EXIT_CLEAN
    for it in s["iterations"]:
        assert it["acked"] >= 30 and it["lost_acked"] == 0 and it["crash_image"] is None


def test_positive_control_is_caught(positive):
    s = positive
    assert s["counts"]["loss"] == 2, report.table(s)
    assert s["exit_code"] == report.EXIT_LOSS
    for it in s["iterations"]:
        assert it["lost_acked"] > 0 and it["crash_image"]
    junit = (__import__("pathlib").Path(s["run_dir"]) / "junit.xml").read_text()
    assert junit.count("<failure") == 2


def test_reproduce_gives_the_same_verdict(positive, tmp_path):
    it_dir = __import__("pathlib").Path(positive["iterations"][0]["crash_image"]).parent
    recorded = json.loads((it_dir / "verdict.json").read_text())
    it = load_iteration(it_dir, lambda m: None)
    again = it.reverify(tmp_path / "reproduce")
    assert [(v.kind, v.what, v.found) for v in again.violations] == \
        [(v["kind"], v["what"], v["found"]) for v in recorded["violations"]]
    assert again.lost_acked == recorded["lost_acked"] > 0
