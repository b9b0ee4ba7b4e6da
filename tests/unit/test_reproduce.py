"""`xdh reproduce --rerun`: the same seed and cut plan, on the recorded or another release, both
verdicts side by side (fakes for the kit and the iteration; no VM)."""

from __future__ import annotations

import contextlib

import pytest

from harness.cli import main
from harness.config import StackConfig, TortureConfig
from harness.crash.ended import WorkloadEnd
from harness.crash.plan import IterationPlan
from harness.images import ImageStore
from harness.jsonio import write_json
from harness.report.records import CutRecord, IterationRecord
from harness.report.rundir import IterationDir, RunDir
from harness.status import Status
from harness.verify.oracle import Verdict, Violation


@pytest.fixture
def recorded(tmp_path):
    """A campaign's iteration that lost acked writes on bookworm."""
    cfg = TortureConfig(fault="drop-flush", seed=99, stack=StackConfig())
    plan = IterationPlan.make(cfg, 3)
    it = RunDir(tmp_path / "run").create().iteration(3)
    it.write_meta(plan.index, plan.seed, plan.name, plan.cut.to_json(), cfg.to_json())
    it.write_result(IterationRecord(3, plan.seed, plan.name, Status.LOSS, "append", "drop-flush", "qdisk",
                                    plan.cut, acked=80, lost_acked=80,
                                    violations=[Violation("lost", "records 0..79", "zero", 80, ranges=[(0, 79)])],
                                    workload_error=WorkloadEnd(80, 1, "OSError: [Errno 5] Input/output error")))
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
    assert out[1].endswith("; the workload ended before the cut (exit 1 after 80 acks): OSError: [Errno 5] "
                           "Input/output error")


def test_release_without_rerun_is_a_usage_error(recorded, capsys):
    it, _ = recorded
    assert main(["reproduce", str(it.path), "--release", "trixie"]) == 2
    assert "--domu-kernel, --stock and --bisect apply to --rerun only" in capsys.readouterr().err


class _Kit:
    """The kit a re-verification asks for: its config is what this fake keeps."""
    made: list[TortureConfig] = []

    def __init__(self, cfg, *a, **k):
        self.cfg = cfg
        _Kit.made.append(cfg)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def verifier(self, path, stack):
        return path


@pytest.mark.parametrize(("argv", "reset"), [([], "snapshot"), (["--reset", "boot"], "boot"),
                                             (["--verify", "fast"], "boot")])
def test_reverify_brings_the_stack_up_as_the_run_did_unless_told(recorded, argv, reset, monkeypatch, capsys):
    """The recorded run restored its saved stack, so a reboot verification restores it onto the
    crash image; ``--reset boot`` boots cold; the fast verifier needs no saved stack."""
    it, plan = recorded
    (it.path / "dut.img").write_bytes(b"\0")
    write_json(it.verdict, Verdict("append", 80, [Violation("lost", "records 0..79", "zero", 80,
                                                            ranges=[(0, 79)])]).to_json())
    _Kit.made = []
    monkeypatch.setattr("harness.campaign.reproduce.Kit", _Kit)
    monkeypatch.setattr(ImageStore, "pair", lambda self, spec="bookworm": ("images of", spec))
    monkeypatch.setattr(IterationDir, "read_cut", lambda self: CutRecord(1.0, 80, plan.cut))
    monkeypatch.setattr("harness.campaign.reproduce.verify_image", lambda v, *a, **k: Verdict(
        "append", 80, [Violation("lost", "records 0..79", "zero", 80, ranges=[(0, 79)])]))
    assert main(["reproduce", str(it.path), *argv]) == 1      # the recorded loss again
    (cfg,) = _Kit.made
    assert cfg.reset.value == reset and not cfg.canary
    out = capsys.readouterr()
    assert "same verdict as recorded: yes" in out.out
    assert "in the recorded crash run, the workload ended before the cut (exit 1 after 80 acks): OSError" in out.out
    assert ("the saved stack restored onto it" if reset == "snapshot" else
            "the fast verifier" if argv == ["--verify", "fast"] else "a cold-booted stack") in out.err


def test_reset_with_rerun_is_a_usage_error(recorded, capsys):
    it, _ = recorded
    assert main(["reproduce", str(it.path), "--rerun", "--reset", "boot"]) == 2
    assert "--reset applies to re-verification" in capsys.readouterr().err
