"""Campaign logic that needs no VM: seeds, shards, cut plans, config checks, reports."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest

from harness.catalog.workloads import Ack
from harness.config import CutMode, StackConfig, TortureConfig
from harness.crash.plan import CutPlan, iteration_seed, shard_indices
from harness.crash.run import latency_stats
from harness.errors import ConfigError
from harness.report import summary as report
from harness.report.records import IterationRecord
from harness.status import ExitCode, Status
from harness.verify.oracle import Violation


def test_iteration_seeds_are_deterministic_and_distinct():
    a = [iteration_seed(42, i) for i in range(50)]
    assert a == [iteration_seed(42, i) for i in range(50)]
    assert len(set(a)) == 50 and iteration_seed(43, 0) != a[0]


def test_shards_partition_the_iterations():
    parts = [shard_indices(10, (i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == list(range(10))
    assert parts[0] == [0, 3, 6, 9]


def test_cut_plan_follows_the_seed():
    cfg = TortureConfig(cut_acks=(20, 200))
    plans = [CutPlan.draw(cfg, s).after_acks for s in range(30)]
    assert plans == [CutPlan.draw(cfg, s).after_acks for s in range(30)]
    assert all(20 <= p <= 200 for p in plans) and len(set(plans)) > 5
    t = CutPlan.draw(TortureConfig(cut="time", cut_seconds=(1.0, 2.0)), 7)
    assert t.mode == "time" and 1.0 <= t.after_seconds <= 2.0


@pytest.mark.parametrize("kw, fragment", [
    ({"workload": "direct", "fault": "nobarrier"}, "needs a filesystem"),
    ({"fault": "flush-eio", "stack": StackConfig(backend="qdisk-qcow2")},
     "qdisk-qcow2"),
    ({"workload": "mmap"}, "unknown workload"),
    ({"fault": "bitflip"}, "unknown fault"),
    ({"cut_acks": (50, 10)}, "bad --cut-acks"),
    ({"shard": (3, 2)}, "bad shard"),
    ({"iterations": 0}, "at least 1"),
    ({"flush_points": -7}, "--flush-points"),
    ({"crash_subsets": -1}, "--crash-subsets"),
])
def test_bad_campaigns_are_rejected(kw, fragment):
    with pytest.raises(ConfigError) as ei:
        TortureConfig(**kw).validate()
    assert fragment in ei.value.oneline()


def test_config_round_trips_through_json():
    cfg = TortureConfig(workload="sqlite", journal="delete", seed=5, shard=(2, 4))
    back = TortureConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg


def _it(name, status, lost=0):
    return IterationRecord(0, 1, name, Status(status), "append", "none", "qdisk", CutPlan(CutMode.ACKS, 5),
                           acked=10, lost_acked=lost, violations=[Violation("lost", "x", "zero", lost)] if lost else [],
                           seconds={"total": 100.0})


@pytest.mark.parametrize("canary, its, code", [
    (None, ["pass", "pass"], ExitCode.CLEAN),
    (None, ["pass", "loss"], ExitCode.LOSS),
    (None, ["pass", "error"], ExitCode.ERROR),
    (None, ["pass", "guest-died"], ExitCode.INFRA),
    (None, ["guest-died", "error"], ExitCode.ERROR),
    (None, ["error", "loss"], ExitCode.LOSS),
    ("pass", [], ExitCode.CANARY),
    ("guest-died", [], ExitCode.INFRA),
    ("loss", ["pass"], ExitCode.CLEAN),
])
def test_exit_codes(canary, its, code, tmp_path):
    c = _it("canary", canary, 3 if canary == "loss" else 0) if canary else None
    s = report.summarize(tmp_path, {}, 1, c, [_it(f"iter-{i}", st, 2 if st == "loss" else 0)
                                              for i, st in enumerate(its)], 10.0)
    assert s.exit_code == code


@pytest.mark.parametrize("expect, its, code", [
    ("loss", ["loss", "loss"], ExitCode.CLEAN),      # a positive control that behaves: green
    ("loss", ["loss", "pass"], ExitCode.LOSS),       # the fault was not caught once
    ("clean", ["pass", "pass"], ExitCode.CLEAN),
    ("clean", ["pass", "loss"], ExitCode.LOSS),
    ("loss", ["loss", "error"], ExitCode.ERROR),     # a harness failure is never green
    ("loss", ["loss", "guest-died"], ExitCode.INFRA),
])
def test_expect_makes_a_control_that_behaves_exit_0(expect, its, code, tmp_path):
    s = report.summarize(tmp_path, {"expect": expect}, 1, None,
                         [_it(f"iter-{i}", st, 2 if st == "loss" else 0) for i, st in enumerate(its)], 10.0)
    assert s.exit_code == code
    junit = ET.fromstring(report.junit(s))
    want = {"loss": "loss", "clean": "pass"}[expect]
    want_failures = sum(1 for st in its if st in ("loss", "pass") and st != want)
    assert int(junit.get("failures")) == want_failures and int(junit.get("errors")) == its.count("error") + \
        its.count("guest-died")


def test_junit_names_do_not_follow_the_seed(tmp_path):
    """A CI's test history follows (release, backend, fault, workload, iteration) across nights."""
    names = []
    for seed in (111, 222):
        rec = dataclasses.replace(_it("iter-0003", "loss", 2), seed=seed * 1000 + 7, release="trixie")
        root = ET.fromstring(report.junit(report.summarize(tmp_path, {"expect": "loss"}, seed, None, [rec], 5.0)))
        case = root.find(".//testcase")
        names.append((case.get("classname"), case.get("name")))
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["seed"] == str(seed * 1000 + 7) and props["expected"] == "loss"
        assert case.find("failure") is None and "lost: x: found zero" in case.find("system-out").text
    assert names[0] == names[1] == ("xdh.trixie.qdisk.none.append", "iter-0003")


def test_junit_and_merge(tmp_path):
    for name, st in (("a", "pass"), ("b", "loss")):
        d = tmp_path / name
        d.mkdir()
        report.write(report.summarize(d, {}, 9, None, [_it("iter-0000", st, 4 if st == "loss" else 0)], 50.0), d)
    junit = (tmp_path / "b" / "junit.xml").read_text()
    assert 'failures="1"' in junit and "4 acknowledged writes lost" in junit
    merged = report.merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert merged.counts() == {Status.PASS: 1, Status.LOSS: 1, Status.GUEST_DIED: 0, Status.ERROR: 0}
    assert merged.exit_code == ExitCode.LOSS and merged.wall_seconds == 100.0
    assert (tmp_path / "m" / "junit.xml").read_text().count("<testcase") == 2
    # a merge of controls: each run's iterations judged by their own --expect
    for name, st, expect in (("c", "pass", "clean"), ("d", "loss", "loss")):
        d = tmp_path / name
        d.mkdir()
        report.write(report.summarize(d, {"expect": expect}, 9, None, [_it("iter-0000", st, 4 * (st == "loss"))],
                                      5.0), d)
    controls = report.merge([tmp_path / "c", tmp_path / "d"], tmp_path / "m3")
    assert controls.exit_code == ExitCode.CLEAN and 'failures="0"' in (tmp_path / "m3" / "junit.xml").read_text()
    with pytest.raises(ConfigError):
        report.merge([tmp_path / "nothing"], tmp_path / "m2")


def test_latency_stats():
    acks = [Ack(str(i), 10.0 + i * 0.1, 1000 + i) for i in range(101)]
    st = latency_stats(acks)
    assert st["p50"] == 1050 and st["p99"] == 1099 and st["ops_per_s"] == pytest.approx(10.0)


def test_summary_of_no_iterations_says_so(tmp_path):
    s = report.summarize(tmp_path, {}, 1, None, [], 3.0)
    assert s.iterations_per_hour is None and "None" not in report.table(s)
    assert "no iterations ran" in report.table(s)


def test_config_is_frozen_and_the_seed_resolved_without_touching_it():
    import dataclasses
    cfg = TortureConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    r = cfg.resolved()
    assert cfg.seed is None and isinstance(r.seed, int) and r.resolved() is r
