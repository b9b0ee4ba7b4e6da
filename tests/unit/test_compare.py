"""The comparison matrix and its report (no VM): which cells exist, what is impossible and why,
how a cell's figures are read from an ordinary run directory, and what the report says."""

import json

from harness.campaign import compare
from harness.campaign.compare import Cell, CompareConfig
from harness.report import matrix


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
    d = root / "cells" / cell.name
    its = []
    for k, st in enumerate(statuses):
        name = f"iter-{k:04d}"
        (d / "iterations" / name).mkdir(parents=True)
        (d / "iterations" / name / "acks.jsonl").write_text(
            "".join(json.dumps({"id": str(i), "t": i, "latency_us": v}) + "\n" for i, v in enumerate(lat)))
        its.append({"name": name, "status": st, "acked": 3, "lost_acked": 3 if st == "loss" else 0,
                    "crash_states": 4, "violations": ["lost: acked records 0..2"] if st == "loss" else [],
                    "error": "", "fsync_latency_us": {"ops_per_s": 50.0}, "seconds": {"total": 20.0}})
    (d / "summary.json").write_text(json.dumps({"iterations": its, "wall_seconds": 60}))


def test_report_from_run_directories(tmp_path):
    cfg = CompareConfig(backends=("phy",), faults=("none", "disk-lies"), disk_caches=("none", "volatile"))
    (tmp_path / "compare-config.json").write_text(json.dumps({k: v for k, v in cfg.__dict__.items()
                                                              if k != "stack"}))
    (tmp_path / "compare-wall.json").write_text(json.dumps({"wall_seconds": 600}))
    for cell in compare.plan_cells(cfg):
        lies_seen = cell.fault == "disk-lies" and cell.disk_cache == "volatile"
        _fake_cell(tmp_path, cell, ["loss"] * 3 if lies_seen else ["pass"] * 3)
    (tmp_path / "canaries" / "bookworm__phy__none").mkdir(parents=True)
    (tmp_path / "canaries" / "bookworm__phy__none" / "canary.json").write_text(json.dumps({"status": "pass"}))
    (tmp_path / "canaries" / "bookworm__phy__volatile").mkdir(parents=True)
    (tmp_path / "canaries" / "bookworm__phy__volatile" / "canary.json").write_text(json.dumps({"status": "loss"}))
    data = matrix.write_report([tmp_path], tmp_path / "out", command="xdh compare --backends phy")
    rows = {(r["fault"], r["disk_cache"]): r for r in data["cells"]}
    assert rows[("disk-lies", "volatile")]["loss_iterations"] == 3
    assert rows[("none", "none")]["p50_us"] == 200 and rows[("none", "none")]["crash_states"] == 12
    assert rows[("disk-lies", "none")]["canary"] is False and rows[("disk-lies", "volatile")]["canary"] is True
    md = (tmp_path / "out" / "report.md").read_text()
    assert "xdh compare --backends phy" in md and "Total wall time: 10 min" in md
    assert "**NOT caught**" in md and "missed without the model" in md and "volatile model catches it" in md
    assert ("disk cache volatile: 6 iterations, 24 crash states verified (4.0 per iteration), "
            "720 crash states per hour") in md
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "<table>" in page
    # the detection matrix: what was caught, what was missed, and the cells behind it linked
    assert "<h2>Detection matrix</h2>" in page and "<b>NOT caught</b>" in page
    assert ">caught 3/3</a>" in page and ">missed 0/3</a>" in page
    assert "| disk-lies / append | missed 0/3 | caught 3/3 |" in md


def test_pieces_merge_into_one_report(tmp_path):
    cfg = CompareConfig(backends=("qdisk",), faults=("none",), disk_caches=("none", "volatile"))
    cells = compare.plan_cells(cfg)
    pieces = []
    for n, cell in enumerate(cells):
        piece = tmp_path / f"piece{n}"
        piece.mkdir()
        (piece / "compare-config.json").write_text(json.dumps({k: v for k, v in cfg.__dict__.items() if k != "stack"}))
        (piece / "compare-wall.json").write_text(json.dumps({"wall_seconds": 100}))
        _fake_cell(piece, cell, ["pass"])
        pieces.append(piece)
    data = matrix.collect(pieces)
    assert data["wall_seconds"] == 200 and all(r["iterations"] == 1 for r in data["cells"])
