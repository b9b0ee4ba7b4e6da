"""The flush ledger on the real stack (qdisk, Debian 12): each positive control is attributed by
the counters to its own layer, and a fault manifest the attribution code has never seen (dom0
switches its device's write cache during the run) is attributed to dom0's block device. Each is
one crash run from the saved stack, no canary. The clean run (it names no layer, its ledger
passes flushes on at every layer) and drop-flush (the domU block layer) are test_torture's
negative and positive controls; disk-lies (the outer disk, with and without the volatile model)
and the ledger against independent counts are test_volatile's."""

from __future__ import annotations

import pytest

from harness.campaign.campaign import run_campaign
from harness.config import StackConfig, TortureConfig
from harness.crash.ledger import Kind, Layer
from harness.report.rundir import RunDir

pytestmark = pytest.mark.stack

UNSEEN = """schema = 1
name = "dom0-switch"
summary = "written by a test: dom0 turns its device's write cache off while the workload runs"
[[step]]
where = "dom0"
when = "during"
run = ["sh", "-c", "echo 'write through' > /sys/block/$(basename {dom0_dut})/queue/write_cache"]
"""


def _ledger_of(tmp_path, fault: str):
    cfg = TortureConfig(workload="append", fault=fault, iterations=1, seed=20261206, canary=False,
                        cut_acks=(20, 40), stack=StackConfig())
    s = run_campaign(cfg, tmp_path / "run", lambda m: print(m, flush=True), versions={}).summary
    it = s.iterations[0]
    ledger = RunDir(tmp_path / "run").iteration(0).read_ledger()
    assert ledger is not None, "no flushes.json"
    print(f"{fault}: {it.status}: {it.flush.text if it.flush else '-'}")
    for row in ledger.rows():
        print(f"  {row.layer.value:18} {row.count!s:>6} {row.failed or '':>3}  {row.note}")
    return it, ledger


@pytest.mark.parametrize("fault, kind, layer", [
    ("nobarrier", Kind.DROP, Layer.FILESYSTEM),
    ("flush-eio", Kind.MASK, Layer.BLKFRONT),
    ("backend-lies", Kind.LIE, Layer.BACKEND),
    ("UNSEEN", Kind.DROP, Layer.DOM0_DEVICE),
])
def test_the_ledger_names_the_layer(tmp_path, fault, kind, layer):
    if fault == "UNSEEN":
        (tmp_path / "unseen.toml").write_text(UNSEEN)
        fault = str(tmp_path / "unseen.toml")
    it, ledger = _ledger_of(tmp_path, fault)
    assert it.flush is not None and (it.flush.kind, it.flush.layer) == (kind, layer), it.flush
    rows = {r.layer: r for r in ledger.rows()}
    if fault == "flush-eio":    # Linux 6.1: the mask, then flushing switched off in the domU
        assert rows[Layer.OUTER_DISK].failed >= 1 and ledger.evidence.blkfront_failed >= 1
        assert ledger.end.domu_write_cache == "write through" and "switched off" in it.flush.text
