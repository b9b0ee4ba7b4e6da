"""``judge`` dispatches through ``oracle.MODELS``: one entry per model a manifest may name."""

from __future__ import annotations

import pytest

from harness.catalog import workloads
from harness.catalog.workloads import Ack, Workload
from harness.verify import oracle
from harness.verify.oracle import Violation, judge


def test_every_model_a_manifest_may_name_has_an_oracle():
    assert set(oracle.MODELS) == set(workloads.MODELS)


@pytest.mark.parametrize("model", workloads.MODELS)
def test_judge_dispatches_through_the_table(monkeypatch, model):
    calls = []

    def fake(w, acks, report, cut_t, seed, issued):
        calls.append((w.name, len(acks), report, cut_t, seed, issued))
        return [Violation("lost", "x", "y")]
    monkeypatch.setitem(oracle.MODELS, model, fake)
    w = Workload("mine", "", model=model)
    v = judge(w, [Ack("0", 1.0)], {"r": 1}, cut_t=2.0, seed=3, issued=4)
    assert calls == [("mine", 1, {"r": 1}, 2.0, 3, 4)] and [x.kind for x in v.violations] == ["lost"]


def test_an_unmountable_filesystem_is_judged_before_any_model(monkeypatch):
    monkeypatch.setattr(oracle, "MODELS", {})
    v = judge("append", [Ack("0", 1.0)], {"mount_error": "bad superblock"})
    assert [x.kind for x in v.violations] == ["unmountable"]
