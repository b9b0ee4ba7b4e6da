"""Crash states in depth, on crafted write logs: every subset of a small epoch, torn writes at
the atomic unit (built alike by the host and by the guest's xdh-replay), the states budget,
the coverage figures, and the oracle's slack with its positive control."""

from __future__ import annotations

import pytest

from harness.catalog.workloads import Ack
from harness.crash import states as st_mod
from harness.crash import writelog as wl
from harness.verify.oracle import judge
from harness.verify.tightness import Slack, flush_lag, found_prefix

from .test_replay_program import _load, guest_build

SS = 512


def _log(tmp_path, ops):
    p = tmp_path / "log.bin"
    wl.write_log(p, SS, ops)
    return wl.parse(p)


def _epoch(n, size=SS, at=0):
    """A flush, then ``n`` writes of ``size`` bytes at distinct places (the epoch under test)."""
    return [("write", 100, b"Z" * SS), ("flush", 0, b"")] + [
        ("write", at + 40 * k, bytes([65 + k]) * size) for k in range(n)]


def test_a_small_epoch_gets_every_subset_and_a_large_one_samples(tmp_path):
    log = _log(tmp_path, _epoch(4))
    every = st_mod.plan_states(log, [], 1, subsets=3, flush_points=-1, exhaustive_k=4)
    subsets = {s.extra for s in every.states if "+" in s.name}
    assert len(subsets) == 2 ** 4 - 2 and all(0 < len(x) < 4 for x in subsets)
    assert every.coverage.exhaustive_epochs == every.coverage.choice_epochs == 1
    assert every.coverage.mean_fraction == 1.0 and every.coverage.subsets == 14
    sampled = st_mod.plan_states(log, [], 1, subsets=3, flush_points=-1, exhaustive_k=3)
    assert sampled.coverage.exhaustive_epochs == 0 and sampled.coverage.subsets <= 3
    assert sampled.coverage.mean_fraction == pytest.approx(sampled.coverage.subsets / 14, abs=1e-4)
    assert st_mod.plan_states(log, [], 1, subsets=0, flush_points=-1, exhaustive_k=4).coverage.subsets == 0


def test_units_split_at_the_disk_s_atomic_boundaries(tmp_path):
    log = _log(tmp_path, [("write", 6, b"x" * 12 * SS), ("write", 16, b"y" * 8 * SS), ("write", 3, b"z" * SS)])
    assert st_mod.units(log, 0, 4096) == [(0, 2), (2, 8), (10, 2)]      # sectors 6-7 | 8-15 | 16-17
    assert st_mod.units(log, 1, 4096) == [(0, 8)]                       # one aligned unit: cannot tear
    assert st_mod.units(log, 2, 4096) == [(0, 1)]
    assert st_mod.units(log, 0, 0) == [(0, 12)]


def test_torn_states_apply_part_of_one_write_alike_on_host_and_guest(tmp_path):
    log = _log(tmp_path, _epoch(3, size=3 * 4096))
    plan = st_mod.plan_states(log, [], 7, subsets=4, flush_points=-1, exhaustive_k=4, atomic_write=4096)
    torn = [s for s in plan.states if "~" in s.name]
    assert torn and plan.coverage.torn == len(torn) and plan.coverage.tearable == 3
    assert st_mod.plan_states(log, [], 7, subsets=4, flush_points=-1, exhaustive_k=4).coverage.torn == 0
    base = tmp_path / "base.img"
    base.write_bytes(b"\xee" * 160 * SS)
    replay = _load("xdh-replay")
    guest_log = replay.Log(str(log.path), SS, log.rows())
    for st in torn:
        (w, first, n), *_ = st.torn
        assert w not in st.extra and 0 < sum(p[2] for p in st.torn) < log.entries[w].nr_sectors
        img = st_mod.build(log, base, st, tmp_path / "host.img").read_bytes()
        e = log.entries[w]
        got = img[e.sector * SS:(e.sector + e.nr_sectors) * SS]
        new = bytes([got[first * SS]]) * SS
        assert new != b"\xee" * SS and got.count(new * 8) == sum(p[2] for p in st.torn) // 8   # whole units only
        assert guest_build(guest_log, base, st, tmp_path / "guest.img") == img, st.name
        assert st_mod.CrashState.from_recipe(st.recipe()) == st
    keys = {s.key for s in plan.states}
    assert len(keys) == len(plan.distinct)        # a torn state's key is its content's


def test_the_budget_keeps_every_flush_state_first_and_counts_the_rest(tmp_path):
    ops = []
    for k in range(6):
        ops += [("write", 10 * k, bytes([k + 1]) * SS), ("write", 10 * k + 5, bytes([k + 9]) * SS), ("flush", 0, b"")]
    log = _log(tmp_path, ops)
    full = st_mod.plan_states(log, [], 3, subsets=3, flush_points=-1, exhaustive_k=4)
    flush = [s for s in full.distinct if s.is_flush_state]
    some = st_mod.within_budget(full, len(flush) + 2, 3)
    assert len(some.distinct) == len(flush) + 2 and set(flush) <= set(some.distinct)
    assert some.coverage.skipped == len(full.distinct) - len(flush) - 2
    assert some.summary()["generated"] == len(full.states)
    assert all(s.key in {d.key for d in some.distinct} for s in some.states)
    few = st_mod.within_budget(full, 2, 3)
    assert [s.is_flush_state for s in few.distinct] == [True, True] and few.distinct[-1] == flush[-1]
    assert st_mod.within_budget(full, 0, 3) is full


def test_slack_search_and_flush_lag():
    found = [True] * 7 + [False] * 5
    assert found_prefix(lambda k: found[k - 1] if k else True, 3, 12) == 7
    assert found_prefix(lambda k: True, 12, 12) == 12
    assert flush_lag([1, 4, 9, 12], 4, 12) == 2 and flush_lag([1, 4, 9, 12], 4, 4) == 0
    s = Slack.of([(0, 0), (2, 1), (5, 3)])
    assert (s.states, s.tight, s.acks_median, s.acks_max, s.flushes_median, s.flushes_max) == (3, 1, 2, 5, 1, 3)
    assert Slack.from_json(s.to_json()) == s


def test_the_most_recent_required_ack_is_caught_and_later_ones_are_slack(tmp_path):
    """Positive control of the oracle's tightness: in a flush state, losing the newest ack it
    requires is a loss; the acks found past it are slack, not requirements."""
    log = _log(tmp_path, [("write", 1, b"a" * SS), ("flush", 0, b""), ("write", 2, b"b" * SS), ("flush", 0, b""),
                          ("write", 3, b"c" * SS), ("flush", 0, b"")])
    ends = [e.end for e in log.entries]
    acks = [Ack("0", 1.0, 0, ends[1]), Ack("1", 2.0, 0, ends[5]), Ack("2", 3.0, 0, ends[5])]   # 1's ack came late
    st = {s.name: s for s in st_mod.plan_states(log, acks, 1, 0, -1).states}["flush-3"]
    assert st.required == 1
    assert not judge("append", acks[:st.required], {"exists": True, "records": [["zero", 0, 1], ["ok", 1, 1]]}).ok
    report = {"exists": True, "records": [["ok", 0, 2]]}
    assert judge("append", acks[:st.required], report).ok
    found = found_prefix(lambda k: judge("append", acks[:k], report).ok, st.required, len(acks))
    bounds = st_mod.ack_bounds(log, acks)
    assert (found - st.required, flush_lag(log.flushes(), st.flush, bounds[found - 1])) == (1, 1)


def _depth_summary(phases: dict[str, float], verify: str, states: int = 101):
    from harness.config import CutMode
    from harness.crash.coverage import Coverage
    from harness.crash.plan import CutPlan
    from harness.report.records import CampaignSummary, IterationRecord, StatesDepth
    from harness.status import Status
    depth = StatesDepth(Coverage(10, 6, 5, 0.9, 0.4, 7, 20, 4, 9, 0), Slack.of([(0, 0), (1, 1), (3, 2)]), phases,
                        verify)
    it = IterationRecord(index=0, seed=1, name="iter-0000", status=Status.PASS, workload="append", fault="none",
                         backend="qdisk", cut=CutPlan(CutMode.ACKS, 20), seconds={"total": 100.0},
                         crash_states=states, states_generated=states + 20, depth=depth)
    return CampaignSummary.make("run", {}, 1, None, [it], 100.0)


def test_depth_goes_to_disk_and_back_and_into_summary_and_bench():
    from harness.campaign import bench
    from harness.report.records import CampaignSummary
    from harness.report.summary import depth_lines
    s = _depth_summary({"apply": 1.0, "snapshot": 2.0, "mount": 4.0, "verify": 3.0, "umount": 1.0}, "in-process")
    again = CampaignSummary.from_json(s.to_json())
    assert again.iterations[0].depth == s.iterations[0].depth
    lines = "\n".join(depth_lines(again.iterations))
    assert "6 with writes to choose from, every subset in 5" in lines and "4 torn-write states" in lines
    assert "oracle slack in 3 passing flush states: 1 tight" in lines and "max 3; in flushes" in lines
    assert "one crash state in the verifier: 110 ms (apply 10, snapshot 20, mount 40, verify 30, umount 10" in lines
    fast = bench.mode_figures(s, wall=100.0)
    slow = bench.mode_figures(_depth_summary({"apply": 1.0, "verify": 43.0}, "process per state"), wall=100.0)
    assert fast["state_ms"]["mount"] == 40.0 and fast["verify"] == ["in-process"]
    r = bench.ratios({"states": fast, "states-process": slow})
    assert r["states/states-process"]["per_state"] == 4.0
    assert "one crash state in the verifier 110 ms = apply 10 + snapshot 20 + mount 40 + verify 30 + umount 10" in \
        bench.table({"modes": {"states": fast, "states-process": slow}, "ratio": r})


def test_a_torn_write_never_lands_over_a_later_write_to_the_same_sectors(tmp_path):
    """The pieces go on last: a later write over them would then read older than it is, a state
    no disk can reach. Later writes elsewhere, and earlier ones anywhere, may be whole."""
    log = _log(tmp_path, [("write", 100, b"Z" * SS), ("flush", 0, b""), ("write", 0, b"w" * 2 * 4096),
                          ("write", 0, b"X" * 4096), ("write", 64, b"Y" * SS)])
    plan = st_mod.plan_states(log, [], 5, subsets=40, flush_points=-1, exhaustive_k=4, atomic_write=4096)
    torn = [s for s in plan.states if s.torn]
    assert torn and all(s.torn[0][0] == 2 for s in torn)
    assert all(3 not in s.extra for s in torn) and any(4 in s.extra for s in torn)


def test_the_budget_keeps_a_flush_state_whose_content_a_subset_had_first(tmp_path):
    """Two writes of the same data to one place: the subset {second} before the next flush has
    the next flush state's content and comes first in the plan; the budget still counts it as a
    flush state's content, kept before any other."""
    ops = [("write", 100, b"Z" * SS), ("flush", 0, b"")]
    for k in range(4):
        ops += [("write", 8, bytes([k + 1]) * SS), ("write", 8, bytes([k + 1]) * SS), ("write", 20 + k, b"q" * SS),
                ("flush", 0, b"")]
    log = _log(tmp_path, ops)
    full = st_mod.plan_states(log, [], 2, subsets=3, flush_points=-1, exhaustive_k=4)
    flush_keys = {s.key for s in full.states if s.is_flush_state}
    assert any(s.key in flush_keys and not s.is_flush_state for s in full.distinct)    # the case at hand
    kept = st_mod.within_budget(full, len(flush_keys), 2)
    assert {s.key for s in kept.distinct} == flush_keys
    assert {s.name for s in kept.states if s.is_flush_state} == {s.name for s in full.states if s.is_flush_state}
