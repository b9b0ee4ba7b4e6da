"""`xdh reproduce --rerun`: the same seed and cut plan, on the recorded or another release, both
verdicts side by side (fakes for the kit and the iteration; no VM)."""

from __future__ import annotations

import contextlib

import pytest

from harness.cli import main
from harness.config import StackConfig, TortureConfig
from harness.crash.plan import IterationPlan
from harness.images import ImageStore
from harness.report.records import IterationRecord
from harness.report.rundir import RunDir
from harness.status import Status
from harness.verify.oracle import Violation


@pytest.fixture
def recorded(tmp_path):
    """A campaign's iteration that lost acked writes on bookworm."""
    cfg = TortureConfig(fault="drop-flush", seed=99, stack=StackConfig())
    plan = IterationPlan.make(cfg, 3)
    it = RunDir(tmp_path / "run").create().iteration(3)
    it.write_meta(plan.index, plan.seed, plan.name, plan.cut.to_json(), cfg.to_json())
    it.write_result(IterationRecord(3, plan.seed, plan.name, Status.LOSS, "append", "drop-flush", "qdisk",
                                    plan.cut, acked=80, lost_acked=80,
                                    violations=[Violation("lost", "records 0..79", "zero", 80, ranges=[(0, 79)])]))
    return it, plan


@pytest.mark.parametrize("release", [None, "trixie"])
def test_rerun_uses_the_same_seed_and_cut_and_prints_both_verdicts(recorded, release, monkeypatch, capsys):
    it, plan = recorded
    seen = []

    def fake_run_iteration(p, kit, where, progress):
        seen.append((p, where.path))
        return IterationRecord(p.index, p.seed, p.name, Status.PASS, "append", p.cfg.fault, "qdisk",
                               p.cut, acked=79)
    monkeypatch.setattr("harness.campaign.reproduce.run_iteration", fake_run_iteration)
    monkeypatch.setattr("harness.campaign.reproduce.Kit", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(ImageStore, "pair", lambda self, spec="bookworm": ("images of", spec))
    args = ["reproduce", str(it.path), "--rerun"] + (["--release", release] if release else [])
    assert main(args) == 0
    (p, where), = seen
    assert (p.seed, p.cut, p.index, p.cfg.fault) == (plan.seed, plan.cut, 3, "drop-flush")
    assert p.cfg.stack.release == (release or "bookworm") and not p.cfg.canary
    assert where.parent == it.path.parent.parent and where.name.startswith("rerun-iter-0003-")
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["recorded", "LOSS", "acked=80"] and out[2].split() == ["on", "bookworm"]
    assert out[3].split()[:3] == ["rerun", "PASS", "acked=79"] and out[4].split() == ["on", release or "bookworm"]


def test_release_without_rerun_is_a_usage_error(recorded, capsys):
    it, _ = recorded
    assert main(["reproduce", str(it.path), "--release", "trixie"]) == 2
    assert "--domu-kernel, --stock and --bisect apply to --rerun only" in capsys.readouterr().err
