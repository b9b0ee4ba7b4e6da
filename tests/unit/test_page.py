"""The run page (index.html) and the index of runs, from a real-shaped run directory: it names
the verdict, marks what was lost on the ack timeline, links every log, and is self-contained."""

from __future__ import annotations

import json
import re

from harness.report import page
from harness.report import summary as summary_mod
from harness.report.records import IterationRecord
from harness.status import Status


def _run(tmp_path, name, status, lost):
    run = tmp_path / name
    it = run / "iterations" / "iter-0000"
    it.mkdir(parents=True)
    (it / "acks.jsonl").write_text("".join(json.dumps({"id": str(i), "t": 100.0 + i / 10, "latency_us": 900 + i})
                                           + "\n" for i in range(20)))
    (it / "cut.json").write_text(json.dumps({"cut_t": 102.5}))
    (it / "kmsg-domu-a.log").write_text("blkfront: xvdb: flush diskcache: enabled\n")
    violations = [{"kind": "lost", "what": "acked records 15..19", "found": "zero", "count": 5}] if lost else []
    (it / "verdict.json").write_text(json.dumps({"violations": violations,
                                                 "kernel_evidence": ["kmsg-domu-a: blkfront: xvdb: flush"]}))
    rec = IterationRecord(0, 42, "iter-0000", Status(status), "append", "drop-flush", "qdisk",
                          {"mode": "acks", "after_acks": 20}, acked=20, lost_acked=5 if lost else 0,
                          violations=["lost: acked records 15..19: found zero"] if lost else [],
                          seconds={"total": 12.0}, release="bookworm")
    summary = summary_mod.summarize(run, {"workload": "append", "fault": "drop-flush",
                                          "stack": {"backend": "qdisk", "release": "bookworm"}}, 7, None, [rec], 30.0)
    summary["versions"] = {"host_qemu": "QEMU emulator version 7.2.22"}
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
    ids = [str(i) for i in range(10)] + ["k1=2"]
    assert page.lost_ids([{"kind": "lost", "what": "acked records 3..5"}], ids) == {"3", "4", "5"}
    assert page.lost_ids([{"kind": "lost", "what": "acked ids k1=2"}], ids) == {"k1=2"}
    assert page.lost_ids([{"kind": "missing", "what": "append.dat"}], ids) == set(ids)
    assert page.lost_ids([{"kind": "hole", "what": "records 3..4 before durable record 9"}], ids) == set()


def test_no_index_over_a_page_that_is_not_ours(tmp_path, monkeypatch):
    monkeypatch.setenv("XDH_RUNS", str(tmp_path / "elsewhere"))
    (tmp_path / "index.html").write_text("<html>your workspace</html>")
    _run(tmp_path, "a", "loss", lost=True)
    _run(tmp_path, "b", "pass", lost=False)
    assert (tmp_path / "index.html").read_text() == "<html>your workspace</html>"
