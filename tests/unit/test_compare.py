"""The comparison matrix and its report (no VM): which cells exist, what is impossible and why,
how a cell's figures are read from an ordinary run directory, and what the report says. The
figures are read from the typed report (``compare_data``) and compare.json, never parsed back
out of report.md."""

import json

import pytest

from harness.campaign import compare
from harness.campaign.compare import Cell, CompareConfig, compare_exit
from harness.catalog.workloads import Ack
from harness.crash.files import ack_line
from harness.crash.plan import CutMode, CutPlan
from harness.jsonio import write_json
from harness.report import compare_data, matrix
from harness.report.compare_data import CellRow, CompareReport
from harness.report.detection import Kind
from harness.report.records import CampaignSummary, IterationRecord
from harness.report.rundir import RunDir
from harness.stats import percentile
from harness.status import ExitCode, Status
from harness.verify.oracle import Violation


def test_matrix_of_the_acceptance(tmp_path, monkeypatch):
    monkeypatch.setenv("XDH_CACHE", str(tmp_path))     # no aio device model cached
    cfg = CompareConfig(backends=("qdisk", "qdisk-direct", "phy", "qdisk-qcow2"),
                        faults=("none", "drop-flush", "disk-lies", "backend-lies", "flush-eio"),
                        workloads=("append", "direct"), disk_caches=("none", "volatile"))
    cells = compare.plan_cells(cfg)
    names = {c.name for c in cells}
    assert "bookworm__qdisk__none__append__volatile" in names
    assert "bookworm__phy__drop-flush__direct__none" in names and "bookworm__phy__none__direct__none" not in names
    skipped = {c.name: c.skip for c in cells if c.skip}
    direct = {n for n in skipped if "__qdisk-direct__" in n}
    assert set(skipped) - direct == {"bookworm__phy__backend-lies__append__none",
                                     "bookworm__phy__backend-lies__append__volatile",
                                     "bookworm__qdisk-qcow2__flush-eio__append__none",
                                     "bookworm__qdisk-qcow2__flush-eio__append__volatile"}
    assert len(direct) == 5 * 2 + 2 * 2     # every qdisk-direct cell: its device model is not built yet
    assert all("xdh images devmodel" in skipped[n] for n in direct)
    assert all("qdisk" in why or "flush-eio" in why for why in skipped.values())
    assert len(cells) == 4 * 5 * 2 + 4 * 2 * 2


def test_releases_are_a_dimension_of_the_matrix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDH_CACHE", str(tmp_path))
    cfg = CompareConfig(backends=("qdisk", "phy"), faults=("none",), disk_caches=("volatile",),
                        releases=("bookworm", "trixie"))
    cells = compare.plan_cells(cfg)
    assert [c.name for c in cells] == ["bookworm__qdisk__none__append__volatile",
                                       "bookworm__phy__none__append__volatile",
                                       "trixie__qdisk__none__append__volatile",
                                       "trixie__phy__none__append__volatile"]
    assert [compare.torture_config(cfg, c).stack.release for c in cells] == ["bookworm"] * 2 + ["trixie"] * 2
    assert {c.group for c in cells} == {"bookworm__qdisk__volatile", "bookworm__phy__volatile",
                                        "trixie__qdisk__volatile", "trixie__phy__volatile"}


def _fake_cell(root, cell: Cell, statuses, lat=(100, 200, 300)):
    """A cell's run directory as its campaign leaves it: summary.json, every iteration's acks."""
    run = RunDir(root / "cells" / cell.name)
    its = []
    for k, st in enumerate(statuses):
        it = run.iteration(k)
        it.path.mkdir(parents=True)
        (it.path / "acks.jsonl").write_text("".join(ack_line(Ack(str(i), i, v)) for i, v in enumerate(lat)))
        loss = st == "loss"
        its.append(IterationRecord(k, 7, it.path.name, Status(st), cell.workload, cell.fault, cell.backend,
                                   CutPlan(CutMode.ACKS, after_acks=20), acked=3, lost_acked=3 if loss else 0,
                                   crash_states=4, fsync_latency_us={"ops_per_s": 50.0}, seconds={"total": 20.0},
                                   violations=[Violation("lost", "acked records 0..2", "zero", 3, ranges=[(0, 2)])]
                                   if loss else []))
    write_json(run.summary, CampaignSummary.make(str(run.path), {}, 7, None, its, 60).to_json())


def _fake_compare(root, cfg: CompareConfig, loses=lambda cell: False, wall=600.0):
    run = RunDir(root).create()
    cells = compare.plan_cells(cfg)
    run.write_compare_config({k: v for k, v in cfg.__dict__.items() if k != "stack"}, [c.to_json() for c in cells])
    run.write_compare_wall(wall)
    for cell in cells:
        _fake_cell(root, cell, ["loss"] * 3 if loses(cell) else ["pass"] * 3)
    return cells


def test_report_from_run_directories(tmp_path):
    cfg = CompareConfig(backends=("phy",), faults=("none", "disk-lies"), disk_caches=("none", "volatile"))
    _fake_compare(tmp_path, cfg, lambda cell: cell.fault == "disk-lies" and cell.disk_cache == "volatile")
    RunDir(tmp_path).write_canary("bookworm__phy__none", {"status": "pass"})
    RunDir(tmp_path).write_canary("bookworm__phy__volatile", {"status": "loss"})
    data = matrix.write_report([tmp_path], tmp_path / "out", command="xdh compare --backends phy")
    rows = {(r.fault, r.disk_cache): r for r in data.cells}
    assert rows[("disk-lies", "volatile")].loss_iterations == 3
    assert rows[("none", "none")].p50_us == 200 and rows[("none", "none")].crash_states == 12
    assert rows[("none", "none")].fsyncs_per_s == 50.0 and rows[("none", "none")].p99_us == 300
    assert rows[("disk-lies", "none")].canary is False and rows[("disk-lies", "volatile")].canary is True
    assert rows[("disk-lies", "volatile")].sample_violation == "lost: acked records 0..2: found zero"
    # compare.json is the same data, without the latencies
    stored = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert stored["cells"] == [c.to_json() for c in data.cells] and "latencies_us" not in stored["cells"][0]
    assert stored["wall_seconds"] == 600 and set(stored["canaries"]) == {"bookworm__phy__none",
                                                                          "bookworm__phy__volatile"}
    # report.md: the prose around the figures
    md = (tmp_path / "out" / "report.md").read_text()
    assert "xdh compare --backends phy" in md and "Total wall time: 10 min" in md
    assert "**NOT caught**" in md and "missed without the model" in md and "volatile model catches it" in md
    assert ("disk cache volatile: 6 iterations, 24 crash states verified (4.0 per iteration), "
            "720 crash states per hour") in md
    assert "| disk-lies / append | missed 0/3 | caught 3/3 |" in md
    # report.html: the same words, the detection matrix coloured and linked, the CDF inline
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<svg") == 1 and "bookworm phy / cache none: p50 0.20 ms" in page
    assert "<h2>Detection matrix</h2>" in page and "<b>NOT caught</b>" in page and "**" not in page
    assert ">caught 3/3</a>" in page and ">missed 0/3</a>" in page
    assert f'href="{tmp_path.as_uri()}/cells/bookworm__phy__disk-lies__append__none/index.html"' in page  # not below
    assert "data:image" not in page and "<script" not in page


def test_the_report_value_is_what_both_pages_show(tmp_path):
    """The typed report: canaries, notes and warnings, a repeated error said once; report.md
    and report.html render every one of its notes."""
    cfg = CompareConfig(backends=("qdisk", "phy"), faults=("none", "drop-flush"), disk_caches=("none",))
    cells = _fake_compare(tmp_path, cfg, lambda cell: cell.backend == "qdisk")   # qdisk, no fault: a false alarm
    for cell in cells:
        if cell.backend == "phy":
            RunDir(tmp_path).write_cell_error(cell.name, "stack unavailable: QEMU did not connect to QMP")
    RunDir(tmp_path).write_canary("bookworm__qdisk__none", {"status": "loss"})
    rep = matrix.build(compare_data.collect([tmp_path]))
    rows = {(r.cell.backend, r.cell.fault): r for r in rep.rows}
    assert [(r.cell.backend, r.cell.fault) for r in rep.rows] == [("phy", "drop-flush"), ("phy", "none"),
                                                                  ("qdisk", "drop-flush"), ("qdisk", "none")]
    assert rows[("phy", "drop-flush")].notes == (matrix.Text("error: stack unavailable: QEMU did not connect to QMP"),)
    assert rows[("phy", "none")].notes == (matrix.Text("error: the same as bookworm phy none drop-flush"),)
    assert rows[("phy", "none")].canary == matrix.Text("-") and rows[("qdisk", "none")].canary.text == "caught"
    assert matrix.Text("FALSE ALARM or real bug: loss with no fault", strong=True) in rows[("qdisk", "none")].notes
    kinds = {fw: [v.kind for v in vs] for fw, vs in rep.matrix.rows}
    assert kinds == {("none", "append"): [Kind.ERROR, Kind.FALSE_ALARM],
                     ("drop-flush", "append"): [Kind.ERROR, Kind.CAUGHT]}
    assert [c.cache for c in rep.caches] == ["none"] and rep.caches[0].iterations == 6
    md, page = matrix.markdown(rep), matrix.html_page(rep, tmp_path)
    for row in rep.rows:
        for note in row.notes:
            assert note.text in md and note.text in page
    assert "**FALSE ALARM or real bug: loss with no fault**" in md
    assert "<b>FALSE ALARM or real bug: loss with no fault</b>" in page


def test_pieces_merge_into_one_report(tmp_path):
    cfg = CompareConfig(backends=("qdisk",), faults=("none",), disk_caches=("none", "volatile"))
    cells = compare.plan_cells(cfg)
    pieces = []
    for n, cell in enumerate(cells):
        piece = RunDir(tmp_path / f"piece{n}").create()
        piece.write_compare_config({k: v for k, v in cfg.__dict__.items() if k != "stack"}, [cell.to_json()])
        piece.write_compare_wall(100)
        piece = piece.path
        _fake_cell(piece, cell, ["pass"])
        pieces.append(piece)
    data = compare_data.collect(pieces)
    assert data.wall_seconds == 200 and all(r.iterations == 1 for r in data.cells)


def _row(**kw) -> CellRow:
    return CellRow(**({"release": "bookworm", "backend": "qdisk", "fault": "none", "workload": "append",
                       "disk_cache": "none", "group": "g", "path": "p", "iterations": 3, "infra_only": True} | kw))


@pytest.mark.parametrize("rows, code", [
    ([_row(), _row(loss_iterations=3)], ExitCode.CLEAN),                           # losses are content
    ([_row(), _row(skip="impossible", iterations=0)], ExitCode.CLEAN),
    ([_row(), _row(error_iterations=1, infra_only=True)], ExitCode.INFRA),
    ([_row(iterations=0, error="stack unavailable: QEMU failed", infra_only=True)], ExitCode.INFRA),
    ([_row(), _row(iterations=0, error="the workload ended", infra_only=False)], ExitCode.ERROR),
    ([_row(error_iterations=1, infra_only=True), _row(error_iterations=1, infra_only=False)], ExitCode.ERROR),
    ([_row(iterations=0, error="not run", infra_only=False)], ExitCode.ERROR),
    ([_row(skip="impossible", iterations=0)], ExitCode.ERROR),                     # nothing could run
])
def test_compare_exit_on_the_report(rows, code):
    assert compare_exit(CompareReport(rows, {}, 0.0, [])) == code


def test_percentile_is_a_measured_sample():
    """Nearest rank: the smallest sample at which the empirical CDF exceeds q (the upper median)."""
    assert percentile([], 0.5) is None
    assert percentile([300, 100, 200], 0.5) == 200 and percentile([1, 2, 3, 4], 0.5) == 3
    assert percentile(range(1, 101), 0.99) == 100 and percentile(range(1, 1001), 0.99) == 991
    assert percentile([5], 0.99) == 5
