"""The pytest plugin as a user meets it: tests written only with its fixtures and marker, on
the real stack. A positive control (drop-flush must lose acked writes) and a negative control
(your own workload from its manifest, on a correct stack, must keep them)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.stack
KV = str(Path(__file__).resolve().parents[2] / "examples" / "kvstore" / "workload.toml")


@pytest.mark.xdh(workload="append", fault="drop-flush", seed=5)
def test_a_dropped_flush_loses_acked_writes(xdh_domu, xdh_acks, xdh_power_cut, xdh_oracle):
    assert xdh_domu.run(["cat", "/sys/block/xvdb/queue/write_cache"]).stdout.strip() == "write through"
    crash = xdh_power_cut(after_acks=40)
    assert len(crash.acks) >= 40 and crash.dut.exists() and xdh_acks == list(crash.acks)
    checked = xdh_oracle(crash)
    assert checked.status == "loss" and checked.lost_acked > 0, checked.violations


@pytest.mark.xdh(workload=KV, seed=6)
def test_your_workload_keeps_acked_puts_on_a_correct_stack(xdh_dom0, xdh_domu, xdh_power_cut, xdh_oracle):
    assert xdh_dom0.run(["xl", "list"]).stdout.count("\n") >= 2                # dom0 runs the domU
    assert "/mnt/dut" in xdh_domu.run(["cat", "/proc/mounts"]).stdout
    crash = xdh_power_cut(after_acks=30)
    checked = xdh_oracle(crash)
    assert checked.status == "pass" and len(crash.acks) >= 30, checked.violations


@pytest.mark.xdh(workload=KV, fault="drop-flush", seed=7)
def test_your_workload_on_a_stack_that_drops_flushes_loses_acked_puts(xdh_power_cut, xdh_oracle):
    checked = xdh_oracle(xdh_power_cut(after_acks=30))
    assert checked.status == "loss" and checked.lost_acked > 0, checked.violations
