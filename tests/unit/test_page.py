"""The run page (index.html) and the index of runs, from a real-shaped run directory: it names
the verdict, marks what was lost on the ack timeline, links every log, and is self-contained."""

from __future__ import annotations

import json
import re

from harness.catalog.workloads import Ack
from harness.config import CutMode
from harness.crash.plan import CutPlan
from harness.jsonio import write_json
from harness.report import page
from harness.report import summary as summary_mod
from harness.report.records import CutRecord, IterationRecord
from harness.status import Status
from harness.verify.oracle import Verdict, Violation


def _run(tmp_path, name, status, lost):
    run = tmp_path / name
    it = run / "iterations" / "iter-0000"
    it.mkdir(parents=True)
    (it / "acks.jsonl").write_text("".join(json.dumps({"id": str(i), "t": 100.0 + i / 10, "latency_us": 900 + i})
                                           + "\n" for i in range(20)))
    write_json(it / "cut.json", CutRecord(102.5, 20, CutPlan(CutMode.ACKS, 20)).to_json())
    (it / "kmsg-domu-a.log").write_text("blkfront: xvdb: flush diskcache: enabled\n")
    violations = [Violation("lost", "acked records 15..19", "zero", 5, ranges=[(15, 19)])] if lost else []
    write_json(it / "verdict.json", Verdict("append", 20, violations, ["kmsg-domu-a: blkfront: xvdb: flush"]).to_json())
    rec = IterationRecord(0, 42, "iter-0000", Status(status), "append", "drop-flush", "qdisk",
                          CutPlan(CutMode.ACKS, 20), acked=20, lost_acked=5 if lost else 0, violations=violations,
                          seconds={"total": 12.0}, release="bookworm")
    summary = summary_mod.summarize(run, {"workload": "append", "fault": "drop-flush",
                                          "stack": {"backend": "qdisk", "release": "bookworm"}}, 7, None, [rec], 30.0,
                                    versions={"host_qemu": "QEMU emulator version 7.2.22"})
    summary_mod.write(summary, run)
    return run


def test_the_run_page_shows_the_verdict_what_was_lost_and_every_log(tmp_path):
    run = _run(tmp_path, "a", "loss", lost=True)
    text = (run / "index.html").read_text()
    assert "LOSS" in text and "1 loss" in text and "20 acked, 5 acked writes lost" in text
    assert text.count('fill="#cf222e"') == 5 and text.count('fill="#1a7f37"') == 15    # the lost acks, in red
    assert 'href="./iterations/iter-0000/kmsg-domu-a.log"' in text and "kmsg-domu-a: blkfront" in text
    assert "QEMU emulator version 7.2.22" in text and "<svg" in text and "p50 0.91 ms" in text
    assert not re.search(r"<script|https?://", text)          # self-contained, nothing fetched


def test_the_index_of_runs_links_each_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDH_RUNS", str(tmp_path))      # written only where xdh keeps runs
    _run(tmp_path, "a", "loss", lost=True)
    _run(tmp_path, "b", "pass", lost=False)
    text = (tmp_path / "index.html").read_text()        # written as the second run ended
    assert 'href="./a/index.html"' in text and 'href="./b/index.html"' in text
    assert text.count("<tr>") == 3


def test_lost_ids_from_violations():
    acks = [Ack(str(i), 100.0 + i) for i in range(10)] + [Ack("k1=2", 111.0)]
    ids = {a.ident for a in acks}
    assert page.lost_ids([Violation("lost", "acked records 3..5", "zero", 3, ranges=[(3, 5)])], acks) == {"3", "4", "5"}
    assert page.lost_ids([Violation("lost", "acked ids k1=2", "absent", 1, ids=["k1=2"])], acks) == {"k1=2"}
    assert page.lost_ids([Violation("missing", "append.dat", "no file", 11)], acks) == ids
    assert page.lost_ids([Violation("hole", "records 3..4 before durable record 9", "zero", 2)], acks) == set()
    # the ids are data: a record written and read back names the same ones
    v = Violation.from_json(json.loads(json.dumps(Violation("lost", "x", "y", 2, ranges=[(3, 4)]).to_json())))
    assert page.lost_ids([v], acks) == {"3", "4"}


def test_no_index_over_a_page_that_is_not_ours(tmp_path, monkeypatch):
    monkeypatch.setenv("XDH_RUNS", str(tmp_path / "elsewhere"))
    (tmp_path / "index.html").write_text("<html>your workspace</html>")
    _run(tmp_path, "a", "loss", lost=True)
    _run(tmp_path, "b", "pass", lost=False)
    assert (tmp_path / "index.html").read_text() == "<html>your workspace</html>"


def test_the_page_shows_the_ledger_with_the_guilty_layer_marked(tmp_path):
    from harness.crash.ledger import Evidence, Ledger, Sample
    run = _run(tmp_path, "a", "loss", lost=True)
    t0 = Sample(domu_flushes=10, domu_write_cache="write back", dom0_flushes=40, outer_flushes=50)
    t1 = Sample(acks=20, domu_flushes=10, domu_write_cache="write through", dom0_flushes=40, outer_flushes=50)
    write_json(run / "iterations" / "iter-0000" / "flushes.json", Ledger("qdisk", "", t0, t1, Evidence()).to_json())
    text = page.run_page(summary_mod.RunDir(run).read_summary(), run)
    assert "flush died in the domU block layer: 20 durable ops, 0 flush requests reached blkfront" in text
    marked = re.search(r'<tr style="background:#ffebe9"><th>([^<]+)<span', text)
    assert marked and marked.group(1).strip() == "domU block layer"
