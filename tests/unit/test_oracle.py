"""Each oracle on crafted states: clean, lost, torn, hole, corrupt (no VM).

States are produced by the real guest program (guests/xdh-workload) on local files and
then damaged, so the oracle is tested against the report format the domU really prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.verify import oracle
from harness.verify.oracle import Ack, check_direct, check_replace, direct_block, judge

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = ROOT / "guests" / "xdh-workload"
SEED = 1234
R = 512


def wl(*args: str) -> str:
    return subprocess.run([sys.executable, str(WORKLOAD), *args], capture_output=True, text=True, check=True).stdout


def run(workload: str, tmp: Path, ops: int, **kw) -> list[Ack]:
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = wl("run", workload, "--seed", str(SEED), "--dir", str(tmp), "--ops", str(ops), *extra)
    return [a for a in (Ack.parse(ln, 100.0 + i) for i, ln in enumerate(out.splitlines())) if a]


def verify(workload: str, tmp: Path, **kw) -> dict:
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    return json.loads(wl("verify", workload, "--seed", str(SEED), "--dir", str(tmp), *extra))


def damage(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def kinds(v) -> list[str]:
    return [x.kind for x in v.violations]


# --- append ---------------------------------------------------------------------------
def test_append_clean(tmp_path):
    acks = run("append", tmp_path, 20)
    assert [a.ident for a in acks] == [str(i) for i in range(20)]
    v = judge("append", acks, verify("append", tmp_path), cut_t=200.0)
    assert v.ok and v.acked == 20


def test_append_unacked_torn_tail_is_allowed(tmp_path):
    acks = run("append", tmp_path, 20)[:18]           # records 18, 19 written after the last ack
    f = tmp_path / "append.dat"
    damage(f, 19 * R + 100, b"\xff" * 50)              # torn record after the last ack
    os.truncate(f, 19 * R + 300)                       # short record at the end
    assert judge("append", acks, verify("append", tmp_path)).ok


def test_append_lost(tmp_path):
    acks = run("append", tmp_path, 20)
    os.truncate(tmp_path / "append.dat", 15 * R)        # acked records 15..19 gone
    v = judge("append", acks, verify("append", tmp_path), cut_t=130.0)
    assert kinds(v) == ["lost"] and v.violations[0].count == 5 and v.lost_acked == 5
    assert "15..19" in v.violations[0].what
    assert v.violations[0].ack["id"] == "19" and v.violations[0].ack["before_cut_s"] == pytest.approx(11.0)


def test_append_corrupt_before_last_ack(tmp_path):
    acks = run("append", tmp_path, 20)
    damage(tmp_path / "append.dat", 7 * R + 200, b"garbage")
    v = judge("append", acks, verify("append", tmp_path))
    assert kinds(v) == ["corrupt"] and "records 7" in v.violations[0].what


def test_append_hole_before_last_durable_record(tmp_path):
    acks = run("append", tmp_path, 20)[:10]
    damage(tmp_path / "append.dat", 12 * R, b"\0" * R)     # zeros after the last ack, before record 19
    v = judge("append", acks, verify("append", tmp_path))
    assert kinds(v) == ["hole"] and "before durable record 19" in v.violations[0].what


def test_append_missing_file_and_unmountable(tmp_path):
    acks = [Ack(str(i), 1.0 + i) for i in range(5)]
    assert kinds(judge("append", acks, {"exists": False})) == ["missing"]
    assert judge("append", [], {"exists": False}).ok
    v = judge("append", acks, {"mount_error": "wrong fs type"})
    assert kinds(v) == ["unmountable"] and v.lost_acked == 5


# --- replace --------------------------------------------------------------------------
def test_replace_clean_and_newer_is_fine(tmp_path):
    acks = run("replace", tmp_path, 6)
    assert judge("replace", acks, verify("replace", tmp_path)).ok
    assert judge("replace", acks[:5], verify("replace", tmp_path)).ok   # version 6 written after the ack of 5


def test_replace_stale_version(tmp_path):
    run("replace", tmp_path, 3)
    later = [Ack(str(v), 10.0 + v) for v in range(1, 6)]               # acked up to 5, disk has 3
    v = judge("replace", later, verify("replace", tmp_path))
    assert kinds(v) == ["stale"] and "version 3" in v.violations[0].found


def test_replace_torn_and_missing(tmp_path):
    acks = run("replace", tmp_path, 3)
    damage(tmp_path / "replace.dat", 300, b"torn")
    assert kinds(judge("replace", acks, verify("replace", tmp_path))) == ["corrupt"]
    os.truncate(tmp_path / "replace.dat", 0)
    assert kinds(judge("replace", acks, verify("replace", tmp_path))) == ["corrupt"]
    (tmp_path / "replace.dat").unlink()
    assert kinds(judge("replace", acks, verify("replace", tmp_path))) == ["missing"]


# --- direct ---------------------------------------------------------------------------
def _direct(tmp_path, ops):
    dev = tmp_path / "dev"
    with open(dev, "wb") as f:
        f.truncate(2 << 20)
    acks = run("direct", tmp_path, ops, device=dev, blocks=16)
    return dev, acks


def test_guest_and_oracle_agree_on_block_choice(tmp_path):
    dev, acks = _direct(tmp_path, 12)
    assert [int(a.ident.split(":")[0]) for a in acks] == [oracle.direct_block(SEED, i, 16) for i in range(12)]


def test_direct_clean(tmp_path):
    dev, acks = _direct(tmp_path, 40)
    assert judge("direct", acks, verify("direct", tmp_path, device=dev, blocks=16), seed=SEED).ok


def test_direct_lost_and_stale(tmp_path):
    dev, acks = _direct(tmp_path, 40)
    rep = verify("direct", tmp_path, device=dev, blocks=16)
    blocks = sorted(rep["blocks"], key=int)
    rep["blocks"].pop(blocks[0])                           # a block back to zeros
    b1 = blocks[1]
    st, ver = rep["blocks"][b1]
    if ver > 1:
        rep["blocks"][b1] = ["ok", ver - 1]                # an older version
    v = judge("direct", acks, rep, seed=SEED)
    assert "lost" in kinds(v)
    assert ("stale" in kinds(v)) == (ver > 1)


def test_direct_torn_only_allowed_for_the_op_in_flight(tmp_path):
    dev, acks = _direct(tmp_path, 40)
    inflight = oracle.direct_block(SEED, 39, 16)            # the op after ack 38 was in flight
    rep = verify("direct", tmp_path, device=dev, blocks=16)
    rep["blocks"][str(inflight)] = ["corrupt", None]
    assert judge("direct", acks[:39], rep, seed=SEED).ok
    other = next(b for b in rep["blocks"] if int(b) != inflight)
    rep["blocks"][other] = ["corrupt", None]
    assert kinds(judge("direct", acks[:39], rep, seed=SEED)) == ["corrupt"]


# --- sqlite ---------------------------------------------------------------------------
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_clean(tmp_path, journal):
    acks = run("sqlite", tmp_path, 10, journal=journal)
    assert judge("sqlite", acks, verify("sqlite", tmp_path, journal=journal)).ok


def test_sqlite_lost_hole_corrupt_integrity():
    acks = [Ack(str(i), float(i)) for i in range(10)]
    v = judge("sqlite", acks, {"exists": True, "integrity": ["ok"], "ids": [[0, 6]], "bad": []})
    assert kinds(v) == ["lost"] and v.violations[0].count == 3
    v = judge("sqlite", acks[:3], {"exists": True, "integrity": ["ok"], "ids": [[0, 4], [7, 8]], "bad": []})
    assert kinds(v) == ["hole"]
    v = judge("sqlite", acks, {"exists": True, "integrity": ["ok"], "ids": [[0, 9]], "bad": [4]})
    assert kinds(v) == ["corrupt"]
    v = judge("sqlite", acks, {"exists": True, "integrity": ["*** in database main ***"], "ids": [[0, 9]], "bad": []})
    assert kinds(v) == ["integrity"]


def test_sqlite_real_corruption_is_seen(tmp_path):
    acks = run("sqlite", tmp_path, 30, journal="delete")
    db = tmp_path / "db.sqlite"
    size = db.stat().st_size
    damage(db, size // 2, os.urandom(4096))
    v = judge("sqlite", acks, verify("sqlite", tmp_path, journal="delete"))
    assert not v.ok


def test_ack_parsing():
    assert Ack.parse("A 12 345", 1.0) == Ack("12", 1.0, 345)
    assert Ack.parse("A 3:4 10", 1.0).ident == "3:4"
    assert Ack.parse("Warning: foo", 1.0) is None


def test_an_earlier_crash_state_allows_every_issued_op_but_requires_only_its_acks():
    """A flush state requires the acks whose flush it holds; later ops (acked only after it)
    may be there too: several direct blocks newer than required, a replace version ahead."""
    seed, nblocks = 5, 8
    ops = [direct_block(seed, op, nblocks) for op in range(6)]
    versions: dict[int, int] = {}
    acks = []
    for op, b in enumerate(ops):
        versions[b] = versions.get(b, 0) + 1
        acks.append(Ack(f"{b}:{versions[b]}", float(op)))
    found = {str(b): ["ok", v] for b, v in versions.items()}          # every op reached the disk
    report = {"blocks": found, "nblocks": nblocks}
    assert check_direct(acks[:2], report, seed=seed, issued=len(acks) + 1) == []
    assert [v.kind for v in check_direct(acks[:2], report, seed=seed)] != []   # without issued: a single op ahead
    gone = {"blocks": {k: v for k, v in found.items() if k != str(ops[0])}, "nblocks": nblocks}
    assert [v.kind for v in check_direct(acks[:2], gone, seed=seed, issued=7)] == ["lost"]   # required: still caught
    rep = {"exists": True, "state": "ok", "version": 5}
    two = [Ack("1", 1.0), Ack("2", 2.0)]
    assert check_replace(two, rep, issued=5) == []
    assert [v.kind for v in check_replace(two, rep, issued=4)] == ["unexpected"]
    assert [v.kind for v in check_replace(two, {"exists": True, "state": "ok", "version": 1}, issued=5)] == ["stale"]


def test_a_database_before_its_table_was_created_is_empty_not_corrupt():
    """An earlier crash state of sqlite (found by the batch): the file exists, the CREATE TABLE
    had not committed. Nothing required: no violation; acks required: they are lost."""
    report = {"exists": True, "error": "no such table: t", "integrity": None, "ids": [], "bad": []}
    assert judge("sqlite", [], report).violations == []
    v = judge("sqlite", [Ack("0", 1.0), Ack("1", 2.0)], report)
    assert [x.kind for x in v.violations] == ["lost"] and v.lost_acked == 2
    corrupt = {"exists": True, "error": "database disk image is malformed", "integrity": None, "ids": [], "bad": []}
    assert [x.kind for x in judge("sqlite", [], corrupt).violations] == ["integrity"]
